"""Optional experiment tracking. Weights & Biases runs offline by default (no network needed); the run's
files are the source of truth either way."""

from __future__ import annotations

from pathlib import Path

from selfplay.config import SelfPlayConfig


class Tracker:
    def __init__(self, config: SelfPlayConfig, run_id: str, run_dir: Path, active: bool = True):
        """`active`: False on every rank but the first of a multi-process run (one run, one tracker)."""
        self.run = None
        if not active or config.report_to != "wandb":
            return
        import wandb

        # The run directory's stable id, so a resumed run continues the same W&B run.
        self.run = wandb.init(
            project=config.wandb_project,
            mode=config.wandb_mode,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            config=config.to_dict(),
        )

    def log(self, metrics: dict) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=metrics["step"])

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
