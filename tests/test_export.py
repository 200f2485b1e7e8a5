import json

import datasets
import pandas as pd
import pytest

from selfplay.cli import main
from selfplay.curriculum.export import ExportFilters, export
from selfplay.files import append_jsonl, read_jsonl, write_json


def expected_rl(run_dir, low, high):
    return [r for r in read_jsonl(run_dir / "curriculum.jsonl")
            if r["valid"] and r["solve_rate"] is not None and low <= r["solve_rate"] <= high]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_real_run_exports_and_reads_back(short_run, tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    summary = export(short_run, out, fmt, "rl", ExportFilters(min_solve_rate=0.0, max_solve_rate=1.0))
    expected = expected_rl(short_run, 0.0, 1.0)
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    elif fmt == "parquet":
        rows = pd.read_parquet(out).to_dict("records")
    else:
        rows = list(datasets.load_from_disk(str(out)))
        card = (out / "README.md").read_text()
        assert f"**Problems:** {len(expected)}" in card and str(short_run) in card and "min_solve_rate=0.0" in card
    assert summary.rows == len(rows) == len(expected)
    assert [r["problem"] for r in rows] == [r["problem"] for r in expected]
    for row in rows:
        assert set(row) == {"problem", "answer", "solve_rate", "novelty", "step", "concepts"}


def test_default_range_is_the_runs_band(short_run, tmp_path):
    summary = export(short_run, tmp_path / "band.jsonl")
    assert summary.rows == len(expected_rl(short_run, 0.5, 0.9))


@pytest.fixture
def synthetic_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("band_low: 0.25\nband_high: 0.75\nmodel: embedded\nembedder: embedded\n")
    records = []
    for i in range(40):
        records.append({
            "step": i // 4 + 1, "problem": f"Problem number {i}: what is {i} + {i}?", "answer": str(2 * i),
            "concepts": ["addition"] if i % 2 else ["doubling", "addition"], "valid": i % 5 != 0,
            "solve_rate": (i % 5) / 4, "novelty": i / 40, "solution": f"{i}+{i}={2 * i}. \\boxed{{{2 * i}}}" if i % 3 else None,
        })
    records.append({**records[1], "step": 11})  # an exact duplicate problem, later
    append_jsonl(run / "curriculum.jsonl", records)
    write_json(run / "run.json", {"format_version": 1})
    return run, records


def test_filters_are_applied(synthetic_run, tmp_path):
    run, records = synthetic_run
    filters = ExportFilters(min_solve_rate=0.25, max_solve_rate=0.75, min_novelty=0.2, min_step=3, max_step=9)
    export(run, tmp_path / "f.jsonl", "jsonl", "rl", filters)
    got = [json.loads(line)["problem"] for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    want = [r["problem"] for r in records if r["valid"] and 0.25 <= r["solve_rate"] <= 0.75 and r["novelty"] >= 0.2
            and 3 <= r["step"] <= 9]
    assert got == want and got
    export(run, tmp_path / "l.jsonl", "jsonl", "rl", ExportFilters(limit=3))
    assert len((tmp_path / "l.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow  # loads the embedder
def test_dedup_removes_the_repeated_problem(synthetic_run, tmp_path):
    run, _ = synthetic_run
    plain = export(run, tmp_path / "a.jsonl", "jsonl", "rl", ExportFilters(min_solve_rate=0, max_solve_rate=1))
    deduped = export(run, tmp_path / "b.jsonl", "jsonl", "rl",
                     ExportFilters(min_solve_rate=0, max_solve_rate=1, dedup_threshold=0.999))
    assert deduped.rows == plain.rows - 1


def test_sft_shape_has_chat_messages_with_a_verified_solution(synthetic_run, tmp_path):
    run, records = synthetic_run
    export(run, tmp_path / "sft.parquet", "parquet", "sft", ExportFilters(min_solve_rate=0, max_solve_rate=1))
    rows = pd.read_parquet(tmp_path / "sft.parquet").to_dict("records")
    want = [r for r in records if r["valid"] and r["solution"]]
    assert len(rows) == len(want)
    first = rows[0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"]
    assert first[0]["content"] == want[0]["problem"] and first[1]["content"] == want[0]["solution"]
    export(run, tmp_path / "sft_hf", "hf", "sft", ExportFilters(min_solve_rate=0, max_solve_rate=1))
    assert len(datasets.load_from_disk(str(tmp_path / "sft_hf"))) == len(want)


def test_export_command(synthetic_run, tmp_path, capsys):
    run, _ = synthetic_run
    assert main(["export", str(run), "--format", "jsonl", "--out", str(tmp_path / "c.jsonl"), "--limit", "2"]) == 0
    assert "exported 2 problem(s)" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x.jsonl")]) == 2
