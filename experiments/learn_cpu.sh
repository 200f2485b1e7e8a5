#!/usr/bin/env bash
# Issue 11's result: self-play on the embedded model (experiments/learn-cpu.yaml), the same budget with the
# teacher role untrained (the control), and both final checkpoints compared with the base model on all of MAWPS
# and the first 500 GSM8K problems (n=4, T=0.6, top-p 0.95; paired bootstrap intervals).
# Stopped? Run it again: both runs resume where their last checkpoint left them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/learn-cpu}
results=experiments/results/learn-cpu
mkdir -p "$results"
for variant in selfplay control; do
  extra=(); [ "$variant" = control ] && extra=(--train-teacher false)
  resume=(); [ -f "$out/$variant/run.json" ] && resume=(--resume)
  .venv/bin/selfplay run --config experiments/learn-cpu.yaml --output-dir "$out/$variant" "${extra[@]}" "${resume[@]}"
  .venv/bin/selfplay eval --model "$out/$variant" --compare embedded --bench mawps --n 4 \
      --out "$results/$variant-mawps"
  .venv/bin/selfplay eval --model "$out/$variant" --compare embedded --bench gsm8k --limit 500 --n 4 \
      --out "$results/$variant-gsm8k"
  .venv/bin/selfplay report "$out/$variant" --out "$results/$variant-report"
done
