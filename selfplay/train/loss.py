"""The clipped policy-gradient loss with optional k3 KL and a correction for the sampler's numerics, per token,
masked to completion tokens, with TRL's GRPO variants (pure torch).

Names and meanings follow TRL's `GRPOConfig` (trl/trainer/grpo_trainer.py `_compute_loss`): `loss_type` (how token
losses are averaged; here within each role, see `row_weights`), `epsilon_high` (clip-higher),
`importance_sampling_level` (token, or sequence as GSPO) and `vllm_importance_sampling_mode` (the sampler
correction per token or per sequence, truncated or masked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from trl.trainer.utils import selective_log_softmax

ROLES = ("teacher", "student")


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """fp32 log-probability of each target token under logits / T; logits [B, T, V] (any dtype), targets [B, T].
    One row at a time, so the fp32 upcast and the division by the temperature never copy the whole batch."""
    return torch.stack([selective_log_softmax(row.float() / temperature, row_targets)
                        for row, row_targets in zip(logits, targets)])


def row_weights(roles: Sequence[str], trained_tokens: Sequence[int], loss_type: str,
                max_tokens: dict[str, int]) -> list[float]:
    """The weight of each row's token losses in the optimizer step's loss, so that summing weight x token loss
    over every micro-batch (and rank) is exactly the full-batch loss. Each role's loss is averaged within the role
    as TRL's `loss_type` averages a batch, and the two roles weigh half each, whichever are present (the reference
    pooled all tokens, so the role with longer completions dominated; a missing role must not double the other):

      dapo     1 / (2 x the role's trained tokens): every token of the role counts alike;
      grpo     1 / (2 x the role's rows x the row's trained tokens): each row's token mean, then their mean;
      dr_grpo  1 / (2 x the role's rows x max_tokens[role]): token sums over a constant, no length bias.

    Rows count in grpo's and dr_grpo's row totals even with no trained token (a masked truncated completion), as
    TRL's mean over the batch counts them.
    """
    rows = {role: sum(r == role for r in roles) for role in ROLES}
    tokens = {role: sum(t for r, t in zip(roles, trained_tokens) if r == role) for role in ROLES}
    weights = []
    for role, own in zip(roles, trained_tokens):
        if loss_type == "dapo":
            weights.append(1.0 / (len(ROLES) * max(tokens[role], 1)))
        elif loss_type == "grpo":
            weights.append(1.0 / (len(ROLES) * rows[role] * max(own, 1)))
        elif loss_type == "dr_grpo":
            weights.append(1.0 / (len(ROLES) * rows[role] * max_tokens[role]))
        else:
            raise ValueError(f"unknown loss_type {loss_type!r}")
    return weights


@dataclass(frozen=True)
class LossSettings:
    clip_low: float  # the ratio is clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float
    importance_sampling_level: str = "token"  # or "sequence" (GSPO)
    sampler_correction: str = "token_truncate"  # token_mask, sequence_truncate, sequence_mask
    sampler_cap: float = 2.0
    kl_beta: float = 0.0


# Statistics summed over the tokens of a micro-batch, so that the step reports token means over the whole batch
# (a mean of micro-batch means changes with the micro-batch size).
TOKEN_SUMS = ("clipped_tokens", "kl_sum", "sampler_gap_sum", "sampler_corrected_tokens", "tokens")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    token_weights: torch.Tensor,
    settings: LossSettings,
    ref_logprobs: torch.Tensor | None = None,
    sampler_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over tokens of token_weights * per-token loss, where

        per-token loss = -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) * w + beta * KL_k3(pi || ref)
        rho = pi / pi_old per token, or per sequence exp(mean_t log(pi / pi_old))   (importance_sampling_level)
        w = pi_old / pi_sampler per token, or its product over the sequence, truncated at the cap or zeroed past
            it (sampler_correction); w = 1 without `sampler_logprobs`

    `w` corrects for the sampler not being exactly the trainer's policy (another engine's kernels or dtype, or a
    step-old copy of the weights). `token_weights` carries the normalisation (`row_weights`). Masked positions
    are set to zero before any exponential, so padding can never overflow into the loss. Shapes: [B, T] except
    advantages [B]. Returns the loss and TOKEN_SUMS over the masked tokens.
    """
    on = mask > 0
    log_ratio = torch.where(on, logprobs - old_logprobs, 0.0)
    if settings.importance_sampling_level == "sequence":
        log_ratio = (log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)).expand_as(log_ratio)
    ratio = torch.exp(log_ratio)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - settings.clip_low, 1.0 + settings.clip_high) * adv
    per_token = -torch.min(unclipped, clipped)
    gap = corrected = torch.zeros(())
    if sampler_logprobs is not None:
        sampler_log_ratio = torch.where(on, old_logprobs.detach() - sampler_logprobs, 0.0)
        if settings.sampler_correction.startswith("sequence"):
            sampler_log_ratio = sampler_log_ratio.sum(-1, keepdim=True).expand_as(sampler_log_ratio)
        behaviour = torch.exp(sampler_log_ratio)
        beyond = behaviour > settings.sampler_cap
        if settings.sampler_correction.endswith("truncate"):
            behaviour = behaviour.clamp(max=settings.sampler_cap)
        else:
            behaviour = behaviour.masked_fill(beyond, 0.0)
        per_token = per_token * behaviour
        with torch.no_grad():
            gap = ((old_logprobs - sampler_logprobs).abs() * on).sum()
            corrected = (beyond & on).sum()
    kl = torch.zeros_like(per_token)
    if ref_logprobs is not None and settings.kl_beta > 0:
        delta = torch.where(on, ref_logprobs - logprobs, 0.0)
        kl = torch.exp(delta) - delta - 1.0
        per_token = per_token + settings.kl_beta * kl
    loss = (per_token * token_weights * mask).sum()
    with torch.no_grad():
        sums = {
            # tokens where the min takes the clipped branch (their gradient is cut), not merely clip(rho) != rho
            "clipped_tokens": float(((clipped < unclipped) & on).sum()),
            "kl_sum": float((kl * mask).sum()),
            "sampler_gap_sum": float(gap),
            "sampler_corrected_tokens": float(corrected),
            "tokens": float(on.sum()),
        }
    return loss, sums
