"""Pure reward functions: numbers in, numbers out. No models, no files.

Teacher: solvability band + novelty + format (+ optional student-length term).
Student: verified correctness + format.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

_FINAL_LINE = re.compile(r"final answer is:?\s*\$?\\boxed\{", re.IGNORECASE)


def solvability(solve_rate: float | None, n: int, low: float, high: float) -> float:
    """The reference's triangular band gate (OpenSIR `solvability`).

    Peaks at the band's midpoint and falls linearly to an edge value e = 1/|V| at the band's edges, where V
    is the set of solve rates j/n reachable with n samples that lie inside the band; 0 outside the band.
    Example (n=8, band .5-.9): .5 -> .25, .625 -> .719, .75 -> .8125, .875 -> .344, 1.0 -> 0.
    """
    if solve_rate is None or not (low <= solve_rate <= high):
        return 0.0
    in_band = [j / n for j in range(n + 1) if low <= j / n <= high]
    edge = 1.0 / len(in_band) if in_band else 1.0
    middle, half_width = (low + high) / 2, (high - low) / 2
    if half_width == 0:
        return 1.0
    return 1.0 - (1.0 - edge) * abs(solve_rate - middle) / half_width


def novelty(similarities: Sequence[float], top_k: int) -> float:
    """(1 - mean of the top-k cosine similarities) / 2, in [0, 1]; nothing to compare against is fully novel."""
    if not similarities:
        return 1.0
    top = sorted(similarities, reverse=True)[:top_k]
    return (1.0 - sum(top) / len(top)) / 2.0


def length_term(student_token_counts: Sequence[int], cap: int, any_answer: bool) -> float:
    """Mean student solution length, capped and scaled to [0, 1]; 0 when no solution gave an answer."""
    if not any_answer or not student_token_counts:
        return 0.0
    return min(sum(student_token_counts) / len(student_token_counts), cap) / cap


def teacher_format(has_problem: bool, has_answer: bool, has_concepts: bool) -> float:
    """Fraction of the tagged fields present. Partial credit gives a small model a gradient towards the format."""
    return (has_problem + has_answer + has_concepts) / 3.0


def student_format(completion: str, has_answer: bool) -> float:
    """1 for the full 'final answer is: $\\boxed{...}$' line, 0.5 for a bare extractable \\boxed{}, else 0."""
    if not has_answer:
        return 0.0
    return 1.0 if _FINAL_LINE.search(completion) else 0.5


@dataclass(frozen=True)
class TeacherWeights:
    solvability: float
    novelty: float
    format: float
    length: float


def teacher_reward(
    valid: bool, solvability_score: float, novelty_score: float, format_score: float, length_score: float,
    weights: TeacherWeights,
) -> float:
    """An invalid problem earns only its (partial) format credit."""
    if not valid:
        return weights.format * format_score
    return (
        weights.solvability * solvability_score
        + weights.novelty * novelty_score
        + weights.format * format_score
        + weights.length * length_score
    )


def student_reward(correct: bool, format_score: float, w_correct: float, w_format: float) -> float:
    return w_correct * float(correct) + w_format * format_score


def solve_rate(correct: Sequence[bool]) -> float | None:
    """Share of all n solutions that are correct. Unparseable answers count as wrong (the reference dropped them
    from the denominator, so 1 valid answer out of 8 looked like a solve rate of 1)."""
    return sum(correct) / len(correct) if correct else None


def majority_class(classes: Sequence[int | None]) -> int | None:
    """The largest answer class; ties go to the class that appeared first. None if no answer was given."""
    counts: dict[int, int] = {}
    for c in classes:
        if c is not None:
            counts[c] = counts.get(c, 0) + 1
    if not counts:
        return None
    return max(counts, key=lambda c: (counts[c], -c))


def in_band(solve_rate_value: float | None, low: float, high: float) -> bool:
    return solve_rate_value is not None and low <= solve_rate_value <= high and not math.isnan(solve_rate_value)
