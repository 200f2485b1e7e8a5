import os
import time
from pathlib import Path

import pytest

from selfplay.roles import read_answer
from selfplay.verify import Verifier, answers_equal, cluster_answers, extract_final_answer, judge, judge_all
from selfplay.verify.answers import equal_many_unguarded, last_boxed, normalize
from selfplay.verify.arithmetic import arithmetic_holds, counted_answer, uses_givens
from selfplay.verify.guard import WORKER_MEMORY_MB

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def verifier():
    with Verifier(timeout=TIMEOUT, workers=2) as v:
        v.equal("1", "1")  # start the forkserver and workers outside the timed checks
        yield v


@pytest.mark.parametrize(
    "a, b, equal",
    [
        ("1/2", "0.5", True),
        ("\\frac{1}{2}", "0.5", True),
        ("14.0", "14", True),
        ("1,000", "1000", True),
        ("x+1", "1+x", True),
        ("\\sqrt{2}", "2^{1/2}", True),
        ("\\text{ 7 }", "7", True),
        ("3", "4", False),
        ("1/3", "0.33", False),
        ("", "0", False),
    ],
)
def test_answers_equal(a, b, equal):
    assert answers_equal(a, b) is equal


def test_extraction():
    assert extract_final_answer("so\nTherefore, the final answer is: $\\boxed{\\frac{3}{4}}$") == "\\frac{3}{4}"
    assert extract_final_answer("\\boxed{1} then \\boxed{2}") == "2"
    assert extract_final_answer("The final answer is 42.") == "42"
    assert extract_final_answer("no answer here") is None
    assert extract_final_answer("The final answer is 1/2. Then we eat cake, and more cake.") == "1/2"
    assert extract_final_answer("the final answer is either Sara can take all or she cannot") is None
    assert extract_final_answer("\\boxed{unclosed") is None
    assert last_boxed("\\boxed{a{b}c}") == "a{b}c"


def test_cluster_answers_groups_equivalent_forms(verifier):
    classes = verifier.cluster(["1/2", "0.5", None, "3", "3.0", "\\frac{1}{2}", "7"])
    assert classes == [0, 0, None, 1, 1, 0, 2]
    assert cluster_answers([None, None], equal_many_unguarded) == [None, None]


