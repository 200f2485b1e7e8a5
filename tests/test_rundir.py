import json

import pytest

from selfplay import RUN_FORMAT_VERSION
from selfplay.curriculum import rundir


def test_append_and_read_skip_a_torn_trailing_line(tmp_path):
    path = tmp_path / "m.jsonl"
    rundir.append_jsonl(path, [{"step": 1}, {"step": 2}])
    with open(path, "a") as handle:
        handle.write('{"step": 3, "half')  # a kill in the middle of an append
    assert [r["step"] for r in rundir.read_jsonl(path)] == [1, 2]


def test_a_line_cut_just_before_its_newline_is_not_trusted(tmp_path):
    # Valid JSON but no newline: the next append would fuse with it, so readers and resume treat it as torn.
    path = tmp_path / "m.jsonl"
    rundir.append_jsonl(path, [{"step": 1}])
    with open(path, "a") as handle:
        handle.write('{"step": 2}')
    assert [r["step"] for r in rundir.read_jsonl(path)] == [1]
    rundir.truncate_jsonl(path, lambda r: True)
    rundir.append_jsonl(path, [{"step": 2}])
    assert [r["step"] for r in rundir.read_jsonl(path)] == [1, 2]


def test_truncate_keeps_only_accepted_complete_records(tmp_path):
    path = tmp_path / "m.jsonl"
    rundir.append_jsonl(path, [{"step": s} for s in range(1, 6)])
    with open(path, "a") as handle:
        handle.write("garbage")
    assert rundir.truncate_jsonl(path, lambda r: r["step"] <= 3) == 2
    assert path.read_text() == "".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3))


def test_checkpoint_is_complete_or_absent(tmp_path):
    def fill(folder):
        (folder / "weights.bin").write_bytes(b"w")
        return {"x": 1}

    rundir.write_checkpoint(tmp_path, 1, fill, keep=2)

    def crash(folder):
        (folder / "weights.bin").write_bytes(b"partial")
        raise KeyboardInterrupt  # killed while writing

    with pytest.raises(KeyboardInterrupt):
        rundir.write_checkpoint(tmp_path, 2, crash, keep=2)
    assert [p.name for p in rundir.checkpoint_dirs(tmp_path)] == ["step-1"]
    for step in (2, 3, 4):
        rundir.write_checkpoint(tmp_path, step, fill, keep=2)
    assert [p.name for p in rundir.checkpoint_dirs(tmp_path)] == ["step-3", "step-4"]
    state = json.loads((tmp_path / "checkpoints/step-4/state.json").read_text())
    assert state == {"x": 1, "step": 4, "format_version": RUN_FORMAT_VERSION}


def test_prepare_run_dir_errors(tmp_path):
    file = tmp_path / "afile"
    file.write_text("x")
    with pytest.raises(rundir.RunDirError, match="afile exists and is a file"):
        rundir.prepare_run_dir(file, resume=False)
    run = tmp_path / "run"
    rundir.prepare_run_dir(run, resume=False)
    with pytest.raises(rundir.RunDirError, match="already holds a run; pass --resume"):
        rundir.prepare_run_dir(run, resume=False)
    rundir.prepare_run_dir(run, resume=True)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "format_version": 0}))
    with pytest.raises(rundir.RunDirError, match=r"run\.json: field 'format_version' is 0"):
        rundir.prepare_run_dir(run, resume=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(rundir.RunDirError, match="not empty"):
        rundir.prepare_run_dir(other, resume=False)
