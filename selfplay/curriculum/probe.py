"""The known-answer probe: problems whose answers are known go through a step's student path (student prompt,
samples, training temperature and token limit, the run's reference and gates) and are never trained on, so a run
measures whether its rewards are right, not only whether its students agree.

The shipped probe (`config.PROBE_FILE`, seeds/probe.jsonl) is written by `write_problems`: one- and two-step arithmetic
word problems of the kind the teacher writes, with exact integer answers, the same for a seed on every machine.
`probe_figures` turns judged probe problems into the figures a run logs (pure).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

PROBE_SIZE, PROBE_SEED = 240, 20261206

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonah", "Kira", "Leo", "Maya",
         "Nils", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara"]
THINGS = ["marbles", "pencils", "acorns", "apples", "shells", "stickers", "coins", "books", "cards", "beads",
          "cookies", "balloons", "buttons", "leaves", "rocks", "crayons"]
CONTAINERS = ["boxes", "bags", "jars", "baskets", "packs", "trays", "shelves", "crates"]

# (text, answer): {name}, {things}, {boxes} are words; x, y, z the numbers. An answer of None rejects the draw (a
# negative count, an inexact division) and the next one is tried.
TEMPLATES = [
    ("{name} has {x} {things}. {name} finds {y} more {things}. How many {things} does {name} have now?",
     lambda x, y, z: x + y),
    ("{name} had {x} {things} and gave {y} of them to a friend. How many {things} does {name} have left?",
     lambda x, y, z: x - y if x > y else None),
    ("{name} has {x} {boxes} with {y} {things} in each. How many {things} does {name} have in all?",
     lambda x, y, z: x * y),
    ("{name} shares {x} {things} equally among {y} friends. How many {things} does each friend get?",
     lambda x, y, z: x // y if x % y == 0 else None),
    ("{name} has {x} {things}, buys {y} more, then gives away {z}. How many {things} does {name} have now?",
     lambda x, y, z: x + y - z if x + y > z else None),
    ("{name} fills {x} {boxes} with {y} {things} each and has {z} {things} left over. How many {things} did "
     "{name} start with?", lambda x, y, z: x * y + z),
    ("{name} buys {x} {boxes} with {y} {things} in each and uses {z} of them. How many {things} are left?",
     lambda x, y, z: x * y - z if x * y > z else None),
    ("{name} has {x} {things} and {y} times as many stamps as {things}. How many stamps does {name} have?",
     lambda x, y, z: x * y),
    ("{name} collects {x} {things} on Monday and {y} on Tuesday, then puts them equally into {z} {boxes}. "
     "How many {things} go into each?", lambda x, y, z: (x + y) // z if (x + y) % z == 0 else None),
    ("{name} has {x} {things}, loses {y} of them and then doubles what is left. How many {things} does {name} "
     "have now?", lambda x, y, z: 2 * (x - y) if x > y else None),
]


@dataclass(frozen=True)
class ProbeProblem:
    problem: str
    answer: str


def write_problems(count: int = PROBE_SIZE, seed: int = PROBE_SEED) -> list[ProbeProblem]:
    """`count` distinct problems, the templates in turn; x from 2 to 60, y from 2 to 12, z from 2 to 9."""
    rng = random.Random(seed)
    problems: list[ProbeProblem] = []
    seen: set[str] = set()
    while len(problems) < count:
        text, answer = TEMPLATES[len(problems) % len(TEMPLATES)]
        x, y, z = rng.randint(2, 60), rng.randint(2, 12), rng.randint(2, 9)
        value = answer(x, y, z)
        problem = text.format(name=rng.choice(NAMES), things=rng.choice(THINGS), boxes=rng.choice(CONTAINERS),
                              x=x, y=y, z=z)
        if value is None or value <= 0 or problem in seen:
            continue
        seen.add(problem)
        problems.append(ProbeProblem(problem, str(value)))
    return problems


def load_probe(path: str) -> list:
    """The probe's problems (`SeedProblem`s), every one with its answer: a problem without one names its line."""
    from selfplay.curriculum.seeds import SeedError, SeedIssue, load_seeds

    problems = load_seeds(path)
    missing = [SeedIssue(i + 1, "no answer: a probe problem needs its known answer") for i, p in enumerate(problems)
               if not p.answer]
    if missing:
        raise SeedError(path, missing)
    return problems


@dataclass(frozen=True)
class ProbeJudged:
    """One probe problem after the step's judging, against its known answer."""

    reference_right: bool | None  # the reference the run took equals the known answer (None: no reference)
    band_pays: bool  # the band (and its gates) would reward the teacher for this problem
    right: tuple[bool, ...]  # per solution: its answer equals the known answer
    rewarded: tuple[bool, ...]  # per solution: the run rewards it as correct


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def probe_figures(judged: Sequence[ProbeJudged]) -> dict[str, float | None]:
    """`label_accuracy`: problems whose reference is right, of those with a reference; `in_band_label_accuracy`:
    the same over the problems the band would reward; `reward_precision`: rewarded solutions that are right;
    `reward_recall`: right solutions that are rewarded; `student_accuracy`: solutions that are right. A group that
    agrees on a wrong answer lowers label accuracy and precision; a right minority is not rewarded, so it lowers
    recall and raises nothing else."""
    labelled = [j for j in judged if j.reference_right is not None]
    in_band = [j for j in labelled if j.band_pays]
    pairs = [(right, rewarded) for j in judged for right, rewarded in zip(j.right, j.rewarded)]
    return {
        "label_accuracy": _share(sum(j.reference_right for j in labelled), len(labelled)),
        "in_band_label_accuracy": _share(sum(j.reference_right for j in in_band), len(in_band)),
        "reward_precision": _share(sum(r and w for r, w in pairs), sum(w for _, w in pairs)),
        "reward_recall": _share(sum(r and w for r, w in pairs), sum(r for r, _ in pairs)),
        "student_accuracy": _share(sum(r for r, _ in pairs), len(pairs)),
        "problems": float(len(judged)),
        "in_band_problems": float(len(in_band)),
    }
