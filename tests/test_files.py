import json

from selfplay import files


def test_append_and_read_skip_a_torn_trailing_line(tmp_path):
    path = tmp_path / "m.jsonl"
    files.append_jsonl(path, [{"step": 1}, {"step": 2}])
    with open(path, "a") as handle:
        handle.write('{"step": 3, "half')  # a kill in the middle of an append
    assert [r["step"] for r in files.read_jsonl(path)] == [1, 2]


def test_a_line_cut_just_before_its_newline_is_not_trusted(tmp_path):
    # Valid JSON but no newline: the next append would fuse with it, so readers and resume treat it as torn.
    path = tmp_path / "m.jsonl"
    files.append_jsonl(path, [{"step": 1}])
    with open(path, "a") as handle:
        handle.write('{"step": 2}')
    assert [r["step"] for r in files.read_jsonl(path)] == [1]
    files.truncate_jsonl(path, lambda r: True)
    files.append_jsonl(path, [{"step": 2}])
    assert [r["step"] for r in files.read_jsonl(path)] == [1, 2]


def test_truncate_keeps_only_accepted_complete_records(tmp_path):
    path = tmp_path / "m.jsonl"
    files.append_jsonl(path, [{"step": s} for s in range(1, 6)])
    with open(path, "a") as handle:
        handle.write("garbage")
    assert files.truncate_jsonl(path, lambda r: r["step"] <= 3) == 2
    assert path.read_text() == "".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3))


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    files.write_json(tmp_path / "a" / "state.json", {"x": 1})
    assert json.loads((tmp_path / "a" / "state.json").read_text()) == {"x": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["state.json"]


def test_truncate_cuts_in_place_at_the_first_rejected_line_and_keeps_earlier_corrupt_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    files.append_jsonl(path, [{"step": 1}])
    with open(path, "a") as handle:
        handle.write("not json\n")
    files.append_jsonl(path, [{"step": s} for s in (2, 3, 4)])
    inode = path.stat().st_ino
    assert files.truncate_jsonl(path, lambda r: r["step"] <= 2) == 2
    assert path.stat().st_ino == inode  # cut in place, not rewritten
    assert path.read_text() == '{"step": 1}\nnot json\n{"step": 2}\n'
    assert files.truncate_jsonl(path, lambda r: True) == 0 and path.read_text().endswith('{"step": 2}\n')
