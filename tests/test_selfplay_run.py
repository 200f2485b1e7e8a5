"""Two real self-play steps at tiny sizes, then a resume: the whole engine, nothing mocked."""

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file

from selfplay.files import read_jsonl
from selfplay.policy.loading import pick_dtype
from selfplay.runner import run

TERMS = ("solvability", "novelty", "format", "length")
METRIC_FIELDS = {"step", "teacher/reward_mean", "student/reward_mean", "student/solve_rate_mean",
                 "teacher/in_band_fraction", "teacher/valid_fraction", "pool/size", "update/rows", "verify/timeouts",
                 "time/teacher_generate", "time/step", "student/correct_mean", "student/format_mean",
                 *(f"teacher/{term}_mean" for term in TERMS)}
CURRICULUM_FIELDS = {"step", "teacher_prompt", "problem", "answer", "concepts", "valid", "solve_rate", "novelty",
                     "teacher_reward", "teacher_terms", "student_answers", "student_rewards"}


def adapter(run_dir, step):
    return load_file(run_dir / f"checkpoints/step-{step}/adapter/adapter_model.safetensors")


BACKENDS = [
    "transformers",
    pytest.param("vllm", marks=pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="no vllm")),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_steps_then_resume_continues_at_step_three(tiny_config, backend):
    config = tiny_config(max_steps=2, generation_backend=backend)
    run_dir = run(config, progress=False)

    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert METRIC_FIELDS <= set(m), METRIC_FIELDS - set(m)
        assert ("time/sync" in m) == (m["update/rows"] > 0)  # the sampler takes the weights after each update only
        if m["update/rows"]:
            assert m["update/lr"] == config.learning_rate  # the constant schedule's rate, the one the update used
            # the transformers backend samples from the trainer itself (exactly in float32; in bfloat16 its
            # generation batches round otherwise than the loss's); vLLM only approximately
            exact = backend == "transformers" and pick_dtype(config.dtype, torch.device("cpu")) == torch.float32
            assert m["update/sampler_trainer_logprob_gap"] < (1e-4 if exact else 0.2)
        assert 0.0 <= m["teacher/valid_fraction"] <= 1.0 and m["pool/size"] >= 1
    curriculum = list(read_jsonl(run_dir / "curriculum.jsonl"))
    # One line per teacher completion: 2 prompts x 3 samples per step.
    assert len(curriculum) == 12 and {c["step"] for c in curriculum} == {1, 2}
    for c in curriculum:
        assert CURRICULUM_FIELDS <= set(c)
        if c["valid"]:
            assert len(c["student_answers"]) == 2 and 0.0 <= c["solve_rate"] <= 1.0 and 0.0 <= c["novelty"] <= 1.0
            assert c["teacher_terms"]["novelty"] == c["novelty"] and None not in c["teacher_terms"].values()
        else:
            assert c["reason"] and c["solve_rate"] is None
            assert [k for k, v in c["teacher_terms"].items() if v is not None] == ["format"]
    assert (run_dir / "config.yaml").is_file()
    # Every valid problem enters the novelty archive, admitted or not; only admitted ones enter the pool.
    seeds = metrics[0]["pool/size"] - metrics[0]["pool/admitted"]
    for m in metrics:
        this_far = [c for c in curriculum if c["step"] <= m["step"]]
        assert m["archive/size"] == seeds + sum(c["valid"] for c in this_far)
        assert m["pool/size"] == seeds + sum(c["admitted"] for c in this_far)

    # LoRA's B matrices start at zero. A step that trained changes the adapter; one that did not leaves it be.
    assert any(m["update/rows"] > 0 for m in metrics), "no step had a group with reward variance"
    before = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in adapter(run_dir, 1).items()}
    for m in metrics:
        after = adapter(run_dir, m["step"])
        changed = any(not torch.equal(before[k], after[k]) for k in after if "lora_B" in k)
        assert changed == (m["update/rows"] > 0), m["step"]
        before = after

    pool_before = json.loads((run_dir / "checkpoints/step-2/state.json").read_text())["pool_size"]
    resumed = run(tiny_config(max_steps=3, generation_backend=backend), resume=True, progress=False)
    metrics = list(read_jsonl(resumed / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2, 3]
    step3 = [c for c in read_jsonl(resumed / "curriculum.jsonl") if c["step"] == 3]
    assert metrics[2]["pool/size"] == pool_before + sum(c["admitted"] for c in step3)  # nothing evicted at this size
    assert {c["step"] for c in read_jsonl(resumed / "curriculum.jsonl")} == {1, 2, 3}
    assert (resumed / "checkpoints/step-3/state.json").is_file()


def test_three_steps_in_program_mode(tiny_config):
    """Program mode end to end: the teacher's programs run in the sandbox (as `nobody` when the tests run as
    root) and their printed answers become the references the students are judged against."""
    run_dir = run(tiny_config(max_steps=3, reference_answer="program", teacher_max_new_tokens=160), progress=False)
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3]
    curriculum = list(read_jsonl(run_dir / "curriculum.jsonl"))
    ran = [c for c in curriculum if c["valid"] or c["reason"].startswith("program failed")]
    assert ran, "no teacher program reached the sandbox in 3 steps"
    for c in curriculum:
        if c["valid"]:
            assert c["teacher_answer"] and len(c["teacher_answer"]) <= 200


