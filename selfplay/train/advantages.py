"""Role-specific, group-normalised advantages (pure).

A group is the set of samples that share a baseline: for the teacher, the completions of one teacher prompt;
for the student, the solutions to one problem. Each role's rewards are normalised only within its own
groups, so a role whose rewards live on another scale cannot drown the other's signal.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroupStats:
    key: Hashable
    indices: tuple[int, ...]
    mean: float
    std: float  # unbiased (ddof=1), as the reference

    @property
    def has_signal(self) -> bool:
        return len(self.indices) > 1 and self.std > 0.0


def group_stats(rewards: Sequence[float], group_keys: Sequence[Hashable]) -> list[GroupStats]:
    """Per-group mean and unbiased std, groups in order of first appearance."""
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(group_keys):
        members.setdefault(key, []).append(i)
    stats = []
    for key, indices in members.items():
        values = np.asarray([rewards[i] for i in indices], dtype=np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        # Rewards equal up to float noise carry no signal: treat them as exactly equal.
        if std < 1e-9:
            std = 0.0
        stats.append(GroupStats(key, tuple(indices), float(values.mean()), std))
    return stats


def group_advantages(
    rewards: Sequence[float], group_keys: Sequence[Hashable], normalize: bool = True, eps: float = 1e-4
) -> tuple[list[float], list[bool]]:
    """A_i = (r_i - mean_g) / (std_g + eps) within each group g (centred only if not `normalize`).

    Returns (advantages, keep): `keep[i]` is False for samples of groups with zero variance (or of size 1),
    which carry no policy-gradient signal and are dropped before the forward pass.
    """
    advantages = [0.0] * len(rewards)
    keep = [False] * len(rewards)
    for group in group_stats(rewards, group_keys):
        for i in group.indices:
            centred = rewards[i] - group.mean
            advantages[i] = centred / (group.std + eps) if normalize else centred
            keep[i] = group.has_signal
    return advantages, keep


def top_groups(groups: Sequence[GroupStats], scores: dict[Hashable, float], count: int) -> set[Hashable]:
    """Keys of the `count` groups with signal and the highest score (the reference's selection rule)."""
    ranked = sorted((g for g in groups if g.has_signal), key=lambda g: scores.get(g.key, float("-inf")), reverse=True)
    return {g.key for g in ranked[:count]}
