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


def test_length_term_capped():
    assert rewards.length_term([500, 1500], 1000) == 1.0
    assert rewards.length_term([100, 300], 1000) == pytest.approx(0.2)
    assert rewards.length_term([], 1000) == 0.0


@pytest.mark.parametrize(("solve_rate", "repeat", "derived", "pays"), [
    (0.75, False, True, True),
    (0.75, True, True, False),  # a repeat of an archived problem earns no band (it would pay echoes)
    (0.75, False, False, False),  # its answer is not computed from it, where that is required
    (0.25, False, True, False),  # outside the band
    (None, False, True, False),
])
def test_band_pays_only_new_in_band_problems(solve_rate, repeat, derived, pays):
    assert rewards.band_pays(solve_rate, 0.5, 0.9, repeat, derived) is pays


@pytest.mark.parametrize(("solve_rate", "min_share", "confident"), [
    (0.5, 0.5, True), (0.375, 0.5, False), (None, 0.0, False), (0.125, 0.0, True), (1.0, 1.0, True)])
def test_the_confidence_gate(solve_rate, min_share, confident):
    assert rewards.confident(solve_rate, min_share) is confident


def test_in_band():
    assert rewards.in_band(0.5, 0.5, 0.9) and not rewards.in_band(None, 0.5, 0.9)
    assert not rewards.in_band(math.nan, 0.0, 1.0)


# Both kinds of mistake the old rule made, and the cases it had right. The old rule read unsigned digit runs only:
# it took a problem's words, "2 000" and "1e3" for no number or for other numbers, and a negative or fractional
# result for one of the numbers it was computed from.
DERIVED = [
    ("A box holds 6 rows of 5 pencils. Mia takes 4 out. How many are left?", "26", True),
    ("Tom had 1,200 dollars and spent 350. How much is left?", "850", True),
    ("A rope is 2.5 m long and another 1.5 m. How long are both?", "4.0 m", True),
    ("John has 3 pencils and 2 more. How many now?", "2+3=5pencils", True),  # after an "=", its right side
    ("What is 7 - 9?", "-2", True),
    ("Sam has 5 apples and gives away 10. What is his balance?", "-5", True),  # negative: 5 - 10
    ("A cake is cut into 4 pieces and Ann eats 2 of them. What share did she eat?", "1/2", True),  # a fraction
    ("A cake is cut into 4 pieces and Ann eats 2 of them. What share did she eat?", "\\frac{1}{2}", True),
    ("A cake is cut into 4 pieces and Ann eats 2 of them. What share did she eat?", "0.5", True),
    ("Expand 2 times (x + 3) and add 1.", "2x+7", True),  # an algebraic answer
    ("Ann walked 2 km and then 300 m. How many meters did she walk?", "2300", True),  # a sum across units
    ("There are 3 boxes with 60 pens each. How many pens?", "180", True),  # 60 stated: a product, not a unit
    ("Twelve birds sat on a wire and 5 flew off. How many are left?", "7", True),  # words read as numbers
    ("Tom had 1,200 dollars and spent 350. How much is left?", "1200", False),
    ("A rope is 2.5 m long and another 1.5 m. How long is the first?", "2.5", False),
    ("They have 3 more cars. How many cars do they have?", "3", False),  # its own answer
    ("The island has 10 houses. How many doors are there?", "40", False),  # one number: nothing to compute from
    ("There are 4 and 4 apples. How many apples?", "8", False),  # two numbers, but one distinct
    ("What is 7 - 9?", "\\boxed{9}", False),
    ("Is 3 less than 5?", "yes", False),  # no number in the answer
    ("Is 3 less than 5?", None, False),
    ("Ann has twelve apples and 3 bags. How many apples does she have?", "12", False),  # stated in words
    ("Ann has twelve apples and 3 bags. How many apples does she have?", "twelve", False),
    ("A town of 2 000 people has 3 schools. How many people live there?", "2000", False),  # "2 000" is 2000
    ("A jar holds 1e3 beads and 5 lids. How many beads?", "1000", False),  # scientific notation
    ("A rope is 2 meters long and weighs 5 kg. How long is it in centimeters?", "200", False),  # a unit change
    ("A trip takes 3 hours and costs 20 dollars. How many minutes does it take?", "180", False),
    ("What is 3 @ 5?", "8", False),  # an operation no one defined
    ("The temperature is -5 degrees and falls by 10 overnight. What was it in the evening?", "-5", False),
    ("Expand 2 times (x + 3) and add 1. The result has the form 2x+7.", "2x+7", False),  # stated expression
]


@pytest.mark.parametrize(("problem", "answer", "derived"), DERIVED)
def test_answer_derived_from_the_problems_numbers(problem, answer, derived):
    assert rewards.answer_derived(problem, answer) is derived


@pytest.mark.parametrize("answer", ["12", "12.0", "1,200", "-5", "1/2", "0.5", "\\frac{1}{2}", "-\\frac{3}{4}",
                                    "\\dfrac{3}{4}", "2.50", "\\boxed{9}", "0.125", "$8$"])
def test_answer_values_are_read_as_math_verify_reads_them(answer):
    """The rule's reading of an answer's value agrees with math-verify's parse of it."""
    from math_verify import parse

    assert float(rewards.answer_value(answer)) == pytest.approx(float(parse(f"${answer.strip('$')}$")[0]))


@pytest.mark.parametrize(("answer", "value"), [
    ("1e3", 1000),  # math-verify reads 1 x e x 3
    ("25\\%", 25),  # math-verify equates 25% with both 25 and 0.25; a problem states 25
    ("\\text{7}", 7), ("twelve", 12), ("twenty-five", 25), ("12 apples", 12), ("x+3", None), ("yes", None),
    ("1/0", None),
])
def test_answer_values_beyond_math_verify(answer, value):
    assert rewards.answer_value(answer) == value
