"""Trained weights into a vLLM server over gloo: a backend for vLLM's own weight-transfer factory.

vLLM's RL serving API moves weights in four calls (/init_weight_transfer_engine, /start_weight_update,
/update_weights, /finish_weight_update) and leaves the bytes to a registered backend. On GPUs that backend is
vLLM's NCCL engine. NCCL needs GPUs, so this module adds `selfplay_gloo`, the same protocol over a gloo process
group of the trainer (rank 0) and the server's workers: it runs on CPUs (this machine, CI) and between hosts
without a GPU fabric. The server loads it through vLLM's plugin entry point (`vllm.general_plugins` in
pyproject.toml, run in every vLLM process); the trainer registers it on import.

Per update the trainer sends one metadata record (names, dtypes, shapes) through /update_weights and, at the same
time, one flat buffer per dtype over gloo; the server's worker splits it and loads the weights in place with
vLLM's `reload_weights` (the path the colocated engine uses), so a subset (LoRA's merged layers) is enough.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import ClassVar

import torch
from vllm.distributed.weight_transfer.base import (
    ParamMeta, TrainerInitInfo, TrainerWeightTransferEngine, WeightSource, WeightTransferEngine,
    WeightTransferInitInfo, WeightTransferUpdateInfo,
)
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory

BACKEND = "selfplay_gloo"
RENDEZVOUS_SECONDS = 300


@dataclass
class GlooInitInfo(WeightTransferInitInfo):
    """What the server's workers need to join the trainer's group (sent through /init_weight_transfer_engine)."""

    master_address: str
    master_port: int
    world_size: int  # the trainer plus every worker of the server
    rank_offset: int = 1  # the workers' ranks follow the trainer's 0


@dataclass
class GlooTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = BACKEND
    master_address: str
    master_port: int
    world_size: int


@dataclass
class GlooUpdateInfo(WeightTransferUpdateInfo):
    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]


def _group(address: str, port: int, rank: int, world: int) -> torch.distributed.ProcessGroupGloo:
    """A gloo group of its own (not torch's default group, which a multi-process run already uses)."""
    timeout = timedelta(seconds=RENDEZVOUS_SECONDS)
    store = torch.distributed.TCPStore(address, port, world, rank == 0, timeout=timeout)
    return torch.distributed.ProcessGroupGloo(store, rank, world, timeout)


def _broadcast(group, tensor: torch.Tensor) -> None:
    options = torch.distributed.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([tensor], options).wait()


def _by_dtype(dtypes: list[torch.dtype]) -> dict[torch.dtype, list[int]]:
    """Indices of the parameters of each dtype, in order: one flat buffer per dtype crosses the wire."""
    groups: dict[torch.dtype, list[int]] = {}
    for i, dtype in enumerate(dtypes):
        groups.setdefault(dtype, []).append(i)
    return groups


class GlooWeightTransferEngine(WeightTransferEngine[GlooInitInfo, GlooUpdateInfo]):
    """The server side, in each vLLM worker."""

    init_info_cls = GlooInitInfo
    update_info_cls = GlooUpdateInfo

    def __init__(self, config, vllm_config, device, model) -> None:
        super().__init__(config, vllm_config, device, model)
        self.vllm_config = vllm_config
        self.group = None
        self.received: list[tuple[str, torch.Tensor]] = []

    def init_transfer_engine(self, init_info: GlooInitInfo) -> None:
        rank = init_info.rank_offset + self.parallel_config.rank
        self.group = _group(init_info.master_address, init_info.master_port, rank, init_info.world_size)

    def start_weight_update(self) -> None:
        self.received = []

    def receive_weights(self, update_info: GlooUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError(f"{BACKEND}: weights sent before /init_weight_transfer_engine")
        dtypes = [getattr(torch, name) for name in update_info.dtype_names]
        for dtype, indices in _by_dtype(dtypes).items():
            sizes = [int(torch.Size(update_info.shapes[i]).numel()) for i in indices]
            flat = torch.empty(sum(sizes), dtype=dtype)
            _broadcast(self.group, flat)
            for i, part in zip(indices, flat.split(sizes)):
                self.received.append((update_info.names[i], part.view(update_info.shapes[i])))

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload.inplace import reload_weights

        reload_weights(self.vllm_config, self.model, iter(self.received), None, is_checkpoint_format=True)
        self.received = []

    def shutdown(self) -> None:
        self.group = None


class TrainedWeights(WeightSource):
    """The weights a push sends, read afresh at every push (`produce()`, e.g. `trained_weights(model)`): their
    values change every step. An engine that asks for `metadata()` first (vLLM's NCCL) iterates what was read for
    it, so the weights are read once per push."""

    def __init__(self, produce) -> None:
        self.produce = produce
        self._read: list[tuple[str, torch.Tensor]] | None = None

    def metadata(self) -> list[ParamMeta]:
        self._read = self.produce()
        return [ParamMeta(name, t.dtype, tuple(t.shape)) for name, t in self._read]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        pairs, self._read = (self._read if self._read is not None else self.produce()), None
        return iter(pairs)


class GlooTrainerWeightTransferEngine(TrainerWeightTransferEngine[GlooTrainerInitInfo]):
    """The trainer side: rank 0 sends, the server's workers receive."""

    init_info_cls = GlooTrainerInitInfo

    @classmethod
    def trainer_init(cls, init_info: GlooTrainerInitInfo, *, client, source: WeightSource | None = None):
        engine = cls(client=client, source=source, is_sender=init_info.is_sender)
        engine.group = None
        if not engine.is_sender:
            return engine
        worker_info = GlooInitInfo(init_info.master_address, init_info.master_port, init_info.world_size)
        # The workers block in /init_weight_transfer_engine until every rank has joined: call it beside our join.
        failure: list[BaseException] = []

        def init_workers() -> None:
            try:
                client.init_weight_transfer_engine(asdict(worker_info))
            except BaseException as error:  # surfaced below, after our own join returns or times out
                failure.append(error)

        thread = threading.Thread(target=init_workers, daemon=True)
        thread.start()
        engine.group = _group(init_info.master_address, init_info.master_port, 0, init_info.world_size)
        thread.join(RENDEZVOUS_SECONDS)
        if failure:
            raise failure[0]
        return engine

    def send_weights(self, weight_version: str | None = None) -> None:
        """start -> update (its metadata, while the buffers cross over gloo) -> finish, with the new version."""
        pairs = list(self.source)
        if not self.is_sender:
            return
        info = GlooUpdateInfo([name for name, _ in pairs], [str(t.dtype).split(".")[-1] for _, t in pairs],
                              [list(t.shape) for _, t in pairs])
        self.client.start_weight_update()
        failure: list[BaseException] = []

        def update() -> None:
            try:
                self.client.update_weights(asdict(info))
            except BaseException as error:
                failure.append(error)

        thread = threading.Thread(target=update, daemon=True)
        thread.start()
        for dtype, indices in _by_dtype([t.dtype for _, t in pairs]).items():
            _broadcast(self.group, torch.cat([pairs[i][1].detach().reshape(-1).to("cpu", dtype) for i in indices]))
        thread.join(RENDEZVOUS_SECONDS)
        if failure:
            raise failure[0]
        self.client.finish_weight_update(weight_version)

    def shutdown(self) -> None:
        self.group = None


def register() -> None:
    """vLLM's plugin hook (and the trainer's): make `selfplay_gloo` a weight-transfer backend. Idempotent."""
    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, GlooWeightTransferEngine)
    if BACKEND not in WeightTransferTrainerFactory._registry:
        WeightTransferTrainerFactory.register_engine(BACKEND, GlooTrainerWeightTransferEngine)
