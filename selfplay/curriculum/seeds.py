"""Seed problem sets: JSONL, CSV, Parquet or a Hugging Face dataset (saved folder or hub id).

`check_seeds` reports every bad row with its line (row) number and reason; `load_seeds` refuses a set with
any bad row, so a run never starts on half a seed file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from selfplay.config import resolve_path
from selfplay.errors import SelfPlayError
from selfplay.roles.teacher import normalize_text


@dataclass
class SeedProblem:
    problem: str
    answer: str | None = None
    concepts: list[str] = field(default_factory=list)


@dataclass
class SeedIssue:
    line: int  # 1-based line of the file (JSONL, CSV incl. header) or row number (Parquet, datasets)
    reason: str


class SeedError(SelfPlayError, ValueError):
    def __init__(self, path: str, issues: list[SeedIssue]):
        self.path, self.issues = path, issues
        lines = "\n".join(f"  {path}:{i.line}: {i.reason}" for i in issues[:50])
        more = f"\n  ... and {len(issues) - 50} more" if len(issues) > 50 else ""
        super().__init__(f"seed set {path} has {len(issues)} bad line(s):\n{lines}{more}")


def _rows(path: str) -> Iterator[tuple[int, dict | str]]:
    """(line number, row dict) or (line number, error text) for every row of the set."""
    file = resolve_path(path)
    suffix = file.suffix.lower()
    if file.is_dir():
        import datasets

        data = datasets.load_from_disk(str(file))
        if isinstance(data, datasets.DatasetDict):
            data = data["train"] if "train" in data else next(iter(data.values()))
        yield from ((i + 1, row) for i, row in enumerate(data))
    elif not file.exists():
        if path.count("/") == 1 and not path.startswith((".", "/", "~")) and suffix not in {".jsonl", ".csv", ".parquet"}:
            import datasets

            yield from ((i + 1, row) for i, row in enumerate(datasets.load_dataset(path, split="train")))
        else:
            raise SeedError(path, [SeedIssue(0, "file not found")])
    elif suffix in {".jsonl", ".json"}:
        with open(file, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    yield number, f"not JSON ({error.msg})"
                    continue
                yield number, row if isinstance(row, dict) else "not a JSON object"
    elif suffix == ".csv":
        with open(file, encoding="utf-8", errors="replace", newline="") as handle:
            yield from ((i + 2, row) for i, row in enumerate(csv.DictReader(handle)))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(file).to_pylist(), start=1):
            yield number, row
    else:
        raise SeedError(path, [SeedIssue(0, f"unknown seed format '{suffix}' (use .jsonl, .csv, .parquet or a dataset)")])


def _concepts(value) -> list[str] | None:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [c.strip().lower() for c in value.split(",") if c.strip()]
    if isinstance(value, list) and all(isinstance(c, str) for c in value):
        return [c.strip().lower() for c in value if c.strip()]
    return None


def check_seeds(
    path: str, problem_field: str = "problem", answer_field: str = "answer"
) -> tuple[list[SeedProblem], list[SeedIssue]]:
    seeds: list[SeedProblem] = []
    issues: list[SeedIssue] = []
    first_line: dict[str, int] = {}
    try:
        rows = list(_rows(path))
    except SeedError as error:
        return [], error.issues
    for number, row in rows:
        if isinstance(row, str):
            issues.append(SeedIssue(number, row))
            continue
        if problem_field not in row or row[problem_field] is None:
            issues.append(SeedIssue(number, f"missing field '{problem_field}'"))
            continue
        problem = row[problem_field]
        if not isinstance(problem, str):
            issues.append(SeedIssue(number, f"field '{problem_field}' is not text"))
            continue
        if not problem.strip():
            issues.append(SeedIssue(number, "empty problem"))
            continue
        key = normalize_text(problem)
        if key in first_line:
            issues.append(SeedIssue(number, f"duplicate of line {first_line[key]}"))
            continue
        first_line[key] = number
        concepts = _concepts(row.get("concepts"))
        if concepts is None:
            issues.append(SeedIssue(number, "field 'concepts' must be a list of strings or comma-separated text"))
            continue
        answer = row.get(answer_field)
        if isinstance(answer, float) and answer.is_integer():
            answer = int(answer)
        seeds.append(SeedProblem(problem.strip(), None if answer in (None, "") else str(answer), concepts))
    if not seeds and not issues:
        issues.append(SeedIssue(0, "no problems in the set"))
    return seeds, issues


def load_seeds(path: str, problem_field: str = "problem", answer_field: str = "answer") -> list[SeedProblem]:
    seeds, issues = check_seeds(path, problem_field, answer_field)
    if issues:
        raise SeedError(path, issues)
    return seeds
