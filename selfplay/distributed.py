"""This process's place in a data-parallel run, and the few collectives a step needs.

Launch N processes the way accelerate's users launch everything (`accelerate launch --multi_gpu --num_processes N
-m selfplay run ...`, or `selfplay run --num-processes N`); on a machine without CUDA the processes talk over
gloo. One process needs no launcher and is world 1: every collective below is then the identity.

The design is the reference's data parallelism: work that samples or runs untrusted code (generation,
verification, programs, embedding) is split by item across ranks and gathered back in rank order, so every rank
holds the same step product and applies the same pure rules to it (the pool, the FAISS indexes and the rewards
agree without being sent around). Each rank then trains on its share of the rows and the gradients are summed
once per optimizer step, so the weights stay identical too. `agree` checks that they do.

With FSDP2 (an accelerate config with `distributed_type: FSDP` and `fsdp_version: 2`, e.g.
experiments/accelerate/fsdp2.yaml) each rank holds a shard of the weights, gradients and optimizer state
instead of all of them (torch's `fully_shard` per decoder layer, then the whole model), and FSDP reduces the
gradients. Everything else is as above; whoever needs whole weights (the vLLM push, checkpoints) gathers them.

With DeepSpeed ZeRO-3 (`distributed_type: DEEPSPEED`, `zero_stage: 3`, e.g. experiments/accelerate/deepspeed.yaml)
the same three states are partitioned by DeepSpeed's engine, which the updater builds around the policy and its
optimizer (`train/zero3.py`); its parameters are then placeholders outside a forward pass, and `whole`, `local`
and `gathered` below reach their data.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch

from selfplay.errors import SelfPlayError

BUCKET_ELEMENTS = 2**25  # gradients summed per collective: 128 MiB in fp32
FSDP_VERSION = "2"  # FSDP1 (FlatParameter wrapping) is not supported
ZERO_STAGE = 3  # DeepSpeed's stages 1 and 2 keep whole weights on every rank: ddp.yaml does that with less


def _flag(variable: str, default: str = "false") -> bool:
    return os.environ.get(variable, default).lower() == "true"


def is_zero3(tensor: torch.Tensor) -> bool:
    """A parameter DeepSpeed ZeRO-3 partitions (its data is a placeholder outside a forward pass)."""
    return hasattr(tensor, "ds_tensor")


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a sharded (FSDP or ZeRO-3) tensor, padding left out; a whole tensor as it is."""
    from torch.distributed.tensor import DTensor

    if is_zero3(tensor):  # equal partitions, the last padded: this rank's real elements are a prefix of its own
        size = tensor.ds_tensor.numel()
        return tensor.ds_tensor.narrow(0, 0, max(0, min(size, tensor.ds_numel - size * torch.distributed.get_rank())))
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def gathered(parameters):
    """A context in which ZeRO-3 parameters hold their whole data (all ranks must enter it, in the same order);
    nothing to do for any other."""
    partitioned = [p for p in parameters if is_zero3(p)]
    if not partitioned:
        return nullcontext()
    from deepspeed.runtime.zero import GatheredParameters

    return GatheredParameters(partitioned)


