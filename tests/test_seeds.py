
import pandas as pd
import pytest

from selfplay.cli import main
from selfplay.curriculum.seeds import SeedError, check_seeds, load_seeds

BAD_JSONL = "\n".join([
    '{"problem": "What is 2 + 2?", "answer": 4}',  # line 1: fine
    '{"question": "no problem field"}',  # 2: missing field
    '{"problem": "   "}',  # 3: empty problem
    "this is not json",  # 4
    '{"problem": "what is 2 + 2?"}',  # 5: duplicate of 1 (case/space-insensitive)
    '["a", "list"]',  # 6: not an object
    '{"problem": 42}',  # 7: not text
    '{"problem": "Name a prime.", "concepts": 7}',  # 8: bad concepts
    "",  # blank lines are ignored
    '{"problem": "How many sides has a hexagon?", "concepts": "geometry, counting"}',  # 10: fine
])


def test_every_defect_is_reported_with_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(BAD_JSONL)
    seeds, issues = check_seeds(str(path))
    assert [(i.line, i.reason) for i in issues] == [
        (2, "missing field 'problem'"),
        (3, "empty problem"),
        (4, "not JSON (Expecting value)"),
        (5, "duplicate of line 1"),
        (6, "not a JSON object"),
        (7, "field 'problem' is not text"),
        (8, "field 'concepts' must be a list of strings or comma-separated text"),
    ]
    assert [s.problem for s in seeds] == ["What is 2 + 2?", "How many sides has a hexagon?"]
    assert seeds[0].answer == "4" and seeds[1].concepts == ["geometry", "counting"]
    with pytest.raises(SeedError, match=r"bad\.jsonl:4: not JSON"):
        load_seeds(str(path))


def test_seeds_check_command_reports_and_fails(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(BAD_JSONL)
    assert main(["seeds", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: missing field 'problem'" in out and "2 good problem(s), 7 bad line(s)" in out
    assert main(["seeds", "check", "seeds/single.jsonl"]) == 0


def test_run_refuses_a_bad_seed_set_before_loading_models(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(BAD_JSONL)
    # A model that does not exist proves no model was loaded: the seed error comes first.
    code = main(["run", "--seeds", str(path), "--model", "/nonexistent/model", "--output-dir", str(tmp_path / "r")])
    assert code == 2 and "bad.jsonl:2: missing field 'problem'" in capsys.readouterr().err


def test_csv_parquet_and_dataset_with_field_mapping(tmp_path):
    import datasets

    rows = [{"q": "What is 3 * 3?", "a": "9"}, {"q": "What is 10 - 4?", "a": "6"}]
    pd.DataFrame(rows).to_csv(tmp_path / "s.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "s.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    for path in ("s.csv", "s.parquet", "ds"):
        seeds = load_seeds(str(tmp_path / path), problem_field="q", answer_field="a")
        assert [(s.problem, s.answer) for s in seeds] == [("What is 3 * 3?", "9"), ("What is 10 - 4?", "6")]
    pd.DataFrame([{"q": "x"}, {"q": ""}]).to_csv(tmp_path / "bad.csv", index=False)
    assert [(i.line, i.reason) for i in check_seeds(str(tmp_path / "bad.csv"), "q")[1]] == [(3, "empty problem")]


def test_shipped_seed_sets_are_clean():
    for name in ("single", "arithmetic", "algebra"):
        seeds, issues = check_seeds(f"seeds/{name}.jsonl")
        assert seeds and not issues, issues


def test_missing_file_and_unknown_format(tmp_path):
    assert check_seeds(str(tmp_path / "none.jsonl"))[1][0].reason == "file not found"
    (tmp_path / "s.txt").write_text("x")
    assert "unknown seed format" in check_seeds(str(tmp_path / "s.txt"))[1][0].reason
