"""Run by test_distributed.py as each of two processes launched with experiments/accelerate/fsdp2.yaml: one
optimizer step of the real `Updater` on an FSDP2-sharded tiny model, against the same step taken by one process
on the whole model, writing what this rank saw to <folder>/rank-<r>.json (the folder is the first argument).

Three rows at one row per micro-batch deal two micro-batches to rank 0 and one to rank 1, so the step only
finishes if the short rank pads its forward passes to the first rank's count."""

import copy
import json
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from selfplay.config import SelfPlayConfig
from selfplay.distributed import Ranks, whole
from selfplay.train.updater import TrainRow, Updater


class OneProcess(Ranks):
    """This process alone, as a single-process run sees itself: every collective is the identity."""

    def __init__(self) -> None:
        self.rank, self.world, self.is_main, self.sharded = 0, 1, True, False


def step_both_ways(ranks: Ranks, folder: str) -> None:
    assert ranks.sharded, "launch with experiments/accelerate/fsdp2.yaml"
    torch.manual_seed(0)
    tiny = AutoConfig.for_model("llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, vocab_size=64, tie_word_embeddings=True)
    whole_model = AutoModelForCausalLM.from_config(tiny)
    start = {name: p.detach().clone() for name, p in whole_model.named_parameters()}
    sharded_model = ranks.shard(copy.deepcopy(whole_model))
    config = SelfPlayConfig(lora=False, learning_rate=1e-2, max_grad_norm=1e9, train_micro_batch_size=1, max_steps=1)
    generator = torch.Generator().manual_seed(1)
    rows = [TrainRow(prompt_ids=torch.randint(1, 64, (5,), generator=generator).tolist(),
                     completion_ids=torch.randint(1, 64, (length,), generator=generator).tolist(),
                     advantage=advantage, role=role, sampler_logprobs=[-3.0] * length)
            for length, advantage, role in [(4, 1.0, "student"), (6, -1.0, "student"), (3, 0.5, "teacher")]]
    sharded = Updater(sharded_model, config, pad_token_id=0, ranks=ranks).step(rows)
    alone = Updater(whole_model, config, pad_token_id=0, ranks=OneProcess()).step(rows)
    weights = {name: whole(p.detach()) for name, p in sharded_model.named_parameters()}
    seen = {
        "grad_norm": [sharded["grad_norm"], alone["grad_norm"]],
        "loss": [sharded["loss"], alone["loss"]],
        "largest_difference": max(float((weights[name] - p).abs().max())
                                  for name, p in whole_model.named_parameters()),
        "largest_move": max(float((p - start[name]).abs().max()) for name, p in whole_model.named_parameters()),
    }
    (Path(folder) / f"rank-{ranks.rank}.json").write_text(json.dumps(seen))


# The models live in the function: gone before the group is destroyed (see Ranks.close)
ranks = Ranks()
try:
    step_both_ways(ranks, sys.argv[1])
finally:
    ranks.close()
