#!/usr/bin/env bash
# Issue 11's result: self-play on the embedded model (experiments/learn-cpu.yaml), the same budget with the
# teacher role untrained (the control), then the base model against both final checkpoints on all of MAWPS and
# the first 500 GSM8K problems (n=4, T=0.6, top-p 0.95; paired bootstrap intervals; the base evaluated once).
# MAWPS at 256 solution tokens, as the in-run evaluation: its solutions take a few lines, and 512 would double
# the time spent on rambling (about 40 minutes a model on 2 cores at 256).
# Stopped? Run it again: each run resumes where its last checkpoint left it (a finished run stops at once).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/learn-cpu}
results=experiments/results/learn-cpu
mkdir -p "$results"
for variant in selfplay control; do
  extra=(); [ "$variant" = control ] && extra=(--train-teacher false)
  resume=(); [ -f "$out/$variant/run.json" ] && resume=(--resume)
  .venv/bin/selfplay run --config experiments/learn-cpu.yaml --output-dir "$out/$variant" "${extra[@]}" "${resume[@]}"
  .venv/bin/selfplay report "$out/$variant" --out "$results/$variant-report"
  .venv/bin/python experiments/keep_adapter.py "$out/$variant" "$results/$variant-checkpoint"  # committed, bf16
done
.venv/bin/selfplay eval --model embedded --compare "$out/selfplay" "$out/control" --bench mawps --n 4 \
    --max-new-tokens 256 --out "$results/mawps"
.venv/bin/selfplay eval --model embedded --compare "$out/selfplay" "$out/control" --bench gsm8k --limit 500 --n 4 \
    --out "$results/gsm8k"
