"""The clipped policy-gradient loss with optional k3 KL, per token, masked to completion tokens (pure torch)."""

from __future__ import annotations

import torch
from trl.trainer.utils import selective_log_softmax


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probability of each next token under the sampling distribution (logits / T); shape [B, L-1]."""
    return selective_log_softmax(logits[:, :-1, :] / temperature, input_ids[:, 1:])


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    token_weights: torch.Tensor,
    clip_epsilon: float,
    ref_logprobs: torch.Tensor | None = None,
    kl_beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over tokens of token_weights * per-token loss, where

        per-token loss = -min(rho * A, clip(rho, 1 - eps, 1 + eps) * A) + beta * KL_k3(pi || ref)

    `token_weights` carries the normalisation (e.g. 1 / tokens of the row's role in the whole batch), so
    micro-batches accumulate to exactly the full-batch loss. Shapes: [B, T] except advantages [B].
    """
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon) * adv
    per_token = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if ref_logprobs is not None and kl_beta > 0:
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1.0
        per_token = per_token + kl_beta * kl
    weights = token_weights * mask
    loss = (per_token * weights).sum()
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1)
        stats = {
            "clip_fraction": float(((unclipped != clipped).float() * mask).sum() / tokens),
            "kl": float((kl * mask).sum() / tokens),
        }
    return loss, stats
