"""Student role: the answer a solution commits to and its format score."""

from __future__ import annotations

from dataclasses import dataclass

from selfplay.rewards import student_format
from selfplay.verify.answers import extract_final_answer


@dataclass(frozen=True)
class StudentAnswer:
    answer: str | None  # the final answer the solution commits to (None: it gives none)
    format_score: float


def read_answer(text: str) -> StudentAnswer:
    answer = extract_final_answer(text)
    return StudentAnswer(answer, student_format(text, answer is not None))
