"""Multi-process runs for real: two processes launched through accelerate, talking over gloo on this CPU.

The collectives of `Ranks` on their own (seconds), then a real 2-process self-play run on the embedded model and
its 2-process resume. Each rank checks at every step that its pool, archive, novelty scores and weights agree
with the other's (`Ranks.agree`, which stops the run on a mismatch); the first test shows that check can fail."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from selfplay.files import read_jsonl
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
# The shipped accelerate config, as a user launches it (2 processes here instead of its 8 GPUs).
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
          str(ROOT / "experiments/accelerate/ddp.yaml"), "--num_processes", "2"]


def test_collectives_split_gather_sum_and_catch_divergence(tmp_path):
    worker = Path(__file__).with_name("ranks_worker.py")
    done = subprocess.run([*LAUNCH, str(worker), str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [s["world"] for s in seen] == [2, 2]
    assert [s["share"] for s in seen] == [[0, 1, 2], [3, 4]]
    for s in seen:
        assert s["map"] == [0, 10, 20, 31, 41]  # each item worked on by its rank, gathered in item order
        assert s["map_fewer_items_than_ranks"] == [100]
        assert s["summed"] == [[3.0] * 3, [[0.0, 3.0, 6.0], [9.0, 12.0, 15.0]], [1.0, 1.0]]
        assert "weights" in s["diverged"] and "pool" not in s["diverged"]
    assert seen[0]["agreed"] == seen[1]["agreed"]


def test_an_fsdp2_step_equals_the_one_process_step_with_uneven_micro_batches(tmp_path):
    worker = Path(__file__).with_name("fsdp_worker.py")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "experiments/accelerate/fsdp2.yaml"), "--num_processes", "2"]
    done = subprocess.run([*launch, str(worker), str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert seen["largest_move"] > 1e-3  # the step trained (AdamW at lr 1e-2 moves every weight it touches)
        assert seen["largest_difference"] < 1e-5  # and the sharded weights are the one-process weights
        sharded, alone = seen["grad_norm"]
        assert sharded == pytest.approx(alone, rel=1e-4)  # summed over ranks, not averaged
        assert seen["loss"][0] == pytest.approx(seen["loss"][1], rel=1e-5)


def run_command(config: Path, run_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfplay", "--log-level", "WARNING", "run", "--num-processes", "2",
                           "--config", str(config), "--output-dir", str(run_dir), *flags],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_two_process_run_agrees_trains_logs_once_and_resumes(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY, "max_steps": 2, "teacher_samples": 2}))
    run_dir = tmp_path / "run"
    done = run_command(config, run_dir)
    assert done.returncode == 0, done.stderr[-3000:]

    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2]  # rank 0 alone writes: each step once
    assert [m["world_size"] for m in metrics] == [2, 2]
    # Both ranks agreed at every step (a mismatch stops the run); the digest moves as the state does.
    assert metrics[0]["ranks/digest"] != metrics[1]["ranks/digest"]
    curriculum = list(read_jsonl(run_dir / "curriculum.jsonl"))
    per_step = TINY["teacher_prompts"] * 2
    assert [r["step"] for r in curriculum] == [1] * per_step + [2] * per_step
    assert metrics[1]["archive/size"] == 1 + sum(r["valid"] for r in curriculum)
    trained = [m["step"] for m in metrics if m["update/rows"]]
    assert trained, "no step had a group with reward variance; the weights check below would be empty"
    adapter = load_file(run_dir / f"checkpoints/step-{trained[-1]}/adapter/adapter_model.safetensors")
    assert any(t.abs().sum() > 0 for name, t in adapter.items() if "lora_B" in name)  # LoRA B starts at zero

    resumed = run_command(config, run_dir, "--resume", "--max-steps", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert metrics[2]["world_size"] == 2 and metrics[2]["pool/size"] >= metrics[1]["pool/size"]
    assert [r["step"] for r in read_jsonl(run_dir / "curriculum.jsonl")].count(3) == per_step


@pytest.mark.slow
def test_fsdp2_full_fine_tuning_shards_trains_saves_whole_weights_and_resumes(tmp_path):
    """The shipped fsdp2.yaml, as a user launches it, on the case it exists for: full fine-tuning."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY, "lora": False, "learning_rate": 1e-4, "max_steps": 2,
                                      "keep_checkpoints": 1}))
    run_dir = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "experiments/accelerate/fsdp2.yaml"), "--num_processes", "2", "-m", "selfplay",
              "--log-level", "WARNING", "run", "--config", str(config), "--output-dir", str(run_dir)]
    done = subprocess.run(launch, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2] and [m["world_size"] for m in metrics] == [2, 2]
    assert all(m["ranks/digest"] for m in metrics)  # the ranks agreed on pool, archive and (whole) weights

    from selfplay.policy import resolve_model

    base = load_file(Path(resolve_model("embedded")) / "model.safetensors")
    saved = load_file(run_dir / "checkpoints/step-2/model/model.safetensors")
    assert {name: t.shape for name, t in saved.items()} == {name: t.shape for name, t in base.items()}  # whole
    assert any(m["update/rows"] for m in metrics), "no step had a group with reward variance: nothing to check"
    assert any(not torch.equal(saved[name], base[name]) for name in base)  # they trained
    optimizer = torch.load(run_dir / "checkpoints/step-2/trainer.pt", weights_only=False)["optimizer"]
    moments = [s["exp_avg"] for s in optimizer["state"].values()]
    assert sum(m.numel() for m in moments) == sum(t.numel() for t in base.values())  # gathered, not one shard

    resumed = subprocess.run([*launch, "--resume", "--max-steps", "3"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.parametrize(("variables", "message"), [
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed .* not supported.*fsdp2.yaml"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "FSDP1 .* not supported.*fsdp_version: 2"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"},
     "cpu_ram_efficient_loading .* not supported.*false"),
])
def test_unsupported_engines_are_refused_with_a_message(monkeypatch, variables, message):
    from selfplay.distributed import Ranks
    from selfplay.errors import SelfPlayError

    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(SelfPlayError, match=message):
        Ranks()
