"""The self-play step before and after issue 37's changes, and the update alone with each change, in one process.

    python experiments/bench_step.py [--config experiments/cpu-smoke.yaml] [--steps 3] [--warmup 1]

Three fresh runs of the config on the colocated vLLM backend, each `--warmup` steps then `--steps` measured ones,
phase by phase: `before` (today's step: float32 compute, sdpa attention, every row run whole, vLLM uncompiled,
generation and training in turn), `sync` (bfloat16 where the CPU computes in it, eager attention on CPU, each prompt
computed once per micro-batch, vLLM's model compiled once at engine start) and `pipelined` (that, plus
async_generation: the next step written while this one is judged and trained). Then the update alone, on the
rows the `sync` run trained (recorded), from the same starting adapter with each change alone and both.

The last line printed is one JSON object: `step_seconds_before` (today's step), `sync_step_seconds` and
`pipelined_step_seconds` (with the changes), `pipeline_speedup` (sync over pipelined), `step_speedup` (before over
the faster of the two), `update_seconds_before`, `update_seconds_after`, `update_speedup`, `update_seconds_each`
(per change alone), `start_seconds` (each run's set-up, once a run: model, engine and its compilation),
`phase_seconds` per run and `threads`. Targets (issue 37): update_speedup >= 2, step_speedup
>= 2.
"""

import argparse
import copy
import dataclasses
import json
import tempfile
import time

import torch

from selfplay.config import parse_config
from selfplay.policy.loading import pick_attention, pick_dtype
from selfplay.runner import build, save_checkpoint
from selfplay.train.updater import Updater

RUNS = {
    "before": ["--dtype", "float32", "--attention", "sdpa", "--shared-prompt", "false", "--vllm-enforce-eager", "true",
               "--async-generation", "false"],
    "sync": ["--vllm-enforce-eager", "false", "--async-generation", "false"],
    "pipelined": ["--vllm-enforce-eager", "false", "--async-generation", "true"],
}
UPDATES = {  # the update alone: (compute dtype, attention, shared prompt)
    "before": ("float32", "sdpa", False),
    "bfloat16": ("auto", "sdpa", False),
    "eager_attention": ("float32", "auto", False),
    "shared_prompt": ("float32", "sdpa", True),
    "after": ("auto", "auto", True),
}


def measure(config_file: str, out: str, warmup: int, steps: int, flags: list[str], record: list | None) -> dict:
    config = parse_config(config_file, ["--output-dir", out, "--max-steps", "0", "--generation-backend", "vllm",
                                        *flags])
    start = time.perf_counter()
    selfplay = build(config, resume=False)
    engine_start = time.perf_counter() - start  # not in the step: paid once a run (compilation, when on)
    if record is not None:  # keep the rows each update trains on, for the update-alone comparison
        step = selfplay.updater.step
        selfplay.updater.step = lambda rows: record.append(copy.deepcopy(rows)) or step(rows)
    phases: dict[str, float] = {}
    try:
        for _ in range(warmup):
            selfplay.run_step()
        if record is not None:
            record.clear()
            record.append(copy.deepcopy(selfplay.model.state_dict()))  # the adapter the measured updates start from
        for _ in range(steps):
            metrics = selfplay.run_step()
            start = time.perf_counter()
            save_checkpoint(selfplay)
            metrics["time/checkpoint"] = time.perf_counter() - start
            metrics["time/step"] += metrics["time/checkpoint"]
            for key, value in metrics.items():
                if key.startswith("time/"):
                    phases[key[5:]] = phases.get(key[5:], 0.0) + value / steps
    finally:
        selfplay.verifier.close()
        selfplay.backend.close()
    return {"step_seconds": round(phases["step"], 2), "start_seconds": round(engine_start, 1),
            "phase_seconds": {k: round(v, 3) for k, v in sorted(phases.items())},
            "selfplay": selfplay}


def update_seconds(selfplay, start_state: dict, batches: list, dtype: str, attention: str, shared: bool) -> float:
    """The recorded updates, replayed from the same adapter with one compute dtype, attention and prompt sharing."""
    config = dataclasses.replace(selfplay.config, dtype=dtype, attention=attention, shared_prompt=shared)
    compute = pick_dtype(dtype, selfplay.model.device)
    model = copy.deepcopy(selfplay.model)
    model.load_state_dict(start_state)
    model.set_attn_implementation(pick_attention(attention, model.device))
    for parameter in model.parameters():  # LoRA: the frozen base in the compute dtype, the adapter in fp32
        if not parameter.requires_grad:
            parameter.data = parameter.data.to(compute)
    updater = Updater(model, config, selfplay.tokenizer.pad_token_id, compute)
    start = time.perf_counter()
    for rows in batches:
        updater.step(rows)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="experiments/cpu-smoke.yaml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args, rest = parser.parse_known_args()
    results, record = {}, []
    with tempfile.TemporaryDirectory() as out:
        for name, flags in RUNS.items():
            results[name] = measure(args.config, f"{out}/{name}", args.warmup, args.steps, [*flags, *rest],
                                    record if name == "sync" else None)
            print(name, json.dumps({k: v for k, v in results[name].items() if k != "selfplay"}), flush=True)
    start_state, batches = record[0], record[1:]
    each = {name: round(update_seconds(results["sync"]["selfplay"], start_state, batches, *change) / len(batches), 2)
            for name, change in UPDATES.items()}
    print("update seconds per step", json.dumps(each), flush=True)
    seconds = {name: r["step_seconds"] for name, r in results.items()}
    summary = {
        "config": args.config, "measured_steps": args.steps, "threads": torch.get_num_threads(),
        "step_seconds_before": seconds["before"],
        "sync_step_seconds": seconds["sync"],
        "pipelined_step_seconds": seconds["pipelined"],
        "pipeline_speedup": round(seconds["sync"] / seconds["pipelined"], 2),
        "step_speedup": round(seconds["before"] / min(seconds["sync"], seconds["pipelined"]), 2),
        "update_seconds_before": each["before"],
        "update_seconds_after": each["after"],
        "update_speedup": round(each["before"] / each["after"], 2),
        "update_seconds_each": each,
        "start_seconds": {name: r["start_seconds"] for name, r in results.items()},
        "phase_seconds": {name: r["phase_seconds"] for name, r in results.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
