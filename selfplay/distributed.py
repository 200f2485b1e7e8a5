"""This process's place in a data-parallel run, and the few collectives a step needs.

Launch N processes the way accelerate's users launch everything (`accelerate launch --multi_gpu --num_processes N
-m selfplay run ...`, or `selfplay run --num-processes N`); on a machine without CUDA the processes talk over
gloo. One process needs no launcher and is world 1: every collective below is then the identity.

The design is the reference's data parallelism: work that samples or runs untrusted code (generation,
verification, programs, embedding) is split by item across ranks and gathered back in rank order, so every rank
holds the same step product and applies the same pure rules to it (the pool, the FAISS indexes and the rewards
agree without being sent around). Each rank then trains on its share of the rows and the gradients are summed
once per optimizer step, so the weights stay identical too. `agree` checks that they do.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

import torch

from selfplay.errors import SelfPlayError

# Engines that shard the weights across ranks: not supported yet (every rank holds the whole model here).
BUCKET_ELEMENTS = 2**25  # gradients summed per collective: 128 MiB in fp32
SHARDING_ENGINES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


class RanksDiverged(SelfPlayError):
    """Ranks that must hold the same state do not: continuing would train on a silently split run."""


class Ranks:
    def __init__(self) -> None:
        for variable, engine in SHARDING_ENGINES.items():
            if os.environ.get(variable, "false").lower() == "true":
                raise SelfPlayError(f"{engine} (set by the accelerate config) is not supported yet: every rank holds "
                                    "the whole model; launch with experiments/accelerate/ddp.yaml")
        from accelerate import PartialState

        # gloo between CPU processes when there is no CUDA (accelerate picks nccl only with cpu=False and CUDA).
        self.state = PartialState(cpu=not torch.cuda.is_available())
        self.rank, self.world = self.state.process_index, self.state.num_processes
        self.is_main = self.state.is_main_process

    def share(self, count: int) -> range:
        """Indices of this rank's contiguous share of `count` items (the first ranks take one more)."""
        base, extra = divmod(count, self.world)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def gather(self, items: list) -> list:
        """Every rank's `items`, concatenated in rank order, on every rank."""
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def map(self, work: Callable[[list], Sequence], items: Sequence) -> list:
        """`work` applied to this rank's share of `items` (one call, a list in, one result per item out), the
        results gathered in item order on every rank."""
        mine = [items[i] for i in self.share(len(items))]
        return self.gather(list(work(mine)) if mine else [])

    def sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of `parameters` over ranks (a rank without rows adds zeros), a bucket of up to
        BUCKET_ELEMENTS at a time: few collectives, and no second copy of all the gradients of a large model."""
        if self.world == 1:
            return
        for p in parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        buckets, size = [[]], 0
        for p in parameters:
            if size >= BUCKET_ELEMENTS:
                buckets.append([])
                size = 0
            buckets[-1].append(p)
            size += p.numel()
        for bucket in buckets:
            flat = torch.cat([p.grad.reshape(-1) for p in bucket])
            torch.distributed.all_reduce(flat)
            for p, summed in zip(bucket, flat.split([p.numel() for p in bucket])):
                p.grad.copy_(summed.view_as(p.grad))

    def agree(self, parts: dict[str, bytes]) -> str:
        """A digest of `parts` (name -> the bytes of a state every rank must share); raises `RanksDiverged`
        naming the parts where ranks differ. Returns the digest of all parts."""
        digests = {name: hashlib.sha256(data).hexdigest()[:16] for name, data in parts.items()}
        if self.world > 1:
            every = self.gather([digests])
            split = [name for name in digests if len({d[name] for d in every}) > 1]
            if split:
                raise RanksDiverged(f"ranks disagree on {', '.join(split)} (digests by rank: "
                                    f"{[{n: d[n] for n in split} for d in every]}); the run stops")
        return hashlib.sha256("".join(digests.values()).encode()).hexdigest()[:16]

    def barrier(self) -> None:
        if self.world > 1:
            self.state.wait_for_everyone()

    def close(self) -> None:
        """Leave the launcher's process group (a gloo group still open at exit aborts the process). A single
        process has none of its own: the group there is the vLLM engine's, which vLLM keeps for its next engine
        in this process (destroying it breaks every later engine)."""
        if self.world > 1:
            self.state.destroy_process_group()
