"""Export a synthetic curriculum of 1,000,000 problems; print rows per second and peak memory per format.

    python experiments/bench_export.py [--rows 1000000] [--formats jsonl,parquet,hf]

Each format runs in a fresh process so its peak memory (max RSS) is its own. Target: peak under 1 GiB.
Last line: one JSON object.
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONCEPTS = ["addition", "fractions", "ratios", "geometry", "percentages", "algebra", "counting", "time"]


def write_curriculum(run_dir: Path, rows: int) -> None:
    rng = random.Random(0)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("band_low: 0.5\nband_high: 0.9\nmodel: embedded\nembedder: embedded\n")
    (run_dir / "run.json").write_text('{"format_version": 1}')
    with open(run_dir / "curriculum.jsonl", "w") as handle:
        for i in range(rows):
            a, b = rng.randint(1, 999), rng.randint(1, 99)
            record = {
                "step": i // 64 + 1, "group": i % 8, "problem": f"A shop has {a} boxes with {b} pens each. How many pens?",
                "answer": str(a * b), "teacher_answer": str(a * b), "concepts": rng.sample(CONCEPTS, 2),
                "valid": rng.random() < 0.8, "reason": "", "solve_rate": rng.randint(0, 8) / 8, "novelty": rng.random() / 2,
                "teacher_reward": rng.random(), "student_answers": [str(a * b)] * 8, "student_rewards": [1.1] * 8,
                "in_band": True, "admitted": True, "solution": f"{a} x {b} = {a * b}. \\boxed{{{a * b}}}", "raw": None,
            }
            handle.write(json.dumps(record) + "\n")


def child(run_dir: str, fmt: str, out: str) -> None:
    from selfplay.curriculum.export import ExportFilters, export

    start = time.perf_counter()
    summary = export(run_dir, out, fmt, "rl", ExportFilters(min_solve_rate=0.0, max_solve_rate=1.0))
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": summary.rows, "seconds": round(seconds, 1), "rows_per_s": round(summary.rows / seconds),
                      "peak_rss_mib": round(peak_mib)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", default="jsonl,parquet,hf")
    parser.add_argument("--child", nargs=3, metavar=("RUN_DIR", "FORMAT", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        write_curriculum(run_dir, args.rows)
        print(f"wrote {args.rows} records ({(run_dir / 'curriculum.jsonl').stat().st_size >> 20} MiB) "
              f"in {time.perf_counter() - start:.0f}s", file=sys.stderr)
        results = {"curriculum_rows": args.rows}
        for fmt in args.formats.split(","):
            out = Path(tmp) / f"export.{fmt}"
            line = subprocess.run([sys.executable, __file__, "--child", str(run_dir), fmt, str(out)],
                                  check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results[fmt] = json.loads(line)
            print(f"{fmt}: {results[fmt]}", file=sys.stderr)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
