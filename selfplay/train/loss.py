"""The clipped policy-gradient loss with optional k3 KL and truncated importance sampling, per token, masked to
completion tokens (pure torch)."""

from __future__ import annotations

import torch
from trl.trainer.utils import selective_log_softmax


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """fp32 log-probability of each target token under logits / T; logits [B, T, V] (any dtype), targets [B, T].
    One row at a time, so the fp32 upcast and the division by the temperature never copy the whole batch."""
    return torch.stack([selective_log_softmax(row.float() / temperature, row_targets)
                        for row, row_targets in zip(logits, targets)])


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    token_weights: torch.Tensor,
    clip_epsilon: float,
    ref_logprobs: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    sampler_logprobs: torch.Tensor | None = None,
    is_cap: float = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over tokens of token_weights * per-token loss, where

        per-token loss = -min(rho * A, clip(rho, 1 - eps, 1 + eps) * A) * w + beta * KL_k3(pi || ref)
        rho = pi / pi_old,   w = min(pi_old / pi_sampler, cap)   (truncated importance sampling)

    `w` corrects for the sampler not being exactly the trainer's policy (another engine's kernels or dtype):
    `sampler_logprobs` are the log-probs the generation backend recorded; without them w = 1.
    `token_weights` carries the normalisation (e.g. 1 / tokens of the row's role in the whole batch), so
    micro-batches accumulate to exactly the full-batch loss. Shapes: [B, T] except advantages [B].
    """
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon) * adv
    per_token = -torch.min(unclipped, clipped)
    tokens = mask.sum().clamp(min=1)
    gap = truncated = 0.0
    if sampler_logprobs is not None:
        behaviour = torch.exp(old_logprobs.detach() - sampler_logprobs)
        per_token = per_token * behaviour.clamp(max=is_cap)
        with torch.no_grad():
            gap = float(((old_logprobs - sampler_logprobs).abs() * mask).sum() / tokens)
            truncated = float(((behaviour > is_cap).float() * mask).sum() / tokens)
    kl = torch.zeros_like(per_token)
    if ref_logprobs is not None and kl_beta > 0:
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1.0
        per_token = per_token + kl_beta * kl
    weights = token_weights * mask
    loss = (per_token * weights).sum()
    with torch.no_grad():
        stats = {
            # tokens where the min takes the clipped branch (their gradient is cut), not merely clip(rho) != rho
            "clip_fraction": float(((clipped < unclipped).float() * mask).sum() / tokens),
            "kl": float((kl * mask).sum() / tokens),
            "sampler_trainer_logprob_gap": gap,
            "is_truncated_fraction": truncated,
        }
    return loss, stats
