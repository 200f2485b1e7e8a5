"""How often the majority reference is right, on problems whose answer is known (issue 11: the missing signal).

    python experiments/reference_reliability.py EVAL_DIR [--config experiments/learn-cpu.yaml] [--model SPEC]

EVAL_DIR is a `selfplay eval` output. Each problem's sampled answers are judged as a self-play step judges a
teacher's problem in `majority` mode (`verify.judge_all`), then the reference it picked is checked against the
benchmark's gold answer. Evaluate with the run's student settings (`--n 8 --temperature 0.7 --max-new-tokens 160`
for the recipe) so that the answers are the ones a step would judge.

Per solve-rate value (the share of samples that agree with the majority): problems, the share whose majority is
right, and in the recipe's band (`band_low`-`band_high` of --config), how many of the solutions the step rewards
as correct are correct, and how many of the correct ones it rewards. Last line: one JSON object.
"""

import argparse
import json
from collections import Counter
from pathlib import Path

from selfplay.config import parse_config
from selfplay.files import read_jsonl
from selfplay.rewards import in_band
from selfplay.verify import Verifier, judge_all


def reliability(rows: list[dict], band_low: float, band_high: float, equal_many) -> dict:
    verdicts = judge_all([(row["answers"], None) for row in rows], "majority", equal_many)
    answered = [(row, v) for row, v in zip(rows, verdicts) if v.reference is not None]
    right = equal_many([(row["gold"], v.reference) for row, v in answered])
    by_rate: dict[float, Counter] = {}
    band = Counter()
    rewarded = rewarded_correct = correct_in_band = 0
    for (row, v), reference_right in zip(answered, right):
        counts = by_rate.setdefault(v.solve_rate, Counter())
        counts["problems"] += 1
        counts["majority_right"] += reference_right
        if in_band(v.solve_rate, band_low, band_high):
            band["problems"] += 1
            band["majority_right"] += reference_right
            rewarded += sum(v.correct)
            rewarded_correct += sum(a and t for a, t in zip(v.correct, row["correct"]))
            correct_in_band += sum(row["correct"])
    return {
        "problems": len(rows),
        "no_answer": len(rows) - len(answered),
        "by_solve_rate": {f"{rate:.3f}": {"problems": c["problems"], "majority_right": c["majority_right"] / c["problems"]}
                          for rate, c in sorted(by_rate.items())},
        "in_band_problems": band["problems"],
        "in_band_majority_right": band["majority_right"] / max(1, band["problems"]),
        "in_band_rewarded_precision": rewarded_correct / max(1, rewarded),
        "in_band_correct_recall": rewarded_correct / max(1, correct_in_band),
        "accuracy": sum(sum(row["correct"]) for row in rows) / max(1, sum(len(row["correct"]) for row in rows)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", type=Path)
    parser.add_argument("--config", default="experiments/learn-cpu.yaml", help="The run's config: its band.")
    parser.add_argument("--model", help="Which model of the evaluation (default: the last in per_problem.jsonl).")
    args = parser.parse_args()
    config = parse_config(args.config, [])
    rows = list(read_jsonl(args.eval_dir / "per_problem.jsonl"))
    model = args.model or rows[-1]["model"]
    with Verifier() as verifier:
        result = {"model": model, "band": [config.band_low, config.band_high]} | reliability(
            [row for row in rows if row["model"] == model], config.band_low, config.band_high, verifier.equal_many)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