@torch.no_grad()
def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a sharded (FSDP or ZeRO-3) tensor, gathered from every rank (all ranks must call it, in the
    same order); a whole tensor as it is."""
    from torch.distributed.tensor import DTensor

    if is_zero3(tensor):
        with gathered([tensor]):
            return tensor.detach().clone()  # the gathered data is released when the context ends
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def deepspeed_settings() -> dict:
    """The DeepSpeed config accelerate's launcher passes (its `deepspeed_config` section, or the DeepSpeed JSON
    that names), parsed by accelerate's own plugin; what selfplay sets itself (batch sizes, accumulation,
    clipping, precision) is filled in by `train/zero3.py`."""
    if importlib.util.find_spec("deepspeed") is None:
        raise SelfPlayError("the accelerate config asks for DeepSpeed, which is not installed: "
                            "pip install -e '.[deepspeed]'")
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin()
    if plugin.zero_stage != ZERO_STAGE:
        raise SelfPlayError(f"DeepSpeed ZeRO stage {plugin.zero_stage} (set by the accelerate config) is not "
                            f"supported: use zero_stage: {ZERO_STAGE} (experiments/accelerate/deepspeed.yaml), or "
                            "experiments/accelerate/ddp.yaml to keep whole weights on every rank")
    if plugin.zero3_init_flag:
        # transformers would then build the model partitioned, and every rank loads it whole instead
        raise SelfPlayError("zero3_init_flag (set by the accelerate config) is not supported: set it to false, as "
                            "experiments/accelerate/deepspeed.yaml does (every rank loads the model, then ZeRO-3 "
                            "partitions it)")
    settings = plugin.deepspeed_config
    owned = [key for key in ("optimizer", "scheduler", "fp16", "bf16", "torch_autocast") if key in settings]
    if owned:
        source = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "the accelerate config")
        raise SelfPlayError(f"{source} sets {', '.join(owned)}: selfplay sets these itself (AdamW at learning_rate "
                            "with lr_schedule; precision with its dtype key: fp32 master weights, compute in dtype); "
                            "remove them")
    return settings


class RanksDiverged(SelfPlayError):
    """Ranks that must hold the same state do not: continuing would train on a silently split run."""


class Ranks:
    def __init__(self) -> None:
        # DeepSpeed's settings as accelerate's launcher passed them (its config file, or a DeepSpeed JSON it names)
        self.deepspeed = deepspeed_settings() if _flag("ACCELERATE_USE_DEEPSPEED") else None
        fsdp = _flag("ACCELERATE_USE_FSDP")
        if fsdp and os.environ.get("FSDP_VERSION", "1") != FSDP_VERSION:
            raise SelfPlayError("FSDP1 (set by the accelerate config) is not supported: set fsdp_version: 2 in its "
                                "fsdp_config, as experiments/accelerate/fsdp2.yaml does")
        if fsdp and _flag("FSDP_CPU_RAM_EFFICIENT_LOADING"):
            # transformers then loads zeros on every rank but the first, for a broadcast selfplay does not make
            raise SelfPlayError("fsdp_cpu_ram_efficient_loading (set by the accelerate config) is not supported: set "
                                "it to false, as experiments/accelerate/fsdp2.yaml does (every rank loads the model)")
        from accelerate import PartialState

        # gloo between CPU processes when there is no CUDA (accelerate picks nccl only with cpu=False and CUDA).
        self.state = PartialState(cpu=not torch.cuda.is_available())
        self.rank, self.world = self.state.process_index, self.state.num_processes
        self.is_main = self.state.is_main_process
        self.fsdp = fsdp and self.world > 1
        # ZeRO-3 partitions even in one process (where its optimizer offload can still be what fits a GPU)
        self.sharded = self.fsdp or self.deepspeed is not None

    def shard(self, model):
        """FSDP2: each decoder layer (transformers' `_no_split_modules`) its own unit, then the whole model. Every
        rank passes the same whole model and keeps its shard. FSDP averages gradients over ranks, so the loss is
        scaled by `loss_scale` to keep the sum the rest of the step is built on. (ZeRO-3 partitions the model
        when the updater builds its engine.)"""
        if not self.fsdp:
            return model
        from torch.distributed.fsdp import fully_shard

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        layer_classes = set(getattr(base, "_no_split_modules", None) or ())
        reshard = _flag("FSDP_RESHARD_AFTER_FORWARD", default="true")
        for module in model.modules():
            if type(module).__name__ in layer_classes:
                fully_shard(module, reshard_after_forward=reshard)
        fully_shard(model, reshard_after_forward=reshard)
        return model

    @property
    def loss_scale(self) -> int:
        """Each rank's loss is its part of the full-batch loss, and the gradients must be summed: FSDP's and
        ZeRO-3's reductions average them (FSDP's sum with a divide factor needs PREMUL_SUM, which gloo lacks)."""
        return self.world if self.sharded else 1

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
        BUCKET_ELEMENTS at a time: few collectives, and no second copy of all the gradients of a large model.
        Sharded, FSDP or ZeRO-3 has reduced them already in the backward pass."""
        if self.world == 1 or self.sharded:
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

    def parameter_sums(self, parameters: list[torch.Tensor]) -> torch.Tensor:
        """The sum of each parameter's values (float64) over the whole parameter, shards included: a cheap
        fingerprint of the weights that is the same on every rank when the weights are."""
        sums = torch.stack([local(p).detach().double().sum() for p in parameters]).cpu()
        if self.sharded and self.world > 1:
            torch.distributed.all_reduce(sums)
        return sums

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
        in this process (destroying it breaks every later engine).

        A sharded model's device mesh holds the group too, and modules with their hooks form reference cycles: left
        to the garbage collector, the group's last reference dies during interpreter exit, where gloo's threads
        abort the process ("terminate called without an active exception"). Collecting first frees it here."""
        if self.world > 1:
            gc.collect()
            self.state.destroy_process_group()
