"""The glue of a step between its rooms: scored candidates become training rows with the right roles, groups,
loss masks and selection (`SelfPlay.score` and `SelfPlay.training_rows` on hand-made candidates), and the
teacher's prompts show seeds or pool problems as configured (`SelfPlay.prompt_teacher` on a real pool)."""

import numpy as np
import pytest

from selfplay.config import SelfPlayConfig
from selfplay.curriculum.pool import Pool
from selfplay.distributed import Ranks
from selfplay.loop import Candidate, Generated, Round, SelfPlay, Solution
from selfplay.novelty import Archive
from selfplay.policy import EMBEDDED, Sample, load_tokenizer
from selfplay.roles import PromptTemplate, parse_teacher


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(EMBEDDED)


def sample(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return Sample([1, 2, 3], ids, text, [-0.5] * len(ids), True)


def candidate(tokenizer, teacher_prompt, text, solutions=(), solve_rate=None, novelty=None):
    c = Candidate(teacher_prompt, sample(tokenizer, text), parse_teacher(text, "", [], 10, 3, False, False))
    for answer, correct in solutions:
        c.solutions.append(Solution(sample(tokenizer, f"The answer is {answer}."), answer, 1.0, correct=correct))
    c.solve_rate, c.novelty = solve_rate, novelty
    return c


def step(tokenizer, **config):
    return SelfPlay(SelfPlayConfig(**{"student_samples": 2, **config}), None, None, tokenizer, None, None, None, None, None,
                    None, None, None, None, Ranks())


def step_metrics(selfplay, batch):
    """The step's metrics line for one round of scored candidates, with an empty archive and pool."""
    selfplay.archive = Archive(4)
    selfplay.pool = Pool(selfplay.archive)
    rows = selfplay.training_rows(batch)
    return selfplay.step_metrics([Round(Generated([], batch, 0, {}), rows)], rows, {}, 0)


def candidates(tokenizer):
    problem = "<problem>How many legs do {n} cats have?</problem><concepts>multiplication, animals</concepts>"
    return [
        candidate(tokenizer, 0, problem.format(n=3), [("12", True), ("7", False)], 0.5, 0.9),  # problem 0
        candidate(tokenizer, 0, "no tags at all"),  # invalid: a teacher row, no student rows
        candidate(tokenizer, 1, problem.format(n=4), [("16", True), ("16", True)], 1.0, 0.2),  # no student signal
        candidate(tokenizer, 1, problem.format(n=5), [("20", True), ("2", False)], 0.5, 0.4),  # problem 3
    ]


def test_rows_carry_their_role_group_advantage_and_concept_mask(tokenizer):
    selfplay, batch = step(tokenizer), candidates(tokenizer)
    selfplay.score(batch)
    rows = selfplay.training_rows(batch)
    teacher = [r for r in rows.rows if r.role == "teacher"]
    student = [r for r in rows.rows if r.role == "student"]
    assert len(teacher) == 4 and rows.groups_trained == {"teacher": 2, "student": 2}
    assert teacher[0].advantage > 0 > teacher[1].advantage  # the valid problem beats the untagged text
    assert [r.completion_ids for r in student] == [s.sample.completion_ids for k in (0, 3) for s in batch[k].solutions]
    assert [r.advantage > 0 for r in student] == [True, False, True, False]
    for row, c in zip(teacher, batch):
        kept = tokenizer.decode([t for t, m in zip(row.completion_ids, row.loss_mask or []) if m])
        assert (row.loss_mask is None) == (not c.problem.has_concepts)
        assert row.loss_mask is None or ("cats" in kept and "multiplication" not in kept and "concepts" not in kept)
    unmasked = step(tokenizer, mask_concepts=False).training_rows(batch)
    assert all(r.loss_mask is None for r in unmasked.rows)


def test_variance_selection_keeps_the_teacher_group_whose_problems_scores_vary(tokenizer):
    selfplay, batch = step(tokenizer, group_selection="variance"), candidates(tokenizer)
    selfplay.score(batch)
    rows = selfplay.training_rows(batch)
    # teacher group 0 holds one valid problem (variance 0); group 1 holds two whose c differ: group 1 is kept.
    # Among problems with signal, problem 0 has the higher c = solvability + novelty.
    assert [r.completion_ids for r in rows.rows if r.role == "teacher"] == [c.sample.completion_ids for c in batch[2:]]
    assert [r.completion_ids for r in rows.rows if r.role == "student"] == [
        s.sample.completion_ids for s in batch[0].solutions]


def test_program_mode_takes_each_problems_answer_from_its_own_program(tokenizer):
    texts = {"ok": "print(3 * 4)", "slow": "n = 0\nfor i in range(3 * 10 ** 6):\n    n += 1\nprint(7)", "crash": "raise SystemExit(3)",
             "hostile": "import os\nos.system('true')\nprint(os.fork())"}
    batch = [candidate(tokenizer, 0, f"<problem>How many legs do {n} cats have?</problem><program>{code}</program>")
             for n, code in enumerate(texts.values(), start=3)]
    step(tokenizer, reference_answer="program", verify_workers=2).run_programs(batch)
    assert [c.problem.answer for c in batch] == ["12", "7", None, None]  # in candidate order, whatever finished first
    assert [c.valid for c in batch] == [True, True, False, False]
    assert batch[2].problem.reason.startswith("program failed: error") and "Operation not permitted" in batch[3].problem.reason


def test_solvability_requires_derived_withholds_the_band_from_a_problem_that_states_its_answer(tokenizer):
    derived = "<problem>Ann has 3 bags of 4 apples. How many apples?</problem>"
    stated = "<problem>Ann has 12 apples and 3 bags. How many apples?</problem>"
    batch = [candidate(tokenizer, 0, text, [("12", True), ("7", False)], 0.5, 0.4) for text in (derived, stated)]
    for c in batch:
        c.reference = "12"
    step(tokenizer).score(batch)
    assert batch[0].terms.solvability == batch[1].terms.solvability > 0
    step(tokenizer, solvability_requires_derived=True).score(batch)
    assert batch[0].terms.solvability > 0 == batch[1].terms.solvability
    assert batch[0].reward > batch[1].reward


def test_under_the_derived_rule_a_problem_that_states_its_answer_trains_no_student(tokenizer):
    """Its students would be paid for copying the stated number (advantages of about +-0.7)."""
    derived = "<problem>Ann has 3 bags of 4 apples. How many apples?</problem>"
    stated = "<problem>Ann has 12 apples and 3 bags. How many apples?</problem>"
    batch = [candidate(tokenizer, k, text, [("12", True), ("7", False)], 0.5, 0.4)
             for k, text in enumerate((derived, stated))]
    for c in batch:
        c.reference = "12"
    trained = {}
    for rule in (False, True):
        selfplay = step(tokenizer, solvability_requires_derived=rule)
        selfplay.score(batch)
        trained[rule] = [r.completion_ids for r in selfplay.training_rows(batch).rows if r.role == "student"]
    every = [s.sample.completion_ids for c in batch for s in c.solutions]
    assert trained[False] == every and trained[True] == every[:2]


def test_a_repeat_of_an_archived_problem_earns_no_band_and_no_novelty(tokenizer):
    """A verbatim repeat of an in-band problem already archived earned 0.955 against 1.068 for a new one."""
    text = "<problem>Ann has 3 bags of 4 apples. How many apples?</problem>"
    new, repeat = (candidate(tokenizer, k, text, [("12", True), ("7", False)], 0.5, 0.3) for k in (0, 1))
    new.nearest, repeat.nearest = 0.62, 1.0  # the cosine to the nearest archived problem
    selfplay = step(tokenizer, w_length=1.0)
    selfplay.score([new, repeat])
    assert new.terms.solvability > 0 and new.terms.novelty == 0.3 and new.terms.length > 0
    assert (repeat.terms.solvability, repeat.terms.novelty, repeat.terms.length) == (0.0, 0.0, 0.0)
    assert repeat.reward == pytest.approx(0.1 * repeat.terms.format) and repeat.reward < new.reward
    metrics = step_metrics(selfplay, [new, repeat])
    assert metrics["teacher/in_band_fraction"] == 0.5 and metrics["teacher/repeat_fraction"] == 0.5


def test_the_share_of_problems_judged_against_an_answer_is_logged(tokenizer):
    """A two-route run paid for 2% of its problems once switched on; this is the figure that shows why."""
    text = "<problem>Ann has 3 bags of 4 apples. How many apples?</problem>"
    judged, unjudged, invalid = (candidate(tokenizer, 0, t, [("12", True), ("7", False)], 0.5, 0.3)
                                 for t in (text, text, "no tags at all"))
    judged.reference = "12"
    selfplay = step(tokenizer)
    selfplay.score([judged, unjudged, invalid])
    assert step_metrics(selfplay, [judged, unjudged, invalid])["student/reference_fraction"] == 0.5  # of valid ones


def test_the_length_term_measures_the_students_solutions_and_only_in_the_band(tokenizer):
    text = "<problem>Ann has 3 bags of 4 apples. How many apples?</problem>"
    in_band = candidate(tokenizer, 0, text, [("12", True), ("7", False)], 0.5, 0.3)
    out_of_band = candidate(tokenizer, 0, text, [("12", True), ("12", True)], 1.0, 0.3)
    step(tokenizer, w_length=1.0, length_cap=20).score([in_band, out_of_band])
    student_tokens = [len(s.sample.completion_ids) for s in in_band.solutions]
    assert len(in_band.sample.completion_ids) != sum(student_tokens) / 2  # the teacher's own length differs
    assert in_band.terms.length == pytest.approx(sum(student_tokens) / 2 / 20)
    assert out_of_band.terms.length == 0.0  # any answer used to be enough (up to 1.0 for one answer in eight)


def test_seed_share_sets_how_many_teacher_prompts_show_a_seed(tokenizer):
    archive = Archive(4)
    archive.add(np.eye(4, dtype=np.float32).repeat(6, axis=0))
    pool = Pool(archive)
    pool.add([{"problem": f"Seed problem {i}.", "seed": True} for i in range(2)], [0, 1])
    pool.add([{"problem": f"Pool problem {i}."} for i in range(22)], list(range(2, 24)))

    def seeds_shown(seed_share):
        config = SelfPlayConfig(teacher_prompts=4, seed_share=seed_share)
        loop = SelfPlay(config, None, None, tokenizer, None, None, None, pool, archive, None,
                        PromptTemplate.load(config.teacher_template), None, np.random.default_rng(0), Ranks())
        return [["Seed problem" in p.request for p in loop.prompt_teacher()] for _ in range(20)]

    assert all(shown[:2] == [True, True] for shown in seeds_shown(0.5))
    assert all(shown == [True] * 4 for shown in seeds_shown(1.0))
    assert sum(map(sum, seeds_shown(0.0))) < 20  # uniform over 24 problems: about 80 prompts x 2/24


def test_the_confidence_gate_pays_neither_students_nor_band_for_a_reference_few_reach(tokenizer):
    """2 of 8 agreeing is in the recipe's band (0.25-0.875); with min_majority_share 0.5 it pays no one."""
    text = "<problem>Ann has 3 bags of 4 apples. How many apples?</problem>"
    answers = [("12", True), ("12", True)] + [(str(k), False) for k in range(6)]
    shaky = candidate(tokenizer, 0, text, answers, 0.25, 0.3)
    sure = candidate(tokenizer, 1, text, [("12", True)] * 5 + [(str(k), False) for k in range(3)], 0.625, 0.3)
    for c in (shaky, sure):
        c.reference = "12"
    terms = {}
    for gate in (0.0, 0.5):
        step(tokenizer, student_samples=8, band_low=0.25, band_high=0.875, min_majority_share=gate).score([shaky, sure])
        terms[gate] = (shaky.terms.solvability, [s.terms.correct for s in shaky.solutions], sure.terms.solvability)
    assert terms[0.0][0] > 0 and terms[0.0][1][:2] == [1.0, 1.0]
    assert terms[0.5][0] == 0.0 and terms[0.5][1] == [0.0] * 8  # the two who agreed are paid nothing
    assert terms[0.5][2] == terms[0.0][2] > 0  # a confident reference is paid as before


def test_anchors_train_students_against_the_seeds_answers_whatever_the_selection(tokenizer):
    """Known-answer anchors (anchor_share): their groups are student rows that no selection drops, rewarded
    against the seed's own answer; they give the teacher nothing."""
    batch = candidates(tokenizer)
    anchor = candidate(tokenizer, -1, "<problem>Ann has 3 bags of 4 apples. How many apples?</problem>",
                       [("12", True), ("7", False)])
    selfplay = step(tokenizer, group_selection="variance", student_groups_per_step=1, teacher_groups_per_step=1)
    selfplay.score(batch)
    selfplay.score_students([anchor], trusted=True)
    rows = selfplay.training_rows(batch, [anchor])
    students = [r for r in rows.rows if r.role == "student"]
    assert students[-2:] == [r for r in selfplay.training_rows([], [anchor]).rows]  # the anchor's group, last
    assert [r.advantage > 0 for r in students[-2:]] == [True, False]  # the seed's answer is the reference
    assert rows.groups_trained["student"] == 2  # one selected problem and the anchor
    assert len([r for r in rows.rows if r.role == "teacher"]) == len(
        [r for r in selfplay.training_rows(batch).rows if r.role == "teacher"])


def test_a_round_judges_its_anchors_against_the_seeds_answers_not_the_students_majority(tokenizer):
    """Two of three students agree on 7; the seed says 12: the one who wrote 12 is the one paid and trained up."""
    from selfplay.loop import PhaseTimer
    from selfplay.roles import TeacherProblem
    from selfplay.verify import Verifier

    anchor = Candidate(-1, None, TeacherProblem(problem="Ann has 3 bags of 4 apples. How many apples?", answer="12",
                                                valid=True))
    anchor.solutions = [Solution(sample(tokenizer, f"The answer is {a}."), a, 1.0) for a in ("7", "7", "12")]
    selfplay = step(tokenizer, student_samples=3)
    with Verifier(5.0) as verifier:
        selfplay.verifier = verifier
        played = selfplay.judge_round(0, Generated([], [], 0, {}, [anchor]), PhaseTimer())
    assert [s.correct for s in anchor.solutions] == [False, False, True]
    assert [r.advantage > 0 for r in played.rows.rows] == [False, False, True]


@pytest.mark.parametrize("check, check_givens, reference, correct", [
    (False, False, "22", [True] * 5 + [False] * 5),  # five agree on a false subtraction: the majority
    (True, False, "400", [False] * 7 + [True] * 3),  # only solutions whose arithmetic holds count
    (True, True, "43", [False] * 5 + [True, True] + [False] * 3),  # ... and that use every given
])
def test_the_arithmetic_checks_count_only_answers_whose_written_arithmetic_holds_and_uses_the_givens(
        tokenizer, check, check_givens, reference, correct):
    from selfplay.roles import read_answer
    from selfplay.verify import Verifier

    texts = ["Kira has 40 - 3 = 22 balloons.\nTherefore, the final answer is: $\\boxed{22}$"] * 5 + [
        "Kira has 40 + 3 = 43 balloons.\nTherefore, the final answer is: $\\boxed{43}$"] * 2 + [
        "Kira has 40 balloons, so 40 * 10 = 400.\nTherefore, the final answer is: $\\boxed{400}$"] * 3
    c = candidate(tokenizer, 0, "<problem>Kira has 40 balloons and finds 3 more. How many now?</problem>", novelty=0.3)
    for text in texts:
        read = read_answer(text, c.problem.problem)
        c.solutions.append(Solution(sample(tokenizer, text), read.answer, read.format_score, read.arithmetic_holds,
                                    read.uses_givens))
    selfplay = step(tokenizer, student_samples=10, arithmetic_check=check, arithmetic_uses_givens=check_givens)
    with Verifier(5.0) as verifier:
        selfplay.verifier = verifier
        selfplay.judge([c])
    selfplay.score([c])
    assert (c.reference, [s.correct for s in c.solutions]) == (reference, correct)
    assert c.solve_rate == sum(correct) / 10
    metrics = step_metrics(selfplay, [c])  # logged whether the checks are on or not
    assert metrics["student/arithmetic_holds"] == 5 / 10
    assert metrics["student/arithmetic_uses_givens"] == 2 / 10


def test_each_configured_weight_weighs_its_own_term(tokenizer):
    """Distinct weights, so that a weight wired to another term changes the rewards."""
    text = "<problem>Ann has 3 bags of 4 apples. How many apples?</problem><concepts>multiplication</concepts>"
    c = candidate(tokenizer, 0, text, [("12", True), ("7", False)], 0.5, 0.3)
    weights = dict(w_solvability=2.0, w_novelty=3.0, w_teacher_format=5.0, w_length=7.0, w_correct=11.0,
                   w_student_format=13.0)
    step(tokenizer, length_cap=100, **weights).score([c])
    t = c.terms
    assert c.reward == pytest.approx(2 * t.solvability + 3 * t.novelty + 5 * t.format + 7 * t.length)
    assert min(t.solvability, t.novelty, t.format, t.length) > 0
    right, wrong = c.solutions
    assert (right.reward, wrong.reward) == (pytest.approx(11 + 13 * 1.0), pytest.approx(13 * 1.0))
