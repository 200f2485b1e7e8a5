"""Student role: the answer a solution commits to, its format score, and whether its written arithmetic holds and
uses every number the problem states."""

from __future__ import annotations

from dataclasses import dataclass

from selfplay.rewards import student_format
from selfplay.verify.answers import extract_final_answer
from selfplay.verify.arithmetic import arithmetic_holds, uses_givens


@dataclass(frozen=True)
class StudentAnswer:
    answer: str | None  # the final answer the solution commits to (None: it gives none)
    format_score: float
    arithmetic_holds: bool  # every `a op b = c` it writes is true, and its answer is the last one's result
    uses_givens: bool  # every number the problem states is an operand of one of them


def read_answer(text: str, problem: str) -> StudentAnswer:
    answer = extract_final_answer(text)
    return StudentAnswer(answer, student_format(text, answer is not None), arithmetic_holds(text, answer),
                         uses_givens(text, problem))
