"""Judging one problem's student answers: its reference answer, which answers match it, and the solve rate.

The reference is, by `reference_answer` mode, the students' majority answer, the teacher's claimed answer, the
output of the teacher's program (program mode puts that output in the claim before judging), or the answer that
wins on the problem and on a restatement of it (`judge_routes`). Pure given an
equivalence checker `equal_many(pairs) -> verdicts`: the run passes the guarded `Verifier.equal_many`, tests may
pass anything with the same contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from selfplay.verify.answers import cluster_answers

EqualMany = Callable[[list[tuple[str, str]]], list[bool]]


@dataclass(frozen=True)
class Judgement:
    reference: str | None  # the answer correctness was judged against (None: no student gave one, majority mode)
    correct: tuple[bool, ...]  # per student answer, in order

    @property
    def solve_rate(self) -> float | None:
        return solve_rate(self.correct)


def solve_rate(correct: Sequence[bool]) -> float | None:
    """Share of all n solutions that are correct. Unparseable answers count as wrong (the reference dropped them
    from the denominator, so 1 valid answer out of 8 looked like a solve rate of 1)."""
    return sum(correct) / len(correct) if correct else None


def majority_class(classes: Sequence[int | None]) -> int | None:
    """The largest answer class; ties go to the class that appeared first. None if no answer was given."""
    counts: dict[int, int] = {}
    for c in classes:
        if c is not None:
            counts[c] = counts.get(c, 0) + 1
    if not counts:
        return None
    return max(counts, key=lambda c: (counts[c], -c))


def judge(answers: Sequence[str | None], mode: str, claimed: str | None, equal_many: EqualMany) -> Judgement:
    """`answers`: each solution's final answer (None: it gave none). `claimed`: the teacher's (or its program's)
    answer, used by the 'teacher' and 'program' modes."""
    if mode == "majority":
        classes = cluster_answers(answers, equal_many)
        top = majority_class(classes)
        correct = tuple(top is not None and k == top for k in classes)
        return Judgement(answers[classes.index(top)] if top is not None else None, correct)
    given = [i for i, a in enumerate(answers) if a is not None]
    verdicts = dict(zip(given, equal_many([(claimed, answers[i]) for i in given])))
    return Judgement(claimed, tuple(verdicts.get(i, False) for i in range(len(answers))))


def judge_all(problems: Sequence[tuple[Sequence[str | None], str | None]], mode: str,
              equal_many: EqualMany) -> list[Judgement]:
    """`judge` for every (answers, claimed) of a step with one `equal_many` call, so the guarded checker spreads
    all the step's pairs over its workers (problem by problem, it got a handful at a time and sat idle). Which
    pairs `judge` asks for never depends on the verdicts, so a first pass records them and a second answers."""
    asked: list[tuple[str, str]] = []

    def record(pairs: list[tuple[str, str]]) -> list[bool]:
        asked.extend(pairs)
        return [False] * len(pairs)

    for answers, claimed in problems:
        judge(answers, mode, claimed, record)
    distinct = list(dict.fromkeys(asked))
    verdicts = dict(zip(distinct, equal_many(distinct) if distinct else []))
    return [judge(answers, mode, claimed, lambda pairs: [verdicts[pair] for pair in pairs])
            for answers, claimed in problems]


def judge_routes(problems: Sequence[tuple[Sequence[str | None], Sequence[str | None]]],
                 equal_many: EqualMany) -> list[Judgement]:
    """Two-route agreement (`reference_answer: two_route`, after Self-Harmony): each problem's `(answers,
    restated_answers)`, the students' answers to it and to a restatement of it. The reference is the answer that
    wins on both routes: the majority of the first, when the majority of the second is the same answer; else there
    is none, and no solution is correct. Agreeing twice, in other words, is harder to do by accident."""
    first = judge_all([(answers, None) for answers, _ in problems], "majority", equal_many)
    second = judge_all([(restated, None) for _, restated in problems], "majority", equal_many)
    pairs = [(f.reference, s.reference) for f, s in zip(first, second) if f.reference and s.reference]
    same = dict(zip(pairs, equal_many(pairs))) if pairs else {}
    return [f if f.reference and s.reference and same[(f.reference, s.reference)]
            else Judgement(None, tuple(False for _ in f.correct)) for f, s in zip(first, second)]
