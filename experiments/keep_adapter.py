"""Keep a run's final LoRA adapter beside its results, in bfloat16, as a checkpoint `selfplay eval` reads.

    python experiments/keep_adapter.py RUN_DIR OUT_DIR

OUT_DIR gets the newest checkpoint's `state.json` and its adapter (config, and weights cast to bfloat16: half the
size, a few MB), so that it can be evaluated again on any benchmark without the run:

    selfplay eval --model embedded --compare OUT_DIR --bench gsm8k
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from peft.utils import SAFETENSORS_WEIGHTS_NAME as WEIGHTS
from safetensors.torch import load_file, save_file

from selfplay.rundir import ADAPTER, STATE, find_checkpoint


def keep_adapter(run_dir: Path, out: Path) -> Path:
    checkpoint = find_checkpoint(run_dir)
    if checkpoint is None or not checkpoint.is_lora:
        raise SystemExit(f"{run_dir}: not a run directory or checkpoint with a LoRA adapter")
    source, target = checkpoint.path / ADAPTER, out / ADAPTER
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(checkpoint.path / STATE, out / STATE)
    shutil.copy2(source / "adapter_config.json", target / "adapter_config.json")
    weights = {name: tensor.to(torch.bfloat16) for name, tensor in load_file(source / WEIGHTS).items()}
    save_file(weights, target / WEIGHTS)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    out = keep_adapter(args.run_dir, args.out)
    state = json.loads((out / STATE).read_text())
    print(json.dumps({"out": str(out), "step": state["step"], "base_model": state["base_model"],
                      "bytes": (out / ADAPTER / WEIGHTS).stat().st_size}))


if __name__ == "__main__":
    main()