def test_rounds_accumulate_into_one_optimizer_step_and_grow_the_archive_between_them(tiny_config):
    """rounds_per_update 2: each step plays two generation rounds (the reference's accumulation) and updates once;
    every round's valid problems are archived before the next round measures novelty against the archive."""
    run_dir = run(tiny_config(max_steps=2, rounds_per_update=2), progress=False)
    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    curriculum = list(read_jsonl(run_dir / "curriculum.jsonl"))
    assert [(c["step"], c["round"]) for c in curriculum] == [(s, r) for s in (1, 2) for r in (0, 1) for _ in range(6)]
    seeds = metrics[0]["archive/size"] - sum(c["valid"] for c in curriculum if c["step"] == 1)
    for m in metrics:
        assert m["archive/size"] == seeds + sum(c["valid"] for c in curriculum if c["step"] <= m["step"])
    # every valid problem was measured against the archive as its round found it
    assert all(c["nearest_archived"] is not None for c in curriculum if c["valid"])
    optimizer = torch.load(run_dir / "checkpoints/step-2/trainer.pt", weights_only=False)["optimizer"]
    steps_taken = {float(state["step"]) for state in optimizer["state"].values()}
    assert steps_taken == {float(sum(m["update/rows"] > 0 for m in metrics))}  # one optimizer step per step at most
    assert any(m["update/rows"] for m in metrics)


def test_the_probe_measures_the_rewards_and_is_never_trained_on(tiny_config, tmp_path):
    """The same run with and without the probe trains on the same rows (the same curriculum, losses and
    weights): the probe's problems are solved and judged beside the step and leave its sampling untouched."""
    plain = run(tiny_config(max_steps=2, output_dir=str(tmp_path / "plain")), progress=False)
    probed = run(tiny_config(max_steps=2, output_dir=str(tmp_path / "probed"), probe_every=1, probe_size=3),
                 progress=False)
    metrics = {d: list(read_jsonl(d / "metrics.jsonl")) for d in (plain, probed)}
    for with_probe, without in zip(metrics[probed], metrics[plain]):
        assert {k: v for k, v in with_probe.items() if not k.startswith(("time/", "probe/"))} == \
            {k: v for k, v in without.items() if not k.startswith("time/")}
        assert with_probe["probe/problems"] == 3 and 0 <= with_probe["probe/student_accuracy"] <= 1
    assert list(read_jsonl(probed / "curriculum.jsonl")) == list(read_jsonl(plain / "curriculum.jsonl"))
    for name, weights in adapter(plain, 2).items():
        torch.testing.assert_close(adapter(probed, 2)[name], weights)


def test_two_routes_anchors_and_the_gate_in_a_real_run(tiny_config):
    """The reward levers of issue 38 together, end to end: two_route restates every valid problem and judges both
    wordings, anchors add the seeds' known answers to the students' groups, the gate withholds weak references."""
    config = tiny_config(max_steps=2, seeds="seeds/arithmetic.jsonl", reference_answer="two_route",
                         anchor_share=0.5, min_majority_share=0.5, probe_every=2, probe_size=2)
    run_dir = run(config, progress=False)
    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert all(0 <= m["student/anchor_accuracy"] <= 1 for m in metrics)  # 3 anchors a round (0.5 x 2 x 3)
    assert "probe/label_accuracy" in metrics[1] and metrics[1]["probe/problems"] == 2
    valid = [c for c in read_jsonl(run_dir / "curriculum.jsonl") if c["valid"]]
    assert valid and all("restated" in c and len(c["restated_answers"]) == (2 if c["restated"] else 0) for c in valid)
    for c in valid:  # no reference without two agreeing routes; every paid reference reached by half the students
        if c["restated"] is None:
            assert c["answer"] is None
        if c["teacher_terms"]["solvability"]:
            assert c["solve_rate"] >= 0.5
