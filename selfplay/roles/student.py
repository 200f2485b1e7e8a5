"""Student role: the answer a solution commits to, its format score, and whether its written arithmetic holds."""

from __future__ import annotations

from dataclasses import dataclass

from selfplay.rewards import student_format
from selfplay.verify.answers import extract_final_answer
from selfplay.verify.arithmetic import arithmetic_holds


@dataclass(frozen=True)
class StudentAnswer:
    answer: str | None  # the final answer the solution commits to (None: it gives none)
    format_score: float
    arithmetic_holds: bool  # every `a op b = c` it writes is true, and its answer is the last one's result


def read_answer(text: str) -> StudentAnswer:
    answer = extract_final_answer(text)
    return StudentAnswer(answer, student_format(text, answer is not None), arithmetic_holds(text, answer))
