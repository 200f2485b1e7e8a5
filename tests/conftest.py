"""Shared fixtures: a tiny self-play config on the real embedded model, embedder, FAISS index and verifier."""

import pytest
import torch

from selfplay.config import SelfPlayConfig

TINY = dict(
    model="embedded",
    embedder="embedded",
    seeds="seeds/single.jsonl",
    teacher_prompts=2,
    teacher_samples=3,
    teacher_max_new_tokens=48,
    student_samples=2,
    student_max_new_tokens=40,
    lora=True,
    learning_rate=1e-3,
    max_grad_norm=1.0,
    train_micro_batch_size=8,
    save_every=1,
    verify_timeout=5.0,
    seed=7,
    vllm_kv_cache_gib=0.25,  # generation_backend stays 'auto': vLLM where it is installed, as users get it
    vllm_max_model_len=1024,
)


def trainer_logprobs(model, sample, temperature=1.0) -> torch.Tensor:
    """The trainer's own log-probability of each completion token of `sample` at `temperature`: the path the loss
    takes (`Updater.trainer_logprobs`), which the samplers' recorded log-probs must match."""
    from selfplay.train.updater import TrainRow, Updater

    updater = Updater(model, SelfPlayConfig(temperature=temperature), pad_token_id=0)
    row = TrainRow(sample.prompt_ids, sample.completion_ids, 0.0, "student", [0.0] * len(sample.completion_ids))
    return torch.tensor(updater.trainer_logprobs([row])[0])


@pytest.fixture
def tiny_config(tmp_path):
    def make(**overrides):
        return SelfPlayConfig(**{**TINY, "output_dir": str(tmp_path / "run"), **overrides})

    return make


@pytest.fixture(scope="session")
def short_run(tmp_path_factory):
    """A real two-step run shared by the export and report tests (read-only for them)."""
    from selfplay.runner import run

    out = tmp_path_factory.mktemp("short") / "run"
    return run(SelfPlayConfig(**{**TINY, "output_dir": str(out), "max_steps": 2, "seed": 11}), progress=False)


# Fixtures that load the real policy and embedder. A test that uses one is marked `slow`, so that
# `pytest -m "not slow"` runs the pure rooms in seconds; CI runs everything.
MODEL_FIXTURES = {"tiny_config", "short_run"}


def pytest_collection_modifyitems(items):
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
