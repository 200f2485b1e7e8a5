"""How often the majority reference is right, on problems whose answer is known (issue 11: the missing signal).

    python experiments/reference_reliability.py EVAL_DIR [--config experiments/learn-cpu.yaml] [--model SPEC]

EVAL_DIR is a `selfplay eval` output. Each problem's sampled answers are judged as a self-play step judges a
teacher's problem in `majority` mode (`verify.judge_all`), then the reference it picked is checked against the
benchmark's gold answer. Evaluate with the run's student settings (`--n 8 --temperature 0.7 --max-new-tokens 160`
for the recipe) so that the answers are the ones a step would judge.

Per solve-rate value (the share of samples that agree with the majority): problems, the share whose majority is
right; and for each value of the confidence gate (`--gates`, the config's `min_majority_share`), over the problems
the recipe's band (`band_low`-`band_high` of --config) then pays for: how many, the share whose majority is right,
how many of the solutions the step rewards as correct are correct, and how many of the correct ones it rewards.
Evaluating the shipped probe (`--bench seeds/probe.jsonl --question-field problem --answer-field answer`) measures
a run's checkpoint on the problems its probe uses; `--arithmetic-check` and `--arithmetic-uses-givens` judge as a
run with those keys does.
Last line: one JSON object.
"""

import argparse
import json
from collections import Counter
from pathlib import Path

from selfplay.config import parse_config
from selfplay.files import read_jsonl
from selfplay.rewards import band_pays, confident
from selfplay.verify import Verifier, judge_all
from selfplay.verify.arithmetic import arithmetic_holds, counted_answer, uses_givens


def reliability(rows: list[dict], band_low: float, band_high: float, gates: list[float], equal_many) -> dict:
    verdicts = judge_all([(row["answers"], None) for row in rows], "majority", equal_many)
    answered = [(row, v) for row, v in zip(rows, verdicts) if v.reference is not None]
    right = equal_many([(row["gold"], v.reference) for row, v in answered])
    by_rate: dict[float, Counter] = {}
    for (row, v), reference_right in zip(answered, right):
        counts = by_rate.setdefault(v.solve_rate, Counter())
        counts["problems"] += 1
        counts["majority_right"] += reference_right
    return {
        "problems": len(rows),
        "no_answer": len(rows) - len(answered),
        "by_solve_rate": {f"{rate:.3f}": {"problems": c["problems"], "majority_right": c["majority_right"] / c["problems"]}
                          for rate, c in sorted(by_rate.items())},
        # the confidence gate (min_majority_share) at each value: what the band then pays for
        "gates": {f"{gate:.3f}": paid_for(answered, right, band_low, band_high, gate) for gate in gates},
        "accuracy": sum(sum(row["correct"]) for row in rows) / max(1, sum(len(row["correct"]) for row in rows)),
    }


def paid_for(answered: list, right: list[bool], band_low: float, band_high: float, gate: float) -> dict:
    """Over the problems the band pays for (in the band, and a majority share of at least `gate`): how many, the
    share whose majority is right, how many of the solutions rewarded as correct are correct, and how many of the
    correct ones are rewarded."""
    problems = majority_right = rewarded = rewarded_correct = correct = 0
    for (row, v), reference_right in zip(answered, right):
        if not band_pays(v.solve_rate, band_low, band_high, repeat=False, trusted=confident(v.solve_rate, gate)):
            continue
        problems += 1
        majority_right += reference_right
        rewarded += sum(v.correct)
        rewarded_correct += sum(a and t for a, t in zip(v.correct, row["correct"]))
        correct += sum(row["correct"])
    return {"in_band_problems": problems, "in_band_majority_right": majority_right / max(1, problems),
            "in_band_rewarded_precision": rewarded_correct / max(1, rewarded),
            "in_band_correct_recall": rewarded_correct / max(1, correct)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", type=Path)
    parser.add_argument("--config", default="experiments/learn-cpu.yaml", help="The run's config: its band.")
    parser.add_argument("--model", help="Which model of the evaluation (default: the last in per_problem.jsonl).")
    parser.add_argument("--arithmetic-check", action="store_true",
                        help="Judge as a run with arithmetic_check does: an answer counts only where the arithmetic "
                             "its solution writes holds.")
    parser.add_argument("--arithmetic-uses-givens", action="store_true",
                        help="With --arithmetic-check: the arithmetic must also use every number the problem states.")
    parser.add_argument("--gates", default="0,0.375,0.5,0.625",
                        help="Values of the confidence gate (min_majority_share) to measure, comma-separated.")
    args = parser.parse_args()
    config = parse_config(args.config, [])
    rows = list(read_jsonl(args.eval_dir / "per_problem.jsonl"))
    model = args.model or rows[-1]["model"]
    if args.arithmetic_uses_givens and not args.arithmetic_check:
        parser.error("--arithmetic-uses-givens refines --arithmetic-check: give both")
    if args.arithmetic_check:
        rows = [row | {"answers": [counted_answer(a, arithmetic_holds(text, a), uses_givens(text, row["prompt"]),
                                                  check=True, check_givens=args.arithmetic_uses_givens)
                                   for text, a in zip(row["samples"], row["answers"])]} for row in rows]
    with Verifier() as verifier:
        result = {"model": model, "band": [config.band_low, config.band_high]} | reliability(
            [row for row in rows if row["model"] == model], config.band_low, config.band_high,
            [float(g) for g in args.gates.split(",")], verifier.equal_many)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
