"""Bad input gets one clear message naming the file and field, before expensive work; degenerate steps are
logged and skipped; a run that produces nothing valid stops with a message saying so."""

import json
import shutil
from pathlib import Path

import pytest

from selfplay.cli import main
from selfplay.curriculum.pool import Pool
from selfplay.files import read_jsonl
from selfplay.loop import RunStalled
from selfplay.runner import build, run


def error_of(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_config_typo_and_wrong_type(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("teacher_sampels: 4\n")
    assert "c.yaml: unknown config key 'teacher_sampels' (did you mean 'teacher_samples'?)" in error_of(
        capsys, ["run", "--config", str(config), "--output-dir", str(tmp_path / "r")])
    config.write_text("lora: maybe\n")
    assert "key 'lora' = 'maybe': must be true or false" in error_of(capsys, ["run", "--config", str(config)])
    assert not (tmp_path / "r").exists()


def test_model_path_missing_output_dir_a_file_and_nothing_to_resume(tmp_path, capsys):
    assert "model path '/nonexistent/model' does not exist" in error_of(
        capsys, ["run", "--model", "/nonexistent/model", "--output-dir", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()  # a failed start leaves no half-made run behind
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "exists and is a file" in error_of(capsys, ["run", "--output-dir", str(afile)])
    assert "holds no run to resume" in error_of(capsys, ["run", "--output-dir", str(tmp_path / "none"), "--resume"])


def test_program_mode_without_a_sandbox_refuses_to_start(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap to be found
    error = error_of(capsys, ["run", "--reference-answer", "program", "--output-dir", str(tmp_path / "r")])
    assert "program mode needs bubblewrap" in error and "apt-get install bubblewrap" in error
    assert not (tmp_path / "r").exists()


def test_run_from_another_version_and_corrupt_checkpoint(short_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(short_run, copy)
    saved_config = (copy / "config.yaml").read_text()
    (copy / "checkpoints" / "step-2" / "trainer.pt").write_bytes(b"garbage")
    err = error_of(capsys, ["run", "--output-dir", str(copy), "--resume", "--max-steps", "9"])
    last = err.strip().splitlines()[-1]
    assert last.startswith("selfplay: error:") and "checkpoints/step-2/trainer.pt: unreadable" in last
    assert "Traceback" not in err
    assert (copy / "config.yaml").read_text() == saved_config  # a failed restore leaves the saved settings alone
    info = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**info, "format_version": 99}))
    assert "run.json: field 'format_version' is 99" in error_of(capsys, ["run", "--output-dir", str(copy), "--resume"])


def test_corrupt_pool_is_a_one_line_error(short_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(short_run, copy)
    pool_file = copy / "archive" / "pool.jsonl"
    pool_file.write_bytes(b"x" * pool_file.stat().st_size)  # as long as the checkpoint records, but not JSON
    err = error_of(capsys, ["run", "--output-dir", str(copy), "--resume"])
    assert "archive/pool.jsonl: unreadable" in err and "Traceback" not in err


def test_no_valid_problem_for_many_steps_stops_with_a_message(tiny_config):
    # One new token can never hold a <problem> block: every step is empty.
    config = tiny_config(max_steps=5, teacher_max_new_tokens=1, max_empty_steps=2, report_to="wandb")
    with pytest.raises(RunStalled, match="2 consecutive steps produced no valid teacher problem"):
        run(config, progress=False)
    metrics = list(read_jsonl(f"{config.output_dir}/metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["teacher/valid_fraction"] == 0.0 and m["update/rows"] == 0 for m in metrics)
    assert list(Path(config.output_dir).glob("wandb/offline-run-*")), "W&B should have logged offline"


def test_empty_pool_step_is_logged_and_skipped(tiny_config):
    selfplay = build(tiny_config(max_steps=1), resume=False)
    try:
        selfplay.pool = Pool(selfplay.archive)
        metrics = selfplay.run_step()
    finally:
        selfplay.verifier.close()
        selfplay.backend.close()
    assert metrics["skipped"] == "the pool is empty"
    assert [m["step"] for m in read_jsonl(selfplay.run_dir / "metrics.jsonl")] == [1]


def test_a_template_error_in_a_worked_example_names_the_file_and_the_turn(tmp_path, capsys):
    template = tmp_path / "teacher.yaml"
    template.write_text("user: '{{ problems }}'\nexamples:\n  - user: Write one.\n    assistant: '{% if need_program %}'\n")
    error = error_of(capsys, ["run", "--teacher-template", str(template), "--output-dir", str(tmp_path / "r")])
    assert "teacher.yaml: field 'examples[0].assistant': template error line 1" in error
    assert not (tmp_path / "r").exists()
