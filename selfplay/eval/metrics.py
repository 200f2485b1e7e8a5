"""Evaluation metrics (pure): mean@n, unbiased pass@k, maj@n, bootstrap intervals (per benchmark and macro), expansion rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selfplay.verify.judge import majority_class


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_correct(classes: Sequence[int | None], correct: Sequence[bool]) -> bool:
    """maj@n for one problem: is the most common answer (ties: first seen) a correct one?"""
    top = majority_class(classes)
    return top is not None and any(ok for k, ok in zip(classes, correct) if k == top)


def bootstrap_ci(values: Sequence[float], resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling problems."""
    return macro_bootstrap_ci([values], resamples, seed, level)


def macro_bootstrap_ci(groups: Sequence[Sequence[float]], resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of group means (a macro average over benchmarks), resampling
    problems within each group, so every benchmark keeps its size and weight."""
    groups = [np.asarray(values, dtype=float) for values in groups]
    if not groups or any(len(values) == 0 for values in groups):
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.mean([values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
                     for values in groups], axis=0)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def expansion_rate(base_solved_any: Sequence[bool], other_solved_any: Sequence[bool]) -> float | None:
    """Share of the problems the base never solves in n samples that the other model solves at least once."""
    unsolved = [o for b, o in zip(base_solved_any, other_solved_any) if not b]
    return sum(unsolved) / len(unsolved) if unsolved else None


def summarize(correct: Sequence[Sequence[bool]], majority: Sequence[bool], seed: int = 0) -> dict:
    """Benchmark figures from per-problem sample correctness (n samples each) and maj@n verdicts."""
    n = len(correct[0]) if correct else 0
    per_problem = [sum(c) / n for c in correct]
    summary = {"problems": len(correct), "n": n, f"mean@{n}": float(np.mean(per_problem)) if correct else None,
               f"mean@{n}_ci95": bootstrap_ci(per_problem, seed=seed), f"maj@{n}": float(np.mean(majority)) if correct else None}
    for k in range(1, n + 1):
        summary[f"pass@{k}"] = float(np.mean([pass_at_k(n, sum(c), k) for c in correct])) if correct else None
    return summary
