"""Run-directory files, written so that a kill at any moment loses no finished work.

- Whole files (config, state, pool) are written to a temporary file, flushed, fsync'd and renamed.
- JSONL appends are one `write` of complete lines; readers drop a torn trailing line, and on resume the logs
  are cut back to the checkpoint being resumed, so no step appears twice or half.
- A checkpoint is built in a temporary folder and renamed into place; `state.json` is its last file, so a
  folder without it is incomplete and ignored.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from selfplay import RUN_FORMAT_VERSION, __version__

log = logging.getLogger(__name__)

METRICS, CURRICULUM, CONFIG, RUN_INFO = "metrics.jsonl", "curriculum.jsonl", "config.yaml", "run.json"


class RunDirError(RuntimeError):
    pass


def atomic_write(path: Path, data: bytes | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value) -> None:
    atomic_write(path, json.dumps(value, indent=2, sort_keys=True))


def append_jsonl(path: Path, records: list[dict]) -> None:
    if not records:
        return
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> Iterator[dict]:
    """Records of a JSONL file, streaming; a torn trailing line (a kill mid-append) or a corrupt line is skipped."""
    if not Path(path).exists():
        return
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                log.warning("%s:%d: incomplete last line skipped", path, number)
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: corrupt line skipped", path, number)


def truncate_jsonl(path: Path, keep: Callable[[dict], bool]) -> int:
    """Rewrite `path` atomically with only the complete records that `keep` accepts; returns how many went."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for record in read_jsonl(path):
        if keep(record):
            kept.append(record)
        else:
            dropped += 1
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    return dropped


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("step-*"):
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / "state.json").is_file():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def write_checkpoint(run_dir: Path, step: int, fill: Callable[[Path], dict], keep: int) -> Path:
    """`fill(folder)` writes the checkpoint's files and returns its state; state.json goes last, then the
    folder is renamed into place and old checkpoints beyond `keep` are removed."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".step-{step}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    state = fill(staging)
    write_json(staging / "state.json", {**state, "step": step, "format_version": RUN_FORMAT_VERSION})
    final = folder / f"step-{step}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Create or check a run directory before any expensive work."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"output dir {run_dir} exists and is a file")
    info_path = run_dir / RUN_INFO
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text())
            version = info["format_version"]
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
