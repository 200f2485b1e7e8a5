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


@pytest.mark.slow  # two launched processes load the real model
@pytest.mark.parametrize("engine", ["ddp", "fsdp2", "deepspeed", "deepspeed-offload"])
def test_a_two_process_step_equals_the_one_process_step_with_uneven_micro_batches(tmp_path, engine):
    """Each rank's loss is its part of the full-batch loss (normalised by the whole batch's tokens, not its own),
    and the gradients are summed: the step is the one-process step, whole (DDP) or sharded."""
    worker = Path(__file__).with_name("sharded_worker.py")
    launch_config = ROOT / f"experiments/accelerate/{engine.removesuffix('-offload')}.yaml"
    if engine.endswith("-offload"):  # the optimizer state in CPU memory, stepped there
        offloaded = yaml.safe_load(launch_config.read_text())
        offloaded["deepspeed_config"]["offload_optimizer_device"] = "cpu"
        launch_config = tmp_path / "offload.yaml"
        launch_config.write_text(yaml.safe_dump(offloaded))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_config),
              "--num_processes", "2"]
    done = subprocess.run([*launch, str(worker), str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        for kind, seen in json.loads((tmp_path / f"rank-{rank}.json").read_text()).items():  # full, lora
            assert seen["largest_move"] > 1e-3, kind  # the step trained (AdamW at lr 1e-2 moves what it touches)
            assert seen["largest_difference"] < 1e-4, kind  # and the pushed weights are the one-process weights
            sharded, alone = seen["grad_norm"]
            assert sharded == pytest.approx(alone, rel=1e-4), kind  # summed over ranks, not averaged
            assert seen["loss"][0] == pytest.approx(seen["loss"][1], rel=1e-5), kind
            # Resumed from the one-process optimizer state, the sharded run takes the one-process second step.
            assert seen["second_move"] > 1e-3 and seen["resumed_difference"] < 1e-5, kind
            assert seen["nan_skipped"] == 1 and not seen["nan_moved"], kind  # a NaN gradient steps nothing
            if rank == 0:  # the saved state is gathered (onto the first rank at least) into the one-process form
                assert seen["saved_moments_difference"] < 1e-6 and seen["saved_steps"] == [1.0], kind


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
@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed"])
def test_sharded_full_fine_tuning_trains_saves_whole_weights_and_resumes(tmp_path, engine):
    """The shipped fsdp2.yaml and deepspeed.yaml, as a user launches them, on the case they exist for: full
    fine-tuning. The ZeRO-3 run resumes in one process without DeepSpeed: its checkpoint is whole."""
    config = tmp_path / "config.yaml"
    # kl_beta: the KL reference, the initial policy, is sharded too (ZeRO-3: an engine without an optimizer)
    config.write_text(yaml.safe_dump({**TINY, "lora": False, "learning_rate": 1e-4, "kl_beta": 0.01, "max_steps": 2,
                                      "keep_checkpoints": 1}))
    run_dir = tmp_path / "run"
    run = ["-m", "selfplay", "--log-level", "WARNING", "run", "--config", str(config), "--output-dir", str(run_dir)]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / f"experiments/accelerate/{engine}.yaml"), "--num_processes", "2", *run]
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
    assert all(m["update/kl"] >= 0 for m in metrics if m["update/rows"])  # measured against the sharded reference
    optimizer = torch.load(run_dir / "checkpoints/step-2/trainer.pt", weights_only=False)["optimizer"]
    moments = [s["exp_avg"] for s in optimizer["state"].values()]
    assert sum(m.numel() for m in moments) == sum(t.numel() for t in base.values())  # gathered, not one shard

    resume = [sys.executable, *run] if engine == "deepspeed" else launch
    resumed = subprocess.run([*resume, "--resume", "--max-steps", "3"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert metrics[2]["world_size"] == (1 if engine == "deepspeed" else 2)


@pytest.mark.parametrize(("variables", "message"), [
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"},
     "ZeRO stage 2 .* not supported.*zero_stage: 3"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true"},
     "zero3_init_flag .* not supported.*false"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO3_INIT": "false",
      "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(ROOT / "tests/data/ds-bf16.json")},
     "ds-bf16.json sets optimizer, bf16: selfplay sets these itself"),
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


def test_deepspeed_asked_for_but_not_installed_is_refused_with_the_install_command(monkeypatch):
    import importlib.util

    from selfplay.distributed import Ranks
    from selfplay.errors import SelfPlayError

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "deepspeed" else real_find_spec(name))
    with pytest.raises(SelfPlayError, match=r"DeepSpeed, which is not installed: pip install -e '\.\[deepspeed\]'"):
        Ranks()
