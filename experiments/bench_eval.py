"""Problems per second of the evaluator on each generation backend (embedded model, CPU).

    python experiments/bench_eval.py [--bench mawps_singleop] [--limit 24] [--n 4] [--max-new-tokens 256]

Per backend: the model and engine are built once (`start_seconds`), then the same problems are evaluated and
timed. Last line: one JSON object with problems/s and samples/s per backend, `backend_speedup`, mean@n and
pass@n per backend (sampling differs between engines, so these differ by chance), and the projected minutes for
all four MAWPS sets (2,061 problems) at the measured rate.
"""

import argparse
import json
import time

from selfplay.eval.benchmarks import load_benchmark, resolve_benchmarks_dir
from selfplay.eval.evaluate import EvalSettings, benchmark_summary, evaluate_items
from selfplay.policy import engine_path, load_policy, make_backend
from selfplay.roles import PromptTemplate
from selfplay.verify import Verifier

MAWPS_PROBLEMS = 2061


def measure(backend_kind: str, args, verifier: Verifier) -> dict:
    settings = EvalSettings(bench=args.bench, n=args.n, limit=args.limit, max_new_tokens=args.max_new_tokens,
                            generation_backend=backend_kind)
    start = time.perf_counter()
    model, tokenizer = load_policy(args.model)
    backend = make_backend(settings, model, tokenizer, engine_path(args.model), settings.temperature, settings.top_p,
                           settings.batch_size, settings.seed)
    started = time.perf_counter() - start
    items = load_benchmark(args.bench, resolve_benchmarks_dir(settings.benchmarks_dir), limit=args.limit)
    template = PromptTemplate.load(settings.template)
    try:
        start = time.perf_counter()
        results = evaluate_items(args.bench, items, backend, tokenizer, template, verifier, args.n, args.max_new_tokens)
        seconds = time.perf_counter() - start
    finally:
        backend.close()
    summary = benchmark_summary(results)
    rate = len(results) / seconds
    return {"start_seconds": round(started, 1), "seconds": round(seconds, 1), "problems_per_s": round(rate, 3),
            "samples_per_s": round(rate * args.n, 2), f"mean@{args.n}": summary[f"mean@{args.n}"],
            f"pass@{args.n}": summary[f"pass@{args.n}"], "full_mawps_minutes": round(MAWPS_PROBLEMS / rate / 60, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--bench", default="mawps_singleop")
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--backends", default="transformers,vllm")
    args = parser.parse_args()
    results = {}
    with Verifier() as verifier:
        for kind in args.backends.split(","):
            results[kind] = measure(kind, args, verifier)
            print(kind, json.dumps(results[kind]), flush=True)
    summary = {"model": args.model, "bench": args.bench, "problems": args.limit, "n": args.n, "backends": results}
    if {"vllm", "transformers"} <= set(results):
        summary["backend_speedup"] = round(results["vllm"]["problems_per_s"] / results["transformers"]["problems_per_s"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