ATTACKS = {
    "power tower": "10^{10^{10^{10}}}",
    "huge factorial": "(10^{1000})!",
    "nested fractions": "\\frac{1}{" * 300 + "2" + "}" * 300,
    "1 MB string": "1" * (1 << 20),
    "malformed latex": "\\frac{1}{2",
    "unbalanced delimiters": "\\left( \\right] \\sqrt[",
    "binary": "\x00\xff\x01}{\\",
    "nested exponentials": "e^{e^{e^{e^{100}}}}",
    "power tower 9": "9^{9^{9^{9}}}",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_adversarial_answers_return_within_the_limit(verifier, name):
    start = time.monotonic()
    result = verifier.equal(ATTACKS[name], "5")
    elapsed = time.monotonic() - start
    assert result is False
    # The limit, plus the cost of killing and replacing a worker.
    assert elapsed < TIMEOUT + 1.0, f"{name} took {elapsed:.1f}s"


def test_guard_keeps_working_after_timeouts_and_counts_them(verifier):
    before = verifier.timeouts
    pairs = [("1/2", "0.5")] * 20 + [(ATTACKS["power tower"], "3")] + [("x+1", "1+x")] * 5
    results = verifier.equal_many(pairs)
    assert results == [True] * 20 + [False] + [True] * 5
    assert verifier.timeouts == before + 1  # it is read once, in its own task


def test_guard_works_from_a_thread(verifier):
    import threading

    out = []
    thread = threading.Thread(target=lambda: out.append(verifier.equal(ATTACKS["power tower"], "1")))
    start = time.monotonic()
    thread.start()
    thread.join()
    assert out == [False] and time.monotonic() - start < TIMEOUT + 1.0


def test_a_hostile_text_answer_is_read_in_linear_time():
    """`\\text{` and 30,000 spaces: the old normalising regex backtracked quadratically (10 s, holding the GIL)."""
    hostile = "\\boxed{\\text{" + " " * 30_000 + "{}}}"
    for text in (hostile, "Let me think. " * 500 + hostile, "\\boxed{" + "\\text{ " * 5_000 + "}"):
        start = time.perf_counter()
        read_answer(text, problem=text)
        normalize(text)  # the checker normalises whatever it is given
        assert time.perf_counter() - start < 0.1


def test_one_hostile_answer_among_eight_costs_its_problem_one_limit(verifier):
    answers = ["1/2", "0.5", ATTACKS["power tower 9"], "\\frac{1}{2}", "3", "3.0", "7", "1/2"]
    before, start = verifier.timeouts, time.monotonic()
    [verdict] = judge_all([(answers, None)], "majority", verifier.equal_many)
    assert time.monotonic() - start < TIMEOUT + 1.0
    assert verifier.timeouts == before + 1
    assert verdict.reference == "1/2" and verdict.correct == (True, True, False, True, False, False, False, True)


def test_two_hostile_answers_read_side_by_side(verifier):
    answers = [ATTACKS["power tower"], ATTACKS["power tower 9"], "2", "2.0", "2", "5", "2", "6"]
    start = time.monotonic()
    [verdict] = judge_all([(answers, None)], "majority", verifier.equal_many)
    assert time.monotonic() - start < TIMEOUT + 1.0  # two workers, one limit
    assert verdict.reference == "2" and verdict.solve_rate == 4 / 8


@pytest.mark.parametrize("undefined", ["nan", "NaN", "-nan", "\\text{nan}", "0/0", "\\frac{1}{0}"])
def test_an_undefined_answer_equals_nothing_not_even_itself(verifier, undefined):
    assert verifier.equal_many([(undefined, undefined), (undefined, "0"), ("3", "3")]) == [False, False, True]
    assert answers_equal(undefined, undefined) is False
    assert verifier.cluster([undefined, undefined, "2", undefined]) == [None, None, 0, None]
    agreed = judge([undefined] * 8, "majority", None, verifier.equal_many)
    assert agreed.reference is None and agreed.solve_rate == 0.0
    claimed = judge([undefined] * 4 + ["1"] * 4, "teacher", undefined, verifier.equal_many)
    assert claimed.solve_rate == 0.0


def test_checking_workers_run_under_a_memory_limit(verifier):
    """Every worker of the pool (a descendant of this process, forked by the forkserver) has the address-space
    limit, so a reading that grows (a huge number, a huge matrix) raises MemoryError instead of taking the host."""
    verifier.equal_many([("1/2", "0.5"), ("3", "4")])
    limits = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if _descends_from(int(status.parent.name), os.getpid()):
                limits.append((status.parent / "limits").read_text())
        except (OSError, ValueError):
            continue
    limited = [text for text in limits if f"{WORKER_MEMORY_MB << 20}" in _address_space_line(text)]
    assert len(limited) >= 2, limits


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == ancestor:
            return True
    return False


def _address_space_line(limits: str) -> str:
    return next(line for line in limits.splitlines() if line.startswith("Max address space"))


@pytest.mark.parametrize(("text", "answer"), [
    ("Therefore, the final answer is: $\\boxed{12}$. Then 99.", "12"),  # the strict answer first
    ("She has 3 + 4 = 7 apples.", "7"),  # else the last number written
    ("It costs 1,200 dollars", "1200"),
    ("Half of it: 1/2", "1/2"),
    ("x = -3.5", "-3.5"),
    ("no number at all", None),
])
def test_lenient_answers_read_the_last_number_when_nothing_is_boxed(text, answer):
    from selfplay.verify.answers import lenient_answer

    assert lenient_answer(text) == answer


@pytest.mark.parametrize(
    "text, answer, holds",
    [
        ("Kira has 40 + 3 = 43 balloons.\nTherefore, the final answer is: $\\boxed{43}$", "43", True),
        ("Kira has 40 - 3 = 22 balloons.\nTherefore, the final answer is: $\\boxed{22}$", "22", False),  # false sum
        ("Kira has 40 + 3 = 43 balloons.\nTherefore, the final answer is: $\\boxed{44}$", "44", False),  # not reached
        ("She buys 3 bags.\nTherefore, the final answer is: $\\boxed{3}$", "3", False),  # no arithmetic written
        ("She pays $2 \\times 6 = 12$ dollars, then 12 / 4 = 3 each.", "3", True),  # every step, the last one's result
        ("2 + 3 * 4 = 14", "14", True),  # precedence
        ("2 + 3 * 4 = 20", "20", False),
        ("10 / 3 = 3.33", "3.33", True),  # as precise as it is written
        ("10 / 3 = 3.4", "3.4", False),
        ("1,000 + 2 = 1,002", "1002", True),
        ("5 - 8 = -3", "-3", True),
        ("5 - 8 = -3 + 1 = -2", "-2", True),
        ("5 / 0 = 1", "1", False),
        ("\\$5 + \\$3 = \\$8", "\\$8", True),
        ("3 x 4 = 12 boxes, 3 × 4 = 12", "12", True),
        ("2 + 3 = 5 + 4 = 9", "9", True),  # a chain: 5 + 4 = 9 is checked too
        ("2 + 3 = 5 + 4 = 10", "10", False),
        ("3 + 4 = 7 \\boxed{7}, then 1 + 1 = 3", "7", True),  # after the boxed answer: not the solution's
        ("123456789012345 * 2 = 246913578024690", "246913578024690", False),  # past MAX_DIGITS: not computed
        (" + ".join(["1"] * 9) + " = 9", "9", False),  # past MAX_OPERANDS
        ("3 + 4 = 7", None, False),
    ],
)
def test_written_arithmetic_holds_when_every_step_is_true_and_reaches_the_answer(text, answer, holds):
    assert arithmetic_holds(text, answer) is holds
    assert read_answer(text, "").arithmetic_holds is (holds and extract_final_answer(text) == answer)


@pytest.mark.parametrize("holds, used_givens, check, check_givens, counted", [
    (True, True, True, False, "7"), (False, True, True, False, None), (False, False, False, False, "7"),
    (True, False, True, False, "7"),  # a given left unused counts only when check_givens is on
    (True, False, True, True, None), (True, True, True, True, "7"), (False, True, True, True, None),
])
def test_an_answer_counts_unless_a_check_that_is_on_fails(holds, used_givens, check, check_givens, counted):
    assert counted_answer("7", holds, used_givens, check=check, check_givens=check_givens) == counted


KIRA = "Kira has 40 balloons. Kira finds 3 more balloons. How many balloons does Kira have now?"


@pytest.mark.parametrize("problem, text, uses", [
    (KIRA, "Kira has 40 + 3 = 43 balloons. \\boxed{43}", True),
    (KIRA, "40 - 3 = 37", True),  # the wrong operation on the givens: only the students can tell
    (KIRA, "Each balloon weighs 10 pounds: 10 x 3 = 30, 30 + 40 = 70", True),  # invented numbers may join
    (KIRA, "Kira has 40 balloons, so 40 * 10 = 400. \\boxed{400}", False),  # 3 never used
    (KIRA, "40 + 1 = 41 \\boxed{41}, then 41 + 3 = 44", False),  # after the boxed answer: not the solution's
    (KIRA, "Kira has 40 and 3 more: 43", False),  # no equation
    ("A box holds 1,000 pins and 2.50 dollars of tape.", "1000 + 2.5 = 1002.5", True),  # as numbers, not strings
    ("Dev has 17 pencils, loses 11 of them and then doubles what is left.", "17 - 11 = 6, 6 * 2 = 12", True),
    ("What is half of ten?", "10 / 2 = 5", True),  # a problem stating no digits has no givens
    ("Sam has " + "9" * 20 + " pins and 3 more.", "3 + 3 = 6", True),  # past MAX_DIGITS: not a given
])
def test_the_givens_check_asks_for_every_number_the_problem_states_among_the_operands(problem, text, uses):
    assert uses_givens(text, problem) is uses
    assert read_answer(text, problem).uses_givens is uses


@pytest.mark.parametrize("problem", ["1 " * 20_000, "1," * 20_000 + "2", ("9" * 12 + " ") * 4_000,
                                     " ".join(map(str, range(10_000)))])
def test_a_hostile_problem_costs_the_givens_check_milliseconds(problem):
    """A teacher writes the problem; 20,000-50,000 characters of numbers are read in milliseconds."""
    start = time.perf_counter()
    uses_givens("1 + 1 = 2 " * 40, problem)
    assert time.perf_counter() - start < 0.1


def test_a_problem_stating_more_numbers_than_a_solution_can_use_fails_the_givens_check():
    assert not uses_givens("0 + 1 = 1", " ".join(map(str, range(300))))
    assert uses_givens("0 + 1 = 1", "0 1 1 0")


@pytest.mark.parametrize("text", ["1" * 20_000, "1 + " * 5_000 + "= 2", "1," * 10_000 + "= 3",
                                  "2 + 3 = 5 + 0 = " * 3_000, ("9" * 12 + " * ") * 4_000 + "= 1"])
def test_a_hostile_solution_costs_the_arithmetic_check_milliseconds(text):
    """A 2048-token solution is about 10,000 characters; these are 20,000-50,000."""
    start = time.perf_counter()
    assert not arithmetic_holds(text, "5")
    assert time.perf_counter() - start < 0.1
