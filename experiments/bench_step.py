"""Time one self-play step on the cpu-smoke config, phase by phase, and compare generation with bare generate.

    python experiments/bench_step.py [--config experiments/cpu-smoke.yaml] [--steps 2] [--warmup 1]

The last line printed is one JSON object: seconds per phase (mean over measured steps, checkpoint included),
`overhead_fraction` (time outside generation, forward and backward, over the step), `gen_tokens_per_s` (our
backend, every decoding slot of every batch) and `bare_generate_tokens_per_s` (plain `model.generate` replayed
on the same batches with the same number of decoding steps, in the same process).
Targets: overhead_fraction < 0.05; gen_tokens_per_s within 10% of bare.
"""

import argparse
import json
import tempfile
import time

import torch

from selfplay.config import parse_config
from selfplay.loop import GENERATION_PHASES, TRAINING_PHASES
from selfplay.runner import build, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="experiments/cpu-smoke.yaml")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    args, rest = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as out:
        config = parse_config(args.config, ["--output-dir", f"{out}/run", "--max-steps", "0", *rest])
        selfplay = build(config, resume=False)
        for _ in range(args.warmup):
            selfplay.run_step()
        selfplay.backend.keep_batch_log = True
        phases: dict[str, float] = {}
        for _ in range(args.steps):
            metrics = selfplay.run_step()
            start = time.perf_counter()
            save_checkpoint(selfplay)
            metrics["time/checkpoint"] = time.perf_counter() - start
            metrics["time/step"] += metrics["time/checkpoint"]
            for key, value in metrics.items():
                if key.startswith("time/"):
                    phases[key[5:]] = phases.get(key[5:], 0.0) + value / args.steps
        selfplay.verifier.close()

        slots = sum(ids.shape[0] * steps for ids, _, steps, _ in selfplay.backend.batch_log)
        generate_seconds = sum(phases.get(p, 0.0) for p in GENERATION_PHASES) * args.steps
        model, tokenizer = selfplay.model, selfplay.tokenizer
        bare_seconds = 0.0
        with torch.no_grad():
            for ids, attention, steps, _ in selfplay.backend.batch_log:
                start = time.perf_counter()
                model.generate(input_ids=ids, attention_mask=attention, do_sample=True, temperature=config.temperature,
                               top_p=config.top_p, top_k=0, max_new_tokens=steps, min_new_tokens=steps,
                               pad_token_id=tokenizer.pad_token_id)
                bare_seconds += time.perf_counter() - start
    work = sum(phases.get(p, 0.0) for p in (*GENERATION_PHASES, *TRAINING_PHASES))
    result = {
        "config": args.config,
        "measured_steps": args.steps,
        "phase_seconds": {k: round(v, 4) for k, v in sorted(phases.items())},
        "overhead_fraction": round((phases["step"] - work) / phases["step"], 4),
        "gen_tokens_per_s": round(slots / generate_seconds, 2),
        "bare_generate_tokens_per_s": round(slots / bare_seconds, 2),
        "generation_vs_bare": round((slots / generate_seconds) / (slots / bare_seconds), 3),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
