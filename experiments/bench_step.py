"""Time the cpu-smoke self-play step on both generation backends, in one process, phase by phase.

    python experiments/bench_step.py [--config experiments/cpu-smoke.yaml] [--steps 3] [--warmup 1] [--backends transformers,vllm]

Per backend: a fresh run, `--warmup` steps, then `--steps` measured steps (checkpoint included). The last line
printed is one JSON object: `<backend>_gen_tokens_per_s` (completion tokens of both roles over generation
seconds), `backend_speedup` (vllm over transformers), `weight_sync_fraction` (vLLM sync seconds over its step
seconds), `step_seconds` and `phase_seconds` per backend, `step_speedup`, and `overhead_fraction` per backend
(time outside generation, forward and backward, over the step; sync counts as overhead).
Targets on 2 cores: backend_speedup >= 5, weight_sync_fraction < 0.05, step_speedup >= 2.5, overhead < 0.05.
"""

import argparse
import json
import tempfile
import time

import torch

from selfplay.config import parse_config
from selfplay.loop import GENERATION_PHASES, TRAINING_PHASES
from selfplay.runner import build, save_checkpoint


def measure(config_file: str, backend: str, out: str, warmup: int, steps: int, rest: list[str]) -> dict:
    config = parse_config(config_file, ["--output-dir", out, "--max-steps", "0", "--generation-backend", backend, *rest])
    selfplay = build(config, resume=False)
    phases: dict[str, float] = {}
    tokens = 0
    try:
        for _ in range(warmup):
            selfplay.run_step()
        for _ in range(steps):
            metrics = selfplay.run_step()
            start = time.perf_counter()
            save_checkpoint(selfplay)
            metrics["time/checkpoint"] = time.perf_counter() - start
            metrics["time/step"] += metrics["time/checkpoint"]
            tokens += metrics.get("teacher/completion_tokens", 0) + metrics.get("student/completion_tokens", 0)
            for key, value in metrics.items():
                if key.startswith("time/"):
                    phases[key[5:]] = phases.get(key[5:], 0.0) + value / steps
    finally:
        selfplay.verifier.close()
        selfplay.backend.close()
    generation = sum(phases.get(p, 0.0) for p in GENERATION_PHASES)
    work = generation + sum(phases.get(p, 0.0) for p in TRAINING_PHASES)
    return {
        "gen_tokens_per_s": round(tokens / steps / generation, 2),
        "step_seconds": round(phases["step"], 2),
        "overhead_fraction": round((phases["step"] - work) / phases["step"], 4),
        "phase_seconds": {k: round(v, 3) for k, v in sorted(phases.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="experiments/cpu-smoke.yaml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--backends", default="transformers,vllm")
    args, rest = parser.parse_known_args()
    results = {}
    with tempfile.TemporaryDirectory() as out:
        for backend in args.backends.split(","):
            results[backend] = measure(args.config, backend, f"{out}/{backend}", args.warmup, args.steps, rest)
            print(backend, json.dumps(results[backend]), flush=True)
    summary = {"config": args.config, "measured_steps": args.steps, "threads": torch.get_num_threads()}
    for backend, figures in results.items():
        summary[f"{backend}_gen_tokens_per_s"] = figures["gen_tokens_per_s"]
    if {"vllm", "transformers"} <= set(results):
        vllm, hf = results["vllm"], results["transformers"]
        summary["backend_speedup"] = round(vllm["gen_tokens_per_s"] / hf["gen_tokens_per_s"], 2)
        summary["step_speedup"] = round(hf["step_seconds"] / vllm["step_seconds"], 2)
        summary["weight_sync_fraction"] = round(vllm["phase_seconds"].get("sync", 0.0) / vllm["step_seconds"], 4)
    summary["step_seconds"] = {b: r["step_seconds"] for b, r in results.items()}
    summary["overhead_fraction"] = {b: r["overhead_fraction"] for b, r in results.items()}
    summary["phase_seconds"] = {b: r["phase_seconds"] for b, r in results.items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
