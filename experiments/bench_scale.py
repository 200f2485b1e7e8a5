"""Data-parallel scaling of the self-play step: the same run at 1 and at 2 processes.

    python experiments/bench_scale.py [--config experiments/cpu-smoke.yaml] [--steps 2] [--warmup 1] [--processes 1,2]

Each process count gets a fresh run through `selfplay run --num-processes N` (the launcher a user runs), of
`--warmup` + `--steps` steps; the measured steps' seconds come from metrics.jsonl, and the samples they generated
(teacher completions and student solutions) from curriculum.jsonl. The last line printed is one JSON object:
`step_seconds` and `samples_per_s` per process count, and `scaling_efficiency` = samples/s at 2 processes over
2 x samples/s at 1. On a 2-core machine two processes share the cores that one process already used, so the
figure measures the cost of the collectives and the duplicated work, not a speedup; on N GPUs it is the speedup.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from selfplay.files import read_jsonl


def measure(config: str, processes: int, warmup: int, steps: int, out: Path, rest: list[str]) -> dict:
    command = [sys.executable, "-m", "selfplay", "--log-level", "WARNING", "run", "--config", config,
               "--num-processes", str(processes), "--output-dir", str(out), "--max-steps", str(warmup + steps), *rest]
    subprocess.run(command, check=True)
    measured = [m for m in read_jsonl(out / "metrics.jsonl") if m["step"] > warmup]
    samples = sum(1 + len(r["student_answers"]) for r in read_jsonl(out / "curriculum.jsonl") if r["step"] > warmup)
    seconds = sum(m["time/step"] for m in measured)
    return {"step_seconds": round(seconds / len(measured), 2), "samples_per_s": round(samples / seconds, 3),
            "world_size": measured[0]["world_size"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="experiments/cpu-smoke.yaml")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--processes", default="1,2")
    args, rest = parser.parse_known_args()
    counts = [int(n) for n in args.processes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        runs = {n: measure(args.config, n, args.warmup, args.steps, Path(folder) / f"p{n}", rest) for n in counts}
    result = {"config": args.config, "steps": args.steps, **{f"processes_{n}": r for n, r in runs.items()}}
    if 1 in runs and 2 in runs:
        result["scaling_efficiency"] = round(runs[2]["samples_per_s"] / (2 * runs[1]["samples_per_s"]), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
