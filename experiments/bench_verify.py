"""Answers checked per second through the guarded verifier vs direct in-process calls.

    python experiments/bench_verify.py [--pairs 3000]

The guard's cost is measured with one worker against one process (same parallelism); the default two
workers are reported too. Target: the guard costs under 20%. Last line: one JSON object.
"""

import argparse
import json
import random
import time

from selfplay.verify import Verifier
from selfplay.verify.answers import equal_many_unguarded


def realistic_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """Gold answers against the forms students write: equal forms, near misses, fractions, expressions."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        a, b = rng.randint(1, 500), rng.randint(2, 12)
        gold = rng.choice([str(a), f"\\frac{{{a}}}{{{b}}}", f"{a}x + {b}", f"\\sqrt{{{b}}}"])
        forms = {str(a): [f"{a}.0", str(a + 1), f"{a * b}/{b}", f"{a:,}"],
                 f"\\frac{{{a}}}{{{b}}}": [f"{a}/{b}", str(round(a / b, 4)), f"\\frac{{{a + 1}}}{{{b}}}"],
                 f"{a}x + {b}": [f"{b} + {a}x", f"{a}*x+{b}", f"{a}x - {b}"],
                 f"\\sqrt{{{b}}}": [f"{b}^{{1/2}}", f"\\sqrt{{{b + 1}}}", str(round(b ** 0.5, 3))]}[gold]
        pairs.append((gold, rng.choice(forms)))
    return pairs


def rate(check, pairs) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    results = check(pairs)
    return len(pairs) / (time.perf_counter() - start), results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3000)
    args = parser.parse_args()
    pairs = realistic_pairs(args.pairs)
    equal_many_unguarded(pairs[:20])  # imports and sympy caches warm
    direct, expected = rate(equal_many_unguarded, pairs)
    figures = {"pairs": len(pairs), "direct_per_s": round(direct, 1)}
    for workers in (1, 2):
        with Verifier(timeout=5.0, workers=workers) as verifier:
            verifier.equal_many(pairs[:40])
            guarded, results = rate(verifier.equal_many, pairs)
        assert results == expected, "guarded and direct verdicts differ"
        figures[f"guarded_{workers}_workers_per_s"] = round(guarded, 1)
    figures["guard_cost_fraction"] = round(1 - figures["guarded_1_workers_per_s"] / direct, 4)
    figures["equal_fraction"] = round(sum(expected) / len(expected), 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
