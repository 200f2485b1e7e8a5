"""The run directory: its layout, its creation, checkpoints and resume. This module alone knows where each file
of a run lives; everything else asks it (so sharded or multi-process checkpoints are a change here).

    run_dir/
      run.json            layout version and run id
      run.log             every library's log lines of every start (the console shows selfplay's, logs.py)
      config.yaml         the resolved config (replaced on resume only after the restore succeeded)
      metrics.jsonl       one line per step
      curriculum.jsonl    one line per teacher completion
      archive/            the novelty archive's embeddings and the pool's problems, appended to every step, and
                          snapshots of the archive's graph (`novelty/archive.py`, `curriculum/pool.py`)
      checkpoints/step-N/
        model/ | adapter/ full weights and tokenizer, or the LoRA adapter
        trainer.pt        optimizer and LR schedule
        rng.pt            Python, NumPy and torch RNG states, one set per rank of a multi-process run
        ahead.pt          async_generation: the next step's rounds, already written (prompts, completions,
                          solutions), so that a resumed run trains on what the straight run would have
        state.json        written last: a folder without it is incomplete and ignored; it records the length of
                          each file in archive/ at the checkpoint

A checkpoint is built in `.step-N.tmp` and renamed into place, so a kill leaves a whole checkpoint or none.
On resume the logs are cut back to the checkpoint's step and the archive's files to the recorded lengths (they
are only appended to), so no step appears twice or half, and a checkpoint costs what changed, not the archive.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import yaml

from selfplay import RUN_FORMAT_VERSION, __version__
from selfplay.config import SelfPlayConfig, config_from_dict
from selfplay.errors import SelfPlayError
from selfplay.files import atomic_write, truncate_jsonl, write_json

log = logging.getLogger(__name__)

RUN_INFO, CONFIG, METRICS, CURRICULUM, LOG = "run.json", "config.yaml", "metrics.jsonl", "curriculum.jsonl", "run.log"
CHECKPOINTS = "checkpoints"
MODEL, ADAPTER, TRAINER, RNG, AHEAD, STATE = "model", "adapter", "trainer.pt", "rng.pt", "ahead.pt", "state.json"
ARCHIVE = "archive"


class RunDirError(SelfPlayError):
    """A run directory that cannot be used as asked; the message names the file or folder."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path

    @property
    def step(self) -> int:
        return int(self.path.name.split("-", 1)[1])

    @cached_property
    def state(self) -> dict:
        return json.loads((self.path / STATE).read_text())

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER

    @property
    def is_lora(self) -> bool:
        return self.adapter_dir.is_dir()

    @property
    def base_model(self) -> str:
        return self.state["base_model"]

    def trainer_state(self) -> dict:
        return self._load(TRAINER)

    def ahead(self):
        """The next step's rounds written ahead (async_generation), or None."""
        return self._load(AHEAD) if (self.path / AHEAD).is_file() else None

    def restore_rng(self, numpy_rng: np.random.Generator, rank: int, world: int) -> None:
        """This rank's RNG states. `numpy_rng` is the run's shared stream (the same on every rank)."""
        states = self._load(RNG)
        numpy_rng.bit_generator.state = states[0]["numpy"]
        if len(states) != world:
            log.warning("%s was written by %d process(es), this run has %d: sampling continues from fresh seeds, so "
                        "the resumed run is not the one an uninterrupted run would have been", self.path / RNG,
                        len(states), world)
            return
        state = states[rank]
        random.setstate(state["python"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] is not None:
            torch.cuda.set_rng_state_all(state["cuda"])

    def _load(self, name: str):
        try:
            return torch.load(self.path / name, weights_only=False)
        except Exception as error:
            raise RunDirError(f"{self.path / name}: unreadable ({error}); delete the checkpoint folder {self.path} "
                              "to resume from the one before") from None


def checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Complete checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [path for path in folder.glob("step-*") if path.name[5:].isdigit() and (path / STATE).is_file()]
    return sorted((Checkpoint(path) for path in found), key=lambda c: c.step)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def find_checkpoint(path: str | Path) -> Checkpoint | None:
    """The checkpoint a path names: a checkpoint folder, or a run directory's newest one; None for other paths."""
    path = Path(path).expanduser()
    if (path / CHECKPOINTS).is_dir():
        found = checkpoints(path)
        if not found:
            raise RunDirError(f"{path}: run directory has no complete checkpoint")
        return found[-1]
    if (path / STATE).is_file() and ((path / MODEL).is_dir() or (path / ADAPTER).is_dir()):
        return Checkpoint(path)
    return None


def rng_state(numpy_rng: np.random.Generator) -> dict:
    """This process's RNG states, for `save_checkpoint` (which takes one per rank)."""
    return {"python": random.getstate(), "numpy": numpy_rng.bit_generator.state, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def archive_dir(run_dir: Path) -> Path:
    return Path(run_dir) / ARCHIVE


def save_checkpoint(run_dir: Path, step: int, *, model, weights: dict | None = None, tokenizer, lora: bool,
                    trainer_state: dict, rng: list[dict], appended: dict[str, int], state: dict,
                    keep: int, ahead=None) -> Checkpoint:
    """Write checkpoint `step` (state.json last), rename it into place, and remove those beyond the newest `keep`.
    `weights`: the model's whole state dict when it is sharded, else None. `rng`: `rng_state()` of every rank, in
    rank order. `appended`: the byte length of each file of `archive_dir` that this checkpoint covers (after they
    were flushed). `ahead`: the next step's rounds, written ahead (async_generation)."""
    folder = Path(run_dir) / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".step-{step}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if lora:
        model.save_pretrained(staging / ADAPTER, state_dict=weights)
    else:
        model.save_pretrained(staging / MODEL, state_dict=weights)
        tokenizer.save_pretrained(staging / MODEL)
    torch.save(trainer_state, staging / TRAINER)
    torch.save(rng, staging / RNG)
    if ahead is not None:
        torch.save(ahead, staging / AHEAD)
    write_json(staging / STATE, {**state, "step": step, "format_version": RUN_FORMAT_VERSION, "appended": appended})
    final = folder / f"step-{step}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return Checkpoint(final)


def prepare(run_dir: Path, resume: bool) -> None:
    """Create a run directory, or check the one being resumed, before any expensive work."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"output dir {run_dir} exists and is a file")
    info_path = run_dir / RUN_INFO
    if resume and not info_path.exists():
        raise RunDirError(f"--resume: {run_dir} holds no run to resume")
    if info_path.exists():
        try:
            version = json.loads(info_path.read_text())["format_version"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise RunDirError(f"{info_path}: unreadable or missing field 'format_version'") from None
        if version != RUN_FORMAT_VERSION:
            raise RunDirError(
                f"{info_path}: field 'format_version' is {version}, this selfplay ({__version__}) reads "
                f"{RUN_FORMAT_VERSION}; resume it with the version that wrote it or start a new output dir"
            )
        if not resume:
            raise RunDirError(f"output dir {run_dir} already holds a run; pass --resume or choose another")
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        raise RunDirError(f"output dir {run_dir} is not empty and holds no selfplay run ({RUN_INFO} missing)")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not info_path.exists():
        write_json(
            info_path,
            {"format_version": RUN_FORMAT_VERSION, "selfplay_version": __version__, "run_id": uuid.uuid4().hex[:16]},
        )


def run_id(run_dir: Path) -> str:
    return json.loads((Path(run_dir) / RUN_INFO).read_text())["run_id"]


def saved_config(run_dir: Path) -> SelfPlayConfig | None:
    path = Path(run_dir) / CONFIG
    return config_from_dict(yaml.safe_load(path.read_text()), str(path)) if path.is_file() else None


def write_config(run_dir: Path, config: SelfPlayConfig) -> None:
    atomic_write(Path(run_dir) / CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))


def rewind(run_dir: Path, config: SelfPlayConfig) -> Checkpoint | None:
    """Before resuming: the newest checkpoint (None: start from step 0), with the logs cut back to its step and
    the archive's files to its lengths, because what lies past them describes steps that will be run again.
    Warns about settings that changed."""
    saved = saved_config(run_dir)
    if saved is not None:
        changed = [key for key, value in config.to_dict().items() if saved.to_dict()[key] != value]
        if changed:
            log.warning("resuming with changed settings: %s", ", ".join(changed))
    checkpoint = latest_checkpoint(run_dir)
    step = checkpoint.step if checkpoint else 0
    for name in (METRICS, CURRICULUM):
        truncate_jsonl(Path(run_dir) / name, lambda r: isinstance(r.get("step"), int) and r["step"] <= step)
    if checkpoint is None:
        shutil.rmtree(archive_dir(run_dir), ignore_errors=True)
        return None
    for name, length in checkpoint.state["appended"].items():
        path = archive_dir(run_dir) / name
        size = path.stat().st_size if path.exists() else 0
        if size < length:
            raise RunDirError(f"{path}: {size} bytes, shorter than the {length} that {checkpoint.path / STATE} "
                              "records; the archive cannot be restored")
        os.truncate(path, length)
    return checkpoint
