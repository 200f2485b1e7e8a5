"""Resume is as if never stopped: a run stopped after step 2 (cleanly, or by SIGKILL in the middle of step 3) and
resumed to step 3 writes the same metrics (but for timings), the same curriculum and the same weights as a run
that was never stopped."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from selfplay.config import SelfPlayConfig
from selfplay.files import read_jsonl
from selfplay.runner import run
from selfplay.train.updater import Updater
from tests.conftest import TINY

STEPS = 3


def record(run_dir):
    """What must not depend on stopping: metrics without timings, the curriculum, the final trained weights."""
    metrics = [{k: v for k, v in m.items() if not k.startswith("time/")} for m in read_jsonl(run_dir / "metrics.jsonl")]
    weights = load_file(run_dir / f"checkpoints/step-{STEPS}/adapter/adapter_model.safetensors")
    return metrics, list(read_jsonl(run_dir / "curriculum.jsonl")), weights


def assert_same_run(resumed, straight):
    (metrics, curriculum, weights), (metrics0, curriculum0, weights0) = record(resumed), record(straight)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    for m, m0 in zip(metrics, metrics0):
        assert m == m0, {k: (m.get(k), m0.get(k)) for k in set(m) | set(m0) if m.get(k) != m0.get(k)}
    assert curriculum == curriculum0
    assert weights.keys() == weights0.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], weights0[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A run that was never stopped."""
    return run(SelfPlayConfig(**TINY, max_steps=STEPS, output_dir=str(tmp_path_factory.mktemp("straight") / "run")),
               progress=False)


PIPELINED = {"async_generation": True}


@pytest.fixture(scope="module")
def straight_pipelined(tmp_path_factory):
    """A pipelined run that was never stopped."""
    folder = tmp_path_factory.mktemp("straight-pipelined") / "run"
    return run(SelfPlayConfig(**TINY, **PIPELINED, max_steps=STEPS, output_dir=str(folder)), progress=False)


def test_stopped_after_step_two_then_resumed(straight, tiny_config):
    run(tiny_config(max_steps=2), progress=False)
    assert_same_run(run(tiny_config(max_steps=STEPS), resume=True, progress=False), straight)


@pytest.mark.slow  # a real run and a killed one, in processes of their own
def test_killed_in_the_middle_of_step_three_then_resumed(straight, tmp_path):
    kill_in_step_three_then_resume(tmp_path, {})
    assert_same_run(tmp_path / "killed", straight)


@pytest.mark.slow  # a real run and a killed one, in processes of their own
def test_a_pipelined_run_killed_in_step_three_then_resumed(straight_pipelined, tmp_path):
    """Pipelined, step 3's rounds were written during step 2 and saved with checkpoint 2: the resumed run trains on
    them, and writes step 4's from the same pool and weights, as the run that was never stopped."""
    kill_in_step_three_then_resume(tmp_path, PIPELINED)
    assert_same_run(tmp_path / "killed", straight_pipelined)
    metrics = list(read_jsonl(straight_pipelined / "metrics.jsonl"))
    assert [m["generation/staleness"] for m in metrics] == [0] + [int(m0["update/rows"] > 0) for m0 in metrics[:-1]]


