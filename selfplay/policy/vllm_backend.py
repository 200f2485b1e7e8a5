"""Generation on a vLLM engine colocated in the training process, synced after every optimizer step.

The engine runs in this process (not vLLM's default engine subprocess), so a weight sync hands it the trained
tensors by reference instead of pickling them. A sync pushes only what training changes: with LoRA, the merged
weight W + dW of each adapted layer (measured here: serving the adapter itself instead costs about 40% of
generation throughput and 0.35 s per step); with full fine-tuning, every trainable parameter. The engine is
seeded once; per-request seeds crash vLLM's CPU sampler on large batches.
"""

from __future__ import annotations

import gc
import logging
import os

import torch

from selfplay.config import GenerationSettings
from selfplay.logs import show_loading_bars
from selfplay.distributed import gathered, whole
from selfplay.policy.generation import Sample, Sampling, WeightSyncError
from selfplay.policy.loading import engine_dtype

log = logging.getLogger(__name__)


def trained_weights(model) -> list[tuple[str, torch.Tensor]]:
    """The weights that may differ from the engine's, under the base model's parameter names, whole (gathered from
    every rank when FSDP or ZeRO-3 shards them: all ranks call this): for a LoRA model the merged weight of each
    adapted layer (the adapter itself stays unmerged), else every parameter: a full fine-tune trains them all, and a
    checkpoint loaded for evaluation (an adapter merged into its base, frozen) differs from the base in all."""
    if not hasattr(model, "peft_config"):
        return [(name, whole(p).detach()) for name, p in model.named_parameters()]
    from peft.tuners.lora import LoraLayer

    merged = []
    with torch.no_grad():
        for name, module in model.get_base_model().named_modules():
            if isinstance(module, LoraLayer):
                with gathered(list(module.parameters())):
                    delta = sum(module.get_delta_weight(adapter) for adapter in module.active_adapters)
                    merged.append((f"{name}.weight", whole(module.get_base_layer().weight + delta)))
    return merged


def _reload_weights(worker, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs inside the engine's worker: load `weights` (checkpoint names) in place; others stay as they are."""
    worker.model_runner.reload_weights(weights_iterator=iter(weights))


class VLLMBackend:
    # Sequences per generate call when a caller chunks work (evaluation's progress bar); vLLM schedules them
    # continuously, so a large chunk costs nothing.
    batch_size = 1024

    def __init__(self, model_path: str, settings: GenerationSettings, temperature: float, top_p: float, seed: int,
                 processes: int = 1):
        """`processes` > 1: one engine per process of a multi-process run, on that process's device, inside the
        process group the launcher made (vLLM's external launcher, as TRL's colocate mode runs it)."""
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine lives in this process (see above)
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        self.llm = LLM(
            distributed_executor_backend="external_launcher" if processes > 1 else None,
            model=model_path,
            dtype=engine_dtype(settings.vllm_dtype),
            seed=seed,
            enforce_eager=settings.vllm_enforce_eager,
            tensor_parallel_size=settings.vllm_tensor_parallel_size,
            max_model_len=settings.vllm_max_model_len or None,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            kv_cache_memory_bytes=None if on_gpu else int(settings.vllm_kv_cache_gib * 2**30),
            # the log-probability of each sampled token after temperature and top-p: the behaviour policy
            logprobs_mode="processed_logprobs",
            use_tqdm_on_load=show_loading_bars(),
        )
        self.sampling = Sampling(temperature, top_p)

    def generate(self, prompts: list[list[int]], n: int, max_new_tokens: int,
                 sampling: Sampling | None = None) -> list[list[Sample]]:
        from vllm import SamplingParams

        sampling = sampling or self.sampling
        params = SamplingParams(n=n, temperature=sampling.temperature,
                                top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                                max_tokens=max_new_tokens, logprobs=0)
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [
            [Sample(prompt_ids=list(prompt), completion_ids=list(c.token_ids), text=c.text,
                    logprobs=[step[token].logprob for step, token in zip(c.logprobs, c.token_ids)],
                    finished=c.finish_reason == "stop")
             for c in output.outputs]
            for prompt, output in zip(prompts, outputs)
        ]

    def sync(self, model) -> None:
        weights = trained_weights(model)
        try:
            self.llm.collective_rpc(_reload_weights, args=(weights,))
        except Exception as error:
            raise WeightSyncError(
                f"vLLM weight sync failed ({type(error).__name__}: {str(error)[:300]}); the run stops rather than "
                "sample from stale weights. Resume from the last checkpoint with --resume."
            ) from error
        self.llm.reset_prefix_cache()  # cached prefixes hold keys and values computed with the old weights

    def close(self) -> None:
        self.llm = None  # the engine, its weights and KV cache go with the last reference
        gc.collect()
