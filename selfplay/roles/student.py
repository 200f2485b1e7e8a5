"""Student role: the answer a solution commits to and its format score."""

from __future__ import annotations

from dataclasses import dataclass

from selfplay.rewards import student_format
from selfplay.verify.answers import extract_final_answer


@dataclass
class StudentSolution:
    text: str
    answer: str | None
    format_score: float
    tokens: int


def read_solution(text: str, tokens: int) -> StudentSolution:
    answer = extract_final_answer(text)
    return StudentSolution(text, answer, student_format(text, answer is not None), tokens)