def kill_in_step_three_then_resume(tmp_path, settings: dict) -> None:
    run_dir = tmp_path / "killed"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY, **settings, "max_steps": STEPS}))
    command = [sys.executable, "-m", "selfplay.cli", "--log-level", "WARNING", "run", "--config", str(config),
               "--output-dir", str(run_dir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (run_dir / "checkpoints/step-2/state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    time.sleep(1.0)  # into step 3: its generation (pipelined: step 4's) has begun, its line is not written
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(list(read_jsonl(run_dir / "metrics.jsonl"))) == 2, "killed too late: step 3 had finished"
    resumed = subprocess.run(command + ["--resume"], capture_output=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]


def learning_rates(updater: Updater, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(updater.scheduler.get_last_lr()[0])
        updater.optimizer.step()
        updater.scheduler.step()
    return rates


def test_the_schedule_horizon_is_fixed_by_the_first_start():
    config = SelfPlayConfig(lr_schedule="linear", learning_rate=1.0, max_steps=4)
    first = Updater(torch.nn.Linear(2, 2), config, pad_token_id=0)
    assert learning_rates(first, 2) == [1.0, 0.75]
    resumed = Updater(torch.nn.Linear(2, 2), SelfPlayConfig(**{**config.to_dict(), "max_steps": 6}), pad_token_id=0)
    resumed.load_state_dict(first.state_dict())
    # The run goes on to step 6, on the first start's 4-step schedule: past its end, the final rate (0) holds.
    assert learning_rates(resumed, 4) == [0.5, 0.25, 0.0, 0.0]
    cosine = Updater(torch.nn.Linear(2, 2), SelfPlayConfig(lr_schedule="cosine", learning_rate=1.0, max_steps=2), 0)
    assert learning_rates(cosine, 4) == pytest.approx([1.0, 0.5, 0.0, 0.0])  # transformers' cosine would rise again


def test_a_resumed_full_fine_tune_keeps_the_initial_policy_as_its_kl_reference(tiny_config):
    from selfplay.policy import EMBEDDED, load_policy
    from selfplay.runner import build

    settings = dict(lora=False, kl_beta=0.1, generation_backend="transformers")
    run(tiny_config(max_steps=1, **settings), progress=False)
    resumed = build(tiny_config(max_steps=2, **settings), resume=True)
    try:
        initial = dict(load_policy(EMBEDDED)[0].named_parameters())
        reference = dict(resumed.updater.reference.named_parameters())
        trained = dict(resumed.model.named_parameters())
        assert all(torch.equal(initial[k], v) for k, v in reference.items())
        assert any(not torch.equal(initial[k], v) for k, v in trained.items()), "the checkpoint should have trained"
        assert not any(p.requires_grad for p in reference.values())
    finally:
        resumed.verifier.close()
        resumed.backend.close()


@pytest.mark.slow
@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_killed_between_archive_appends_then_resumed_to_the_exact_archive(tiny_config, index_type):
    """What a kill in the middle of step 3 leaves in archive/: the archive's rows appended (the last write torn),
    half a pool record. Resume restores the archive and pool of checkpoint 2 exactly: sizes, ids, search results
    and (HNSW, restored from its snapshot and the batches after it) the graph itself."""
    from selfplay.curriculum.pool import POOL_FILE
    from selfplay.novelty.archive import EMBEDDINGS
    from selfplay.rundir import archive_dir
    from selfplay.runner import build, run_steps

    settings = dict(index_type=index_type, generation_backend="transformers")
    stopped = build(tiny_config(max_steps=2, **settings), resume=False)
    run_steps(stopped, progress=False)
    queries = np.random.default_rng(0).standard_normal((8, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    expected = archive_state(stopped.archive, stopped.pool, queries)  # in memory, as checkpoint 2 was written
    stopped.archive.add(queries[:3])
    folder = archive_dir(stopped.run_dir)
    with open(folder / EMBEDDINGS, "ab") as torn, open(folder / POOL_FILE, "ab") as half:
        torn.write(queries[3].tobytes()[:100])
        half.write(b'{"problem": "half a rec')
    resumed = build(tiny_config(max_steps=3, **settings), resume=True)
    try:
        assert archive_state(resumed.archive, resumed.pool, queries) == expected
        assert expected[0] > 1 and resumed.archive.is_hnsw == (index_type == "hnsw")
    finally:
        resumed.verifier.close()
        resumed.backend.close()


def archive_state(archive, pool, queries):
    import faiss

    graph = [faiss.vector_to_array(getattr(archive.index.hnsw, part)).tolist() for part in ("levels", "neighbors")
             if archive.is_hnsw]
    sims, ids = archive.search(queries, 5)
    return len(archive), pool.entries(), pool.members.tobytes().rstrip(b"\0"), sims.tolist(), ids.tolist(), graph

