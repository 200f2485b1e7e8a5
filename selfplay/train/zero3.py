"""DeepSpeed ZeRO-3: the engine that partitions the policy's weights, gradients and AdamW state over the ranks,
and its optimizer state in the same whole, per-parameter form a one-process run saves.

The engine owns what touches partitioned gradients: their reduction (an average over ranks, in the backward
pass), clipping at `max_grad_norm`, the skip of a step with a non-finite gradient norm, and the update of the
fp32 weights. Everything else stays selfplay's: the loss, the micro-batches (the boundary of each optimizer step
is set by the updater, so their count may differ between steps), the learning-rate schedule (it steps our AdamW's
param groups, which the engine steps), and precision: the weights stay fp32 and forward passes compute under the
updater's autocast, so the checkpointed weights are the fp32 masters and a resume is exact.
"""

from __future__ import annotations

import copy

import torch

from selfplay.config import SelfPlayConfig
from selfplay.distributed import Ranks


def engine(model, optimizer: torch.optim.Optimizer | None, config: SelfPlayConfig, ranks: Ranks):
    """`model` partitioned over the ranks and wrapped in a DeepSpeed engine stepping `optimizer` (None: a frozen
    model, such as the KL reference, partitioned for forward passes only)."""
    import deepspeed

    settings = copy.deepcopy(ranks.deepspeed) | {
        "train_micro_batch_size_per_gpu": config.train_micro_batch_size,
        "train_batch_size": config.train_micro_batch_size * ranks.world,
        "gradient_accumulation_steps": 1,  # the updater marks each optimizer step's last micro-batch itself
        "gradient_clipping": config.max_grad_norm,
        # With the optimizer state offloaded to CPU memory, our torch AdamW steps it there (DeepSpeed's own CPU
        # Adam is faster, but a different optimizer, with its own state)
        "zero_force_ds_cpu_optimizer": False,
    }
    wrapped, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=settings)
    return wrapped


def _flat_partitions(wrapped) -> list[torch.Tensor]:
    """The fp32 flat partitions our AdamW steps in place of the parameters (its state is keyed by them)."""
    return wrapped.optimizer.fp32_partitioned_groups_flat


def full_optimizer_state(wrapped, optimizer: torch.optim.Optimizer, parameters: list[torch.nn.Parameter]) -> dict:
    """`optimizer.state_dict()` as one process would hold it (per parameter, whole), gathered from the partitions
    of every rank (all ranks must call this): a checkpoint resumes at any world size, and under any engine."""
    from deepspeed.utils import safe_get_full_optimizer_state

    flat_state = optimizer.state.get(_flat_partitions(wrapped)[0], {})  # empty before the first step
    state = {index: {key: (safe_get_full_optimizer_state(parameter, key).cpu()
                           if value.dim() else value.clone())  # a moment, or the shared step count
                     for key, value in flat_state.items()}
             for index, parameter in enumerate(parameters)} if flat_state else {}
    # our AdamW has one param group, over all of `parameters`
    groups = [{key: value for key, value in group.items() if key != "params"} | {"params": list(range(len(parameters)))}
              for group in optimizer.param_groups]
    return {"state": state, "param_groups": groups}


def load_full_optimizer_state(wrapped, optimizer: torch.optim.Optimizer, parameters: list[torch.nn.Parameter],
                              saved: dict) -> None:
    """Each rank's partition of a state saved by `full_optimizer_state` (or by a one-process run)."""
    from deepspeed.utils import safe_set_full_optimizer_state

    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"], strict=True):
        group.update({key: value for key, value in saved_group.items() if key != "params"})
    if not saved["state"]:
        return
    first = saved["state"][0]
    for flat in _flat_partitions(wrapped):  # AdamW creates its state at the first step: create it to fill it
        optimizer.state[flat] = {key: value.clone() if value.dim() == 0 else torch.zeros_like(flat)
                                 for key, value in first.items()}
    for index, parameter in enumerate(parameters):
        for key, value in saved["state"][index].items():
            if value.dim():
                safe_set_full_optimizer_state(parameter, value, key)


__all__ = ["engine", "full_optimizer_state", "load_full_optimizer_state"]
