"""What a run prints, and where everything else goes.

The console shows selfplay's own lines (at --log-level) and other libraries' errors. Every library's INFO lines and
warnings (vLLM's, FAISS's loader, triton's, torch's deprecations, transformers' and vLLM's loading bars) go to the
run's log file (`rundir.LOG`); under --log-level DEBUG they are shown on the console too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str) -> None:
    """Call before vLLM or transformers are imported (they read their settings from the environment then)."""
    quiet = level != "DEBUG"
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM logs through Python's logging, as every library
    if quiet:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars
    logging.captureWarnings(True)  # warnings.warn (torch's, vLLM's deprecations) become records of py.warnings
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter(FORMAT))
    if quiet:
        console.addFilter(lambda record: record.name.startswith("selfplay") or record.levelno >= logging.ERROR)
    root = logging.getLogger()
    root.handlers[:] = [console]
    root.setLevel(logging.DEBUG if not quiet else logging.INFO)
    logging.getLogger("selfplay").setLevel(level)


def show_loading_bars() -> bool:
    """Whether engines should draw their loading bars (they write to the console directly): only when debugging."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def to_file(path: Path) -> logging.Handler:
    """Every record from INFO on, whichever library logs it, appended to `path`; remove the handler when done."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(handler)
    return handler
