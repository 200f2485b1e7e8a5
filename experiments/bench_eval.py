"""Problems per second of the evaluator for the embedded model on CPU.

    python experiments/bench_eval.py [--bench mawps_singleop] [--limit 16] [--n 4] [--max-new-tokens 256]

Last line: one JSON object (problems/s, samples/s, generated tokens/s, mean@n and pass@n of the run).
"""

import argparse
import json
import time

from selfplay.eval.evaluate import EvalSettings, benchmark_summary, evaluate_model
from selfplay.verify import Verifier


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--bench", default="mawps_singleop")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    settings = EvalSettings(args.bench, n=args.n, limit=args.limit, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size)
    with Verifier() as verifier:
        evaluate_model(args.model, EvalSettings(args.bench, n=1, limit=1, max_new_tokens=8), verifier)  # warm-up
        start = time.perf_counter()
        results = evaluate_model(args.model, settings, verifier)
        seconds = time.perf_counter() - start
    problems = [r for rs in results.values() for r in rs]
    summary = benchmark_summary(problems)
    print(json.dumps({
        "model": args.model, "bench": args.bench, "problems": len(problems), "n": args.n, "seconds": round(seconds, 1),
        "problems_per_s": round(len(problems) / seconds, 3), "samples_per_s": round(len(problems) * args.n / seconds, 2),
        f"mean@{args.n}": summary[f"mean@{args.n}"], f"pass@{args.n}": summary[f"pass@{args.n}"],
    }))


if __name__ == "__main__":
    main()
