"""The reference answer by configuration: majority (default), the teacher's claim, or the teacher's program."""

from types import SimpleNamespace

import pytest

from selfplay.config import SelfPlayConfig
from selfplay.loop import Candidate, SelfPlay
from selfplay.policy import Sample
from selfplay.roles import StudentSolution, TeacherProblem
from selfplay.verify import Verifier


def candidate(answer=None, program=None, student_answers=("1/2", "0.5", "3", None)) -> Candidate:
    problem = TeacherProblem(problem="Half of one?", answer=answer, program=program, valid=True)
    c = Candidate(group=0, sample=Sample([1], [2], "", [0.0], True), parsed=problem)
    c.solutions = [StudentSolution("", a, 0.5 if a else 0.0, 3) for a in student_answers]
    return c


@pytest.fixture(scope="module")
def verifier():
    with Verifier(timeout=5.0) as v:
        yield v


@pytest.mark.parametrize(
    "mode, answer, correct, reference",
    [
        ("majority", None, [True, True, False, False], "1/2"),  # "1/2" and "0.5" form the largest class
        ("teacher", "3", [False, False, True, False], "3"),
        ("teacher", "\\frac{1}{2}", [True, True, False, False], "\\frac{1}{2}"),
    ],
)
def test_reference_answer_modes(verifier, mode, answer, correct, reference):
    c = candidate(answer)
    SelfPlay.verify(SimpleNamespace(config=SelfPlayConfig(reference_answer=mode), verifier=verifier), [c])
    assert c.correct == correct and c.reference == reference
    assert c.solve_rate == sum(correct) / 4  # unparseable answers count as wrong


def test_program_mode_runs_the_program_in_the_sandbox():
    config = SimpleNamespace(config=SelfPlayConfig(reference_answer="program", program_timeout=3.0))
    ok, broken, hostile = candidate(program="print(1/2)"), candidate(program="raise SystemExit(3)"), candidate(
        program="import socket\nsocket.socket()")
    SelfPlay.run_programs(config, [ok, broken, hostile])
    assert ok.parsed.valid and ok.parsed.answer == "0.5"
    assert not broken.parsed.valid and broken.parsed.reason.startswith("program failed")
    assert not hostile.parsed.valid and "socket" in hostile.parsed.reason
