"""Pure reward functions: numbers (and a problem's text) in, numbers out. No models, no files.

Teacher: solvability band + novelty + format (+ optional student-length term, paid with the band). The band pays
only a problem that repeats no archived problem (and optionally only one whose answer is derived from it).
Student: verified correctness + format.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

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


def length_term(student_token_counts: Sequence[int], cap: int) -> float:
    """Mean student solution length, capped and scaled to [0, 1]. Paid only where the band pays (`band_pays`), as
    the reference pays it: a long solution to a problem no one solves, or everyone does, is worth nothing."""
    if not student_token_counts:
        return 0.0
    return min(sum(student_token_counts) / len(student_token_counts), cap) / cap


def band_pays(solve_rate: float | None, low: float, high: float, repeat: bool, trusted: bool) -> bool:
    """Does a problem earn the band's terms (solvability, length)? Its solve rate is in the band; it is no
    near-duplicate of an archived problem (else the band pays the teacher to repeat what it already wrote, and a
    repeat earns no novelty either); and its reference is trusted (`trusted`: derived from the problem where the
    run requires that, and agreed on by enough students, `confident`)."""
    return in_band(solve_rate, low, high) and not repeat and trusted


def confident(solve_rate: float | None, min_share: float) -> bool:
    """The confidence gate: is the reference given by at least `min_share` of a problem's solutions (its majority
    share in majority mode, the share agreeing with the teacher's claim otherwise)? A reference few students
    reach is as likely an accident as an answer: it pays neither the students nor the band (CuMa, TTRL)."""
    return solve_rate is not None and solve_rate >= min_share


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


# ---------------------------------------------------------------- is the answer computed from the problem?
_WORD_VALUES = {word: value for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())} | {word: 10 * k for k, word in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)} | {"dozen": 12}
_WORD_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6}
_WORDS = "|".join(sorted([*_WORD_VALUES, *_WORD_SCALES], key=len, reverse=True))
# A number as a problem writes it: words ("twenty-five", "a dozen"); digits with thousands grouped by commas or
# single spaces ("1,200", "2 000"); a decimal, or scientific notation ("1e3"). A minus sign counts only where it
# cannot be an operator: "5 - 10" states 5 and 10, "-5 degrees" states -5.
_STATED = re.compile(
    rf"(?P<words>\b(?:{_WORDS})(?:(?:[\s-]+|\s+and\s+)(?:{_WORDS}))*\b)"
    r"|(?P<sign>-)?(?P<digits>(?<![\d.])(?:\d{1,3}(?:(?:,\d{3})+|(?: \d{3})+)(?!\d)|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?"
    r"|(?<![\d.])\.\d+)",
    re.IGNORECASE)
# An operation no one defined between two numbers ("What is 3 @ 5?"): its answer cannot be computed from it.
_UNDEFINED_OPERATOR = re.compile(r"\d\s*[@#&|~§¤]\s*\d")
# Factors a unit change multiplies by (m to cm, hours to minutes, days to hours): an answer that is a stated
# number changed by one of them restates that number.
UNIT_FACTORS = (*(Fraction(10) ** k for k in range(1, 7)), Fraction(60), Fraction(3600), Fraction(24))


def _words_value(words: str) -> Fraction:
    """"twenty-five" 25, "one hundred and five" 105, "two thousand" 2000, "a dozen" 12."""
    total = current = 0
    for word in re.findall(_WORDS, words.lower()):
        if word in _WORD_SCALES:
            current = max(current, 1) * _WORD_SCALES[word]
            if _WORD_SCALES[word] >= 1000:
                total, current = total + current, 0
        else:
            current += _WORD_VALUES[word]
    return Fraction(total + current)


def numbers_stated(text: str) -> list[Fraction]:
    """The numbers a problem states, in order: words and digits, "1,200" and "2 000" as 1200 and 2000, "1e3" as
    1000, a leading minus only where it is a sign. A fraction "3/4" states 3 and 4: dividing is an operation."""
    numbers = []
    for match in _STATED.finditer(text):
        if match["words"]:
            numbers.append(_words_value(match["words"]))
            continue
        value = Fraction(re.sub(r"[, ]", "", match["digits"]).lower())
        before = text[: match.start()].rstrip()
        is_sign = match["sign"] and (not before or before[-1] not in "0123456789)}]")
        numbers.append(-value if is_sign else value)
    return numbers


_FRACTION = re.compile(r"(-?)\\d?frac\{(-?\d+)\}\{(-?\d+)\}")


def answer_value(answer: str) -> Fraction | None:
    """The number an answer states, read as math-verify reads one ("1/2" = "0.5" = "\\frac{1}{2}", "1,000" =
    "1000", "-5", "25\\%" = 25, "12 apples" = 12, "twelve" = 12; after an "=", its right side), or None when it is
    no single number (an expression, a word, nothing)."""
    text = answer.strip()
    while (inner := re.fullmatch(r"\\(?:boxed|text|mathrm|textbf)\{(.*)\}", text, re.DOTALL)) is not None:
        text = inner[1].strip()
    text = text.rsplit("=", 1)[-1].strip().strip("$").replace("\\%", "").replace("%", "").replace("\\$", "")
    text = re.sub(r"\\[,!; ]", "", text).strip()
    if (fraction := _FRACTION.fullmatch(text)) is not None:
        value = Fraction(int(fraction[2]), int(fraction[3])) if int(fraction[3]) else None
        return -value if value is not None and fraction[1] else value
    if (ratio := re.fullmatch(r"(-?\d+)\s*/\s*(-?\d+)", text)) is not None:
        return Fraction(int(ratio[1]), int(ratio[2])) if int(ratio[2]) else None
    if re.fullmatch(rf"(?:{_WORDS})(?:[\s-]+(?:and\s+)?(?:{_WORDS}))*", text, re.IGNORECASE):
        return _words_value(text)
    # a number, then at most a unit in words ("12 apples", "4.0m", "5pencils")
    number = re.fullmatch(r"(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?|-?\.\d+)(?:\s*[a-zA-Z]+\.?)?",
                          text)
    return Fraction(number[1].replace(",", "").lower()) if number else None


def answer_derived(problem: str, answer: str | None) -> bool:
    """Is the answer computed from the problem? The problem states two or more distinct numbers, defines every
    operation it writes between numbers, and the answer is none of its numbers, nor one of them in another unit
    (times a power of ten, 60, 3600 or 24 that the problem does not state). An answer that is no single number
    (an expression, "x + 3") is derived when it has a digit and the problem does not contain it. Numbers are read
    as values on both sides ("twelve", "1,200", "2 000", "1e3", "-5", "1/2"), so neither a restated answer nor a
    legitimate negative or fractional result is misread. It rejects what a small teacher writes most once its
    problems are in the band: problems that state their own answer ("The wall is 20 meters long. How many meters
    is the wall?", answer 20), or give one number to compute from. The rule is for arithmetic word problems."""
    if not answer or _UNDEFINED_OPERATOR.search(problem):
        return False
    stated = set(numbers_stated(problem))
    if len(stated) < 2:
        return False
    value = answer_value(answer)
    if value is None:
        compact = re.sub(r"\s+", "", answer).lower()
        return bool(re.search(r"\d", answer)) and compact not in re.sub(r"\s+", "", problem).lower()
    restated = {number * factor for number in stated for factor in UNIT_FACTORS if factor not in stated}
    restated |= {number / factor for number in stated for factor in UNIT_FACTORS if factor not in stated}
    return value not in stated and value not in restated
