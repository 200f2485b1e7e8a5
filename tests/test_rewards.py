import math

import pytest

from selfplay import rewards


@pytest.mark.parametrize(
    "solve_rate, expected",
    # The reference's worked values for G=8, band 0.5-0.9 (shared/design/opensir-reference.md, section 2).
    [(0.5, 0.25), (0.625, 0.71875), (0.75, 0.8125), (0.875, 0.34375), (0.9, 0.25), (0.7, 1.0)],
)
def test_solvability_matches_reference_values(solve_rate, expected):
    assert rewards.solvability(solve_rate, 8, 0.5, 0.9) == pytest.approx(expected)


@pytest.mark.parametrize("solve_rate", [None, 0.0, 0.375, 0.95, 1.0])
def test_solvability_is_zero_outside_band(solve_rate):
    assert rewards.solvability(solve_rate, 8, 0.5, 0.9) == 0.0


def test_solvability_edge_value_depends_on_reachable_grid():
    # n=4: reachable rates in [0.5, 0.9] are 0.5 and 0.75, so the edge value is 1/2.
    assert rewards.solvability(0.5, 4, 0.5, 0.9) == pytest.approx(0.5)


def test_novelty_is_one_minus_mean_top_k_over_two():
    assert rewards.novelty([1.0, 1.0], 5) == 0.0
    assert rewards.novelty([0.2, 0.9, 0.5, -1.0], 2) == pytest.approx((1 - 0.7) / 2)
    assert rewards.novelty([-1.0], 5) == 1.0
    assert rewards.novelty([], 5) == 1.0


def test_teacher_terms_weighted_and_invalid_gets_only_format():
    weights = rewards.TeacherWeights(solvability=1.0, novelty=2.0, format=0.1, length=0.5)
    valid = rewards.TeacherTerms(format=1.0, solvability=0.5, novelty=0.25, length=0.2)
    assert valid.total(weights) == pytest.approx(0.5 + 0.5 + 0.1 + 0.1)
    assert rewards.TeacherTerms(format=2 / 3).total(weights) == pytest.approx(0.1 * 2 / 3)


def test_student_terms_weighted():
    weights = rewards.StudentWeights(correct=1.0, format=0.1)
    assert rewards.StudentTerms(correct=1.0, format=0.5).total(weights) == pytest.approx(1.05)
    assert rewards.StudentTerms(correct=0.0, format=0.0).total(weights) == 0.0


def test_format_terms():
    assert rewards.teacher_format(True, False, True) == pytest.approx(2 / 3)
    assert rewards.student_format("so Therefore, the final answer is: $\\boxed{3}$", True) == 1.0
    assert rewards.student_format("it is \\boxed{3}", True) == 0.5
    assert rewards.student_format("no answer", False) == 0.0


def test_length_term_capped_and_zero_without_answers():
    assert rewards.length_term([500, 1500], 1000, True) == 1.0
    assert rewards.length_term([100, 300], 1000, True) == pytest.approx(0.2)
    assert rewards.length_term([100, 300], 1000, False) == 0.0


def test_in_band():
    assert rewards.in_band(0.5, 0.5, 0.9) and not rewards.in_band(None, 0.5, 0.9)
    assert not rewards.in_band(math.nan, 0.0, 1.0)


@pytest.mark.parametrize(("problem", "answer", "derived"), [
    ("A box holds 6 rows of 5 pencils. Mia takes 4 out. How many are left?", "26", True),
    ("Tom had 1,200 dollars and spent 350. How much is left?", "850", True),
    ("Tom had 1,200 dollars and spent 350. How much is left?", "1200", False),  # thousands separators read
    ("A rope is 2.5 m long and another 1.5 m. How long are both?", "4.0 m", True),
    ("A rope is 2.5 m long and another 1.5 m. How long is the first?", "2.5", False),
    ("They have 3 more cars. How many cars do they have?", "3", False),  # its own answer
    ("The island has 10 houses. How many doors are there?", "40", False),  # one number: nothing to compute from
    ("There are 4 and 4 apples. How many apples?", "8", False),  # two numbers, but one distinct
    ("John has 3 pencils and 2 more. How many now?", "2+3=5pencils", True),  # the value is the last number
    ("What is 7 - 9?", "-2", True),  # unsigned: "7 - 9" states 7 and 9
    ("What is 7 - 9?", "\\boxed{9}", False),
    ("Is 3 less than 5?", "yes", False),  # no number in the answer
    ("Is 3 less than 5?", None, False),
])
def test_answer_derived_from_the_problems_numbers(problem, answer, derived):
    assert rewards.answer_derived(problem, answer) is derived
