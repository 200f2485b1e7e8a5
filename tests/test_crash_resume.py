"""Kill a real run with SIGKILL at random moments (one of them inside a checkpoint write), resume it each time,
and check that no step is lost or repeated and that everything on disk loads."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from selfplay.curriculum.pool import Pool
from selfplay.files import read_jsonl
from selfplay.novelty import Archive
from selfplay.rundir import archive_dir, checkpoints
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # runs the real model in subprocesses

STEPS = 5
SAMPLES_PER_STEP = 2 * 2  # teacher prompts x teacher samples
TIMEOUT = 600


def start(config_path: Path, run_dir: Path, resume: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "selfplay.cli", "--log-level", "WARNING", "run", "--config", str(config_path),
               "--output-dir", str(run_dir)] + (["--resume"] if resume else [])
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)  # the run and its verifier workers, without warning
    process.wait()


def wait_for(condition, process, limit=TIMEOUT) -> bool:
    """Poll every 5 ms until `condition()`; False if the run ended first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    raise TimeoutError("run did not reach the kill point in time")


def steps_logged(run_dir: Path) -> int:
    return len(list(read_jsonl(run_dir / "metrics.jsonl")))


def test_sigkill_at_random_moments_then_resume(tmp_path):
    rng = random.Random(1234)
    run_dir = tmp_path / "run"
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({**TINY, "teacher_prompts": 2, "teacher_samples": 2, "teacher_max_new_tokens": 24,
                                           "student_max_new_tokens": 24, "max_steps": STEPS, "seed": 3}))
    kill_points = [
        ("at a random moment after start-up", lambda: steps_logged(run_dir) >= 1, lambda: rng.uniform(0.0, 3.0)),
        ("inside a checkpoint write", lambda: any((run_dir / "checkpoints").glob(".step-*.tmp")), lambda: 0.0),
        ("between a step's log lines and its checkpoint", None, lambda: 0.0),
        ("at a random moment", lambda: steps_logged(run_dir) >= 3, lambda: rng.uniform(0.0, 2.0)),
    ]
    resume, kills = False, []
    for name, condition, delay in kill_points:
        process = start(config_path, run_dir, resume)
        resume = True
        if condition is None:  # the moment a new metrics line lands, before its checkpoint is renamed into place
            before = steps_logged(run_dir)
            condition = lambda before=before: steps_logged(run_dir) > before  # noqa: E731
        reached = wait_for(condition, process)
        if not reached:
            break
        time.sleep(delay())
        kill(process)
        kills.append(name)
    assert len(kills) >= 3, f"the run finished before enough kills: {kills}"

    final = start(config_path, run_dir, resume=True)
    _, stderr = final.communicate(timeout=TIMEOUT)
    assert final.returncode == 0, stderr.decode()[-3000:]

    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))  # none lost, none repeated
    curriculum = list(read_jsonl(run_dir / "curriculum.jsonl"))
    for step in range(1, STEPS + 1):
        assert sum(r["step"] == step for r in curriculum) == SAMPLES_PER_STEP
    assert (run_dir / "curriculum.jsonl").read_bytes().endswith(b"\n")

    found = checkpoints(run_dir)
    assert found and found[-1].step == STEPS
    assert not list((run_dir / "checkpoints").glob(".step-*.tmp"))
    for checkpoint in found:
        assert load_file(checkpoint.adapter_dir / "adapter_model.safetensors")
        checkpoint.trainer_state()
        torch.load(checkpoint.path / "rng.pt", weights_only=False)
    newest = found[-1]
    for name, length in newest.state["appended"].items():  # the run ended on a checkpoint: nothing beyond it
        assert (archive_dir(run_dir) / name).stat().st_size == length, name
    archive = Archive(384)
    archive.load(archive_dir(run_dir), newest.state["archive"])  # raises if embeddings and batch ends disagree
    pool = Pool(archive)
    pool.load(archive_dir(run_dir), newest.state["pool"])
    assert len(archive) == newest.state["archive_size"] >= len(pool) == newest.state["pool_size"]
