"""Multi-process runs for real: two processes launched through accelerate, talking over gloo on this CPU.

The collectives of `Ranks` on their own (seconds), then a real 2-process self-play run on the embedded model and
its 2-process resume. Each rank checks at every step that its pool, archive, novelty scores and weights agree
with the other's (`Ranks.agree`, which stops the run on a mismatch); the first test shows that check can fail."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
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


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_sharding_engines_are_refused_with_a_message(monkeypatch, variable):
    from selfplay.distributed import Ranks
    from selfplay.errors import SelfPlayError

    monkeypatch.setenv(variable, "true")
    with pytest.raises(SelfPlayError, match="not supported yet.*ddp.yaml"):
        Ranks()
