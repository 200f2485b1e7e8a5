"""Training rows of a step (train/rows.py): role-specific advantages, dropped groups, the 'variance' selection."""

import math

import pytest

from selfplay.config import SelfPlayConfig
from selfplay.train.rows import Scored, role_rows, selected_groups, step_rows, teacher_group_scores


def scored(group, reward, completion=(5, 6)):
    return Scored(group, [1, 2], list(completion), [-0.5] * len(completion), reward)


def test_advantages_are_normalised_within_each_group_and_flat_groups_are_dropped():
    items = [scored("a", 1.0), scored("a", 0.0), scored("b", 0.5), scored("b", 0.5)]
    rows, groups = role_rows("teacher", items, normalize=True, eps=1e-4)
    std = math.sqrt(0.5)  # unbiased std of (1, 0)
    assert [r.advantage for r in rows] == pytest.approx([0.5 / (std + 1e-4), -0.5 / (std + 1e-4)])
    assert groups == 1 and {r.role for r in rows} == {"teacher"}
    assert [r.completion_ids for r in rows] == [[5, 6], [5, 6]] and rows[0].prompt_ids == [1, 2]
    assert rows[0].sampler_logprobs == [-0.5, -0.5]


def test_centred_only_without_normalisation_and_empty_completions_dropped():
    items = [scored(0, 3.0), scored(0, 1.0, completion=())]
    rows, groups = role_rows("student", items, normalize=False, eps=1e-4)
    assert [r.advantage for r in rows] == [1.0] and groups == 1  # the empty completion has nothing to train


def test_chosen_groups_restrict_the_rows():
    items = [scored(0, 1.0), scored(0, 0.0), scored(1, 2.0), scored(1, 0.0)]
    rows, groups = role_rows("student", items, True, 1e-4, chosen={1})
    assert groups == 1 and len(rows) == 2 and rows[0].advantage > 0


def test_variance_selection_ranks_groups_with_signal_by_the_given_scores():
    items = [scored(0, 1.0), scored(0, 0.9), scored(1, 1.0), scored(1, 0.0), scored(2, 0.3), scored(2, 0.3)]
    assert selected_groups(items, 1, {0: 5.0, 1: 1.0, 2: 9.0}) == {0}  # 2 ranks higher but has no signal
    assert selected_groups(items, 5, {0: 5.0, 1: 1.0, 2: 9.0}) == {0, 1}


def test_teacher_groups_rank_by_the_population_variance_of_their_problems_scores():
    # problems 0, 1 from teacher group "a" (c = 0.2, 1.0); problems 2, 3 from "b" (c = 0.5, 0.6); "c" has none
    scores = teacher_group_scores({0: 0.2, 1: 1.0, 2: 0.5, 3: 0.6}, {0: "a", 1: "a", 2: "b", 3: "b"}, ["a", "b", "c"])
    assert scores == pytest.approx({"a": 0.16, "b": 0.0025, "c": -1.0})  # population (not sample) variance


def test_step_rows_keeps_teacher_rows_first_and_counts_groups_per_role():
    teacher = [scored(0, 1.0), scored(0, 0.0), scored(1, 0.2), scored(1, 0.8)]
    student = [scored(0, 1.0), scored(0, 0.0), scored(3, 1.0), scored(3, 1.0)]
    problems = {0: 0.1, 3: 0.9}  # problem 0 came from teacher group 1, problem 3 from group 0 (one problem: var 0)
    everything = step_rows(teacher, student, SelfPlayConfig(), problems, {0: 1, 3: 0})
    assert [r.role for r in everything.rows] == ["teacher"] * 4 + ["student"] * 2
    assert everything.groups_trained == {"teacher": 2, "student": 1}
    reference = step_rows(teacher, student, SelfPlayConfig(group_selection="variance"), {0: 0.1, 3: 0.9, 4: 0.5},
                          {0: 1, 3: 0, 4: 1})
    # teacher: group 1's problems' scores (0.1, 0.5) vary, group 0's single one does not, whatever the rewards'
    # spread; student: only problem 0 has signal
    assert reference.groups_trained == {"teacher": 1, "student": 1}
    assert [r.advantage > 0 for r in reference.rows if r.role == "teacher"] == [False, True]


def test_an_untrained_teacher_gives_no_rows_and_leaves_the_students_rows_as_they_were():
    teacher = [scored(0, 1.0), scored(0, 0.0)]
    student = [scored(0, 1.0), scored(0, 0.0), scored(3, 1.0), scored(3, 0.0)]
    both = step_rows(teacher, student, SelfPlayConfig(), {0: 0.1, 3: 0.9}, {0: 0, 3: 0})
    students_only = step_rows(teacher, student, SelfPlayConfig(train_teacher=False), {0: 0.1, 3: 0.9}, {0: 0, 3: 0})
    assert students_only.groups_trained == {"teacher": 0, "student": 2}
    assert students_only.rows == [r for r in both.rows if r.role == "student"]
