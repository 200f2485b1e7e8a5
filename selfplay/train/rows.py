"""The training rows of one step: every completion with its role-specific advantage (the paper's core idea),
groups without signal dropped, and optionally the reference's selection of a few groups per role.

A group is the set of completions that share a baseline: for the teacher, the completions of one teacher prompt;
for the student, the solutions of one problem. Each role is normalised only within its own groups.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from selfplay.config import SelfPlayConfig
from selfplay.train.advantages import group_advantages, group_stats, top_groups
from selfplay.train.updater import TrainRow


@dataclass(frozen=True)
class Scored:
    """One completion, the reward it earned, and the group whose mean is its baseline."""

    group: Hashable
    prompt_ids: list[int]
    completion_ids: list[int]
    sampler_logprobs: list[float]
    reward: float
    loss_mask: list[bool] | None = None  # per completion token; None: every token is trained
    finished: bool = True  # ended with end-of-sequence (False: cut at the token limit)


@dataclass(frozen=True)
class StepRows:
    rows: list[TrainRow]  # teacher rows first, then student rows, each in completion order (per round)
    groups_trained: dict[str, int]  # role -> groups that contributed rows

    @classmethod
    def join(cls, parts: Sequence[StepRows]) -> StepRows:
        """The rows of a step's rounds, as one batch."""
        return cls([row for part in parts for row in part.rows],
                   {role: sum(part.groups_trained[role] for part in parts) for role in ("teacher", "student")})


def selected_groups(scored: Sequence[Scored], count: int, scores: dict[Hashable, float]) -> set[Hashable]:
    """The reference's 'variance' selection: the `count` groups with signal that rank highest by `scores`."""
    return top_groups(group_stats([s.reward for s in scored], [s.group for s in scored]), scores, count)


def teacher_group_scores(problem_scores: dict[Hashable, float], problem_groups: dict[Hashable, Hashable],
                         groups: Sequence[Hashable]) -> dict[Hashable, float]:
    """The reference's teacher ranking: per teacher group, the population variance of its problems' selection
    scores c = solvability + novelty (defined for valid problems only); -1 for a group with none."""
    values: dict[Hashable, list[float]] = {g: [] for g in groups}
    for problem, score in problem_scores.items():
        values[problem_groups[problem]].append(score)
    return {g: float(np.var(v)) if v else -1.0 for g, v in values.items()}


def role_rows(role: str, scored: Sequence[Scored], normalize: bool, eps: float,
              chosen: set[Hashable] | None = None, mask_truncated: bool = False) -> tuple[list[TrainRow], int]:
    """Rows of one role with group-normalised advantages; zero-variance groups (and, when `chosen` is given,
    groups outside it) are dropped, as are empty completions. With `mask_truncated`, a completion cut at its
    token limit stays a row (its group's baseline and the loss's row counts include it) with no token trained.
    Returns (rows, groups kept)."""
    advantages, keep = group_advantages([s.reward for s in scored], [s.group for s in scored], normalize, eps)
    if chosen is not None:
        keep = [k and s.group in chosen for k, s in zip(keep, scored)]
    rows = [TrainRow(s.prompt_ids, s.completion_ids, a, role, s.sampler_logprobs,
                     [False] * len(s.completion_ids) if mask_truncated and not s.finished else s.loss_mask)
            for s, a, k in zip(scored, advantages, keep) if k and s.completion_ids]
    return rows, len({s.group for s, k in zip(scored, keep) if k})


def step_rows(teacher: Sequence[Scored], student: Sequence[Scored], config: SelfPlayConfig,
              problem_scores: dict[Hashable, float], problem_groups: dict[Hashable, Hashable],
              anchors: Sequence[Scored] = ()) -> StepRows:
    """`problem_scores`: per student group (problem), c = solvability + novelty, which 'variance' ranks problems
    by; `problem_groups`: the teacher group each problem came from. `anchors`: students' rows on known-answer
    problems (anchor_share), trained whatever the selection."""
    chosen_teacher = chosen_student = None
    if config.group_selection == "variance":
        teacher_scores = teacher_group_scores(problem_scores, problem_groups, [s.group for s in teacher])
        chosen_teacher = selected_groups(teacher, config.teacher_groups_per_step, teacher_scores)
        chosen_student = selected_groups(student, config.student_groups_per_step, problem_scores)
    norm, eps, masked = config.normalize_advantages, config.advantage_eps, config.mask_truncated_completions
    teacher_rows, teacher_groups = role_rows("teacher", teacher, norm, eps, chosen_teacher, masked) \
        if config.train_teacher else ([], 0)
    student_rows, student_groups = role_rows("student", student, norm, eps, chosen_student, masked)
    anchor_rows, anchor_groups = role_rows("student", anchors, norm, eps, None, masked)
    return StepRows(teacher_rows + student_rows + anchor_rows,
                    {"teacher": teacher_groups, "student": student_groups + anchor_groups})
