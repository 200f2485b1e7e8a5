"""`--help` of run, eval and export shows every setting with its help and default, from the dataclasses."""

import dataclasses

import pytest

from selfplay.cli import EvalCommand, main
from selfplay.config import SelfPlayConfig
from selfplay.curriculum.export import ExportFilters, ExportTarget
from selfplay.eval.evaluate import EvalSettings


def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # unwrap the formatter's line breaks


def flags(*settings) -> list[str]:
    return [f"--{f.name.replace('_', '-')}" for kind in settings for f in dataclasses.fields(kind)]


def test_run_help_lists_every_config_key_with_its_default(capsys):
    text = help_text(capsys, "run")
    assert all(flag in text for flag in flags(SelfPlayConfig)), [f for f in flags(SelfPlayConfig) if f not in text]
    assert "--learning-rate LEARNING_RATE AdamW learning rate. (default: 3e-07)" in text
    assert "--student-samples STUDENT_SAMPLES Solutions per valid problem (>= 2). (default: 8)" in text
    assert "--band-low BAND_LOW Lower edge of the learnable solve-rate band. (default: 0.5)" in text
    assert "--config CONFIG" in text and "--resume" in text


def test_eval_and_export_help_come_from_their_settings(capsys):
    text = help_text(capsys, "eval")
    assert all(flag in text for flag in flags(EvalCommand, EvalSettings))
    assert "--n N Samples per problem. (default: 4)" in text and "(default: 0.95)" in text
    text = help_text(capsys, "export")
    assert all(flag in text for flag in flags(ExportTarget, ExportFilters))
    assert "--format {jsonl,parquet,hf} Dataset format. (default: jsonl)" in text


def test_export_refuses_push_without_hf_format(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(tmp_path), "--out", str(tmp_path / "x.jsonl"), "--push-to-hub", "me/set"])
    assert exit_.value.code == 2 and "--push-to-hub needs --format hf" in capsys.readouterr().err


def test_serve_prints_the_vllm_server_command_of_a_runs_settings(capsys):
    """`selfplay serve` runs vLLM's server module with the run's model and engine settings, the RL API's weight
    transfer backend and the sampling log-probs the trainer needs, where vllm_server_url says."""
    code = main(["serve", "--vllm-server-url", "http://127.0.0.1:8123", "--vllm-dtype", "float32", "--seed", "5",
                 "--print"])
    command = capsys.readouterr().out
    assert code == 0 and "vllm.entrypoints.launchers.api_server.entry --model" in command
    for part in ("--port 8123", "--host 127.0.0.1", "--dtype float32", "--seed 5", "--logprobs-mode processed_logprobs",
                 '"backend": "selfplay_gloo"'):
        assert part in command, part


@pytest.mark.slow
def test_a_run_prints_its_progress_and_its_own_lines_and_logs_the_libraries_to_run_log(tmp_path):
    """Quiet by default: no FAISS loader, vLLM or triton lines on the console; they are in the run's run.log."""
    import subprocess
    import sys

    import yaml

    from tests.conftest import TINY

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY, "max_steps": 1}))
    done = subprocess.run([sys.executable, "-m", "selfplay", "run", "--config", str(config), "--output-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    console = done.stdout + done.stderr
    for noise in ("faiss.loader", "vllm", "Triton", "FutureWarning", "Loading weights"):
        assert noise not in console, noise
    assert "run directory:" in done.stdout and "step/s" in done.stderr  # the result and the progress bar
    log = (tmp_path / "run" / "run.log").read_text()
    assert "vllm" in log and "Triton" in log
