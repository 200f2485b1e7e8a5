"""Pure reward functions: numbers (and a problem's text) in, numbers out. No models, no files.

Teacher: solvability band (optionally only for a problem whose answer is derived from it) + novelty + format
(+ optional student-length term).
Student: verified correctness + format.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

_FINAL_LINE = re.compile(r"final answer is:?\s*\$?\\boxed\{", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")  # unsigned: "5 - 3" states 5 and 3, not 5 and -3
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


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


@dataclass(frozen=True)
class TeacherTerms:
    """The teacher's reward, term by term (logged per term, so a user chasing reward hacking sees which moved).

    Only `format` exists for an invalid problem: it was never solved or embedded, so its other terms are None
    and it earns only its (partial) format credit."""

    format: float
    solvability: float | None = None
    novelty: float | None = None
    length: float | None = None

    def total(self, weights: TeacherWeights) -> float:
        if self.solvability is None:
            return weights.format * self.format
        return (
            weights.solvability * self.solvability
            + weights.novelty * self.novelty
            + weights.format * self.format
            + weights.length * self.length
        )


@dataclass(frozen=True)
class StudentWeights:
    correct: float
    format: float


@dataclass(frozen=True)
class StudentTerms:
    correct: float  # 1.0 when the answer matches the reference, else 0.0
    format: float

    def total(self, weights: StudentWeights) -> float:
        return weights.correct * self.correct + weights.format * self.format


def in_band(solve_rate_value: float | None, low: float, high: float) -> bool:
    return solve_rate_value is not None and low <= solve_rate_value <= high and not math.isnan(solve_rate_value)


def numbers_in(text: str) -> list[float]:
    """The numbers written in `text`, in order, without sign ("1,200" is 1200)."""
    return [float(number) for number in _NUMBER.findall(_THOUSANDS.sub("", text))]


def answer_derived(problem: str, answer: str | None) -> bool:
    """Is the answer computed from the problem? The problem states two or more distinct numbers and the
    answer's value (its last number) is none of them. It rejects what a small teacher writes most once its
    problems are in the band: problems that state their own answer ("The wall is 20 meters long. How many meters
    is the wall?", answer 20), or give one number to compute from. An answer without a number is not derived:
    the rule is for arithmetic word problems."""
    values = numbers_in(answer or "")
    stated = set(numbers_in(problem))
    return bool(values) and len(stated) >= 2 and values[-1] not in stated
