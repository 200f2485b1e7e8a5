"""Run by test_distributed.py as each of two processes launched with an accelerate config (experiments/accelerate/
ddp.yaml, fsdp2.yaml or deepspeed.yaml): one optimizer step of the real `Updater` on a tiny model, whole on each
rank (DDP: each rank's gradients summed), sharded by FSDP2 or partitioned by ZeRO-3, against the same step taken
by one process on the whole model, writing
what this rank saw to <folder>/rank-<r>.json (the folder is the first argument), for full fine-tuning and LoRA.

Three rows at one row per micro-batch deal two micro-batches to rank 0 and one to rank 1, so the step only
finishes if the short rank pads its forward passes to the first rank's count."""

import copy
import json
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from selfplay.config import SelfPlayConfig
from selfplay.distributed import Ranks
from selfplay.policy.vllm_backend import trained_weights
from selfplay.train.updater import TrainRow, Updater, add_lora


class OneProcess(Ranks):
    """This process alone, as a single-process run sees itself: every collective is the identity."""

    def __init__(self) -> None:
        self.rank, self.world, self.is_main = 0, 1, True
        self.fsdp = self.sharded = False
        self.deepspeed = None


def step_both_ways(ranks: Ranks, lora: bool) -> dict:
    """The step on a fully trained or LoRA-wrapped tiny model, compared through what the vLLM push sends: the
    whole (merged) weights."""
    torch.manual_seed(0)
    tiny = AutoConfig.for_model("llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, vocab_size=64, tie_word_embeddings=True)
    config = SelfPlayConfig(lora=lora, lora_r=4, learning_rate=1e-2, max_grad_norm=1e9, train_micro_batch_size=1,
                            max_steps=1)
    whole_model = AutoModelForCausalLM.from_config(tiny)
    whole_model = add_lora(whole_model, config) if lora else whole_model
    start = {name: weight.clone() for name, weight in trained_weights(whole_model)}
    sharded_model = ranks.shard(copy.deepcopy(whole_model))
    generator = torch.Generator().manual_seed(1)
    rows = [TrainRow(prompt_ids=torch.randint(1, 64, (5,), generator=generator).tolist(),
                     completion_ids=torch.randint(1, 64, (length,), generator=generator).tolist(),
                     advantage=advantage, role=role, sampler_logprobs=[-3.0] * length)
            for length, advantage, role in [(4, 1.0, "student"), (6, -1.0, "student"), (3, 0.5, "teacher")]]
    sharded_updater = Updater(sharded_model, config, pad_token_id=0, ranks=ranks)
    alone_updater = Updater(whole_model, config, pad_token_id=0, ranks=OneProcess())
    sharded, alone = sharded_updater.step(rows), alone_updater.step(rows)
    pushed = dict(trained_weights(sharded_model))
    moved = {name: weight.clone() for name, weight in trained_weights(whole_model)}
    # The optimizer state a checkpoint holds: whole and per parameter, as one process holds it.
    saved = sharded_updater.state_dict()["optimizer"]
    alone_state = copy.deepcopy(alone_updater.state_dict())
    # Compared now: the resume below steps an optimizer that may hold `alone_state`'s own tensors (torch loads a
    # state without copying what is already in place).
    saved_moments_difference = max((float((saved["state"][i][key] - state[key]).abs().max())
                                    for i, state in alone_state["optimizer"]["state"].items()
                                    for key in ("exp_avg", "exp_avg_sq")), default=None) if saved else None
    saved_steps = sorted({float(state["step"]) for state in saved["state"].values()}) if saved else None
    # A resume on the sharded engine from the one-process state, then one more step both ways: the same step only
    # if every moment, step count and learning rate was restored.
    resumed_model = ranks.shard(copy.deepcopy(whole_model))
    resumed_updater = Updater(resumed_model, config, pad_token_id=0, ranks=ranks)
    resumed_updater.load_state_dict(alone_state)
    resumed_updater.step(rows), alone_updater.step(rows)
    resumed, moved_again = dict(trained_weights(resumed_model)), dict(trained_weights(whole_model))
    # A NaN loss (hence gradient) on the sharded engine: the step is skipped and counted, the weights stay.
    nan_rows = [TrainRow(**{**vars(row), "advantage": float("nan")}) for row in rows]
    nan_step = resumed_updater.step(nan_rows)
    after_nan = dict(trained_weights(resumed_model))
    return {
        "grad_norm": [sharded["grad_norm"], alone["grad_norm"]],
        "loss": [sharded["loss"], alone["loss"]],
        "largest_difference": max(float((pushed[name] - moved[name]).abs().max()) for name in moved),
        "largest_move": max(float((moved[name] - start[name]).abs().max()) for name in moved),
        "saved_moments_difference": saved_moments_difference,
        "saved_steps": saved_steps,
        "resumed_difference": max(float((resumed[name] - moved_again[name]).abs().max()) for name in moved),
        "second_move": max(float((moved_again[name] - moved[name]).abs().max()) for name in moved),
        "nan_skipped": nan_step["skipped_steps"],
        "nan_moved": any(not torch.equal(after_nan[name], resumed[name]) for name in resumed),
    }


# The models live in the function: gone before the group is destroyed (see Ranks.close)
ranks = Ranks()
try:
    assert ranks.world == 2, "launch two processes"
    if ranks.deepspeed:  # ZeRO-3 keeps parameters under 100,000 elements whole: partition the tiny model's too
        ranks.deepspeed["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    seen = {kind: step_both_ways(ranks, lora=kind == "lora") for kind in ("full", "lora")}
    (Path(sys.argv[1]) / f"rank-{ranks.rank}.json").write_text(json.dumps(seen))
finally:
    ranks.close()
