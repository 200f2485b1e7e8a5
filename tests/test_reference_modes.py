"""Judging a problem's answers by reference mode (majority, the teacher's claim, its program's output), through
the real guarded verifier and the real sandbox."""

import pytest

from selfplay.roles import PromptTemplate, TeacherProblem, parse_teacher, required_blocks, with_program_output
from selfplay.verify import Verifier, judge, judge_all
from selfplay.verify.judge import majority_class, solve_rate
from selfplay.verify.sandbox import run_program

ANSWERS = ["1/2", "0.5", "3", None]


@pytest.fixture(scope="module")
def verifier():
    with Verifier(timeout=5.0) as v:
        yield v


@pytest.mark.parametrize(
    "mode, claimed, correct, reference",
    [
        ("majority", None, (True, True, False, False), "1/2"),  # "1/2" and "0.5" form the largest class
        ("teacher", "3", (False, False, True, False), "3"),
        ("teacher", "\\frac{1}{2}", (True, True, False, False), "\\frac{1}{2}"),
        ("program", "0.5", (True, True, False, False), "0.5"),  # program mode judges against the program's output
    ],
)
def test_reference_answer_modes(verifier, mode, claimed, correct, reference):
    verdict = judge(ANSWERS, mode, claimed, verifier.equal_many)
    assert verdict.correct == correct and verdict.reference == reference
    assert verdict.solve_rate == sum(correct) / 4  # unparseable answers count as wrong


def test_majority_with_no_answer_has_no_reference_and_nothing_correct(verifier):
    verdict = judge([None, None, None], "majority", None, verifier.equal_many)
    assert verdict.reference is None and verdict.correct == (False, False, False) and verdict.solve_rate == 0.0


def test_teacher_mode_sends_only_given_answers_to_the_checker():
    seen = []

    def equal_many(pairs):
        seen.extend(pairs)
        return [a == b for a, b in pairs]

    verdict = judge([None, "4", None, "5"], "teacher", "4", equal_many)
    assert seen == [("4", "4"), ("4", "5")] and verdict.correct == (False, True, False, False)


@pytest.mark.parametrize("mode", ["majority", "teacher"])
def test_a_steps_problems_are_judged_in_one_checker_call_with_the_same_verdicts(verifier, mode):
    problems = [(ANSWERS, "0.5"), (["2", "2.0", "x", "3"], "3"), ([None, None], None), (["7", "1/2"], "7")]
    calls = []

    def equal_many(pairs):
        calls.append(pairs)
        return verifier.equal_many(pairs)

    batched = judge_all(problems, mode, equal_many)
    assert len(calls) == 1 and len(set(calls[0])) == len(calls[0])  # one call, no pair asked twice
    assert batched == [judge(answers, mode, claimed, verifier.equal_many) for answers, claimed in problems]


def test_solve_rate_counts_unparseable_answers_as_wrong():
    assert solve_rate([True] + [False] * 7) == 0.125
    assert solve_rate([]) is None


def test_majority_class_ties_go_to_the_first_class():
    assert majority_class([None, 1, 0, 1, 0]) == 0
    assert majority_class([2, 2, 0, None]) == 2
    assert majority_class([None, None]) is None


def test_program_mode_runs_the_program_in_the_sandbox():
    problem = TeacherProblem(problem="Half of one?", valid=True)
    outcomes = {}
    for name, code in {"ok": "print(1/2)", "broken": "raise SystemExit(3)", "hostile": "import socket\nsocket.socket()"}.items():
        result = run_program(code, 3.0, 512)
        outcomes[name] = with_program_output(problem, result.answer, result.status)
    assert outcomes["ok"].valid and outcomes["ok"].answer == "0.5"
    assert not outcomes["broken"].valid and outcomes["broken"].reason.startswith("program failed")
    assert not outcomes["hostile"].valid and "Operation not permitted" in outcomes["hostile"].reason
    assert problem.valid and problem.answer is None  # the parsed problem itself is left as it was


@pytest.mark.parametrize("template", ["prompts/teacher.yaml", "prompts/teacher-multistep.yaml"])
@pytest.mark.parametrize("mode", ["majority", "teacher", "program"])
def test_the_teachers_worked_example_shows_the_format_each_reference_mode_asks_for(template, mode):
    """A 135M teacher copies its worked example: before the example showed a program, program mode got a usable
    <program> block in none of 48 completions."""
    need = required_blocks(mode)
    shown = ["Ann has 2 cats and gets 1 more. How many now?"]
    messages = PromptTemplate.load(template).messages(problems=shown, **need)
    example, request = messages[2]["content"], messages[-1]["content"]
    assert messages[1]["content"].splitlines()[-4:] == request.splitlines()[-4:]  # the example asks as the request does
    parsed = parse_teacher(example, request, [], 10, 3, **need)
    assert parsed.valid, parsed.reason
    assert (parsed.program is not None) == (mode == "program")
    if parsed.program:
        assert run_program(parsed.program, 3.0, 512).answer == parsed.answer  # the example's program prints its answer


@pytest.mark.parametrize(("answers", "restated", "reference", "correct"), [
    (["12", "12", "12", "7"], ["12.0", "12", "5", "9"], "12", (True, True, True, False)),  # both routes say 12
    (["12", "12", "12", "7"], ["5", "5", "12", "9"], None, (False,) * 4),  # the restatement's majority is 5
    (["12", "12", "7", "7"], [None, None, None, None], None, (False,) * 4),  # no second route: no reference
])
def test_two_routes_agree_or_give_no_reference(verifier, answers, restated, reference, correct):
    from selfplay.verify import judge_routes

    [verdict] = judge_routes([(answers, restated)], verifier.equal_many)
    assert verdict.reference == reference and verdict.correct == correct


def test_a_restatement_must_be_a_new_wording_of_a_problem():
    from selfplay.roles import parse_restatement

    original = "Sara has 12 stickers and gives 5 to Ben. How many stickers does she have left?"
    assert parse_restatement("<problem>Ben gets 5 of Sara's 12 stickers. How many are Sara's?</problem>", original,
                             10) == "Ben gets 5 of Sara's 12 stickers. How many are Sara's?"
    assert parse_restatement(f"<problem>{original.upper()}</problem>", original, 10) is None  # the same words
    assert parse_restatement("no tags", original, 10) is None
    assert parse_restatement("<problem>12?</problem>", original, 10) is None  # too short
