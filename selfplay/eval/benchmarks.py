"""Benchmarks: the standard sets in ../shared/benchmarks (each names its fields differently), any
JSONL/CSV/Parquet file, or a Hugging Face dataset id."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfplay.config import BENCHMARKS_DIR, CHECKOUT_ROOT
from selfplay.errors import SelfPlayError
from selfplay.verify.answers import last_boxed


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answer: str


def number_text(value) -> str:
    """27.0 -> '27', 0.5 -> '0.5', '14' -> '14'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _gsm8k_answer(row: dict) -> str:
    return row["answer"].split("####")[-1].strip().replace(",", "")


def _olympiad_question(row: dict) -> str:
    return f"{row['context']}\n\n{row['question']}" if row.get("context") else row["question"]


def _olympiad_answer(row: dict) -> str:
    answers = [a.strip().strip("$") for a in row["final_answer"]]
    return ", ".join(answers)


@dataclass(frozen=True)
class Adapter:
    file: str
    question: Callable[[dict], str]
    answer: Callable[[dict], str]


STANDARD: dict[str, Adapter] = {
    "gsm8k": Adapter("gsm8k/test.jsonl", lambda r: r["question"], _gsm8k_answer),
    "math500": Adapter("math500/test.jsonl", lambda r: r["problem"], lambda r: r["answer"]),
    "minerva_math": Adapter("minerva_math/test.jsonl", lambda r: r["problem"], lambda r: last_boxed(r["solution"]) or ""),
    "olympiadbench": Adapter("olympiadbench/test.jsonl", _olympiad_question, _olympiad_answer),
    "aime24": Adapter("aime24/test.jsonl", lambda r: r["problem"], lambda r: number_text(r["answer"])),
    "aime25": Adapter("aime25/test.jsonl", lambda r: r["problem"], lambda r: number_text(r["answer"])),
    "amc23": Adapter("amc23/test.jsonl", lambda r: r["problem"], lambda r: number_text(r["answer"])),
    **{
        f"mawps_{part}": Adapter(f"mawps/{part}.jsonl", lambda r: r["input"], lambda r: number_text(r["target"]))
        for part in ("singleop", "addsub", "multiarith", "singleeq")
    },
}
GROUPS = {"mawps": ["mawps_singleop", "mawps_addsub", "mawps_multiarith", "mawps_singleeq"]}


class BenchmarkError(SelfPlayError):
    """A benchmark that cannot be found or read; the message names the file (and row) or the missing flag."""


def resolve_benchmarks_dir(given: str) -> Path:
    """The given folder if it exists, else the shared/benchmarks beside this checkout."""
    path = Path(given).expanduser()
    return path if path.exists() else CHECKOUT_ROOT.parent / "shared" / "benchmarks"


def expand(names: str) -> list[str]:
    """'gsm8k,mawps' -> ['gsm8k', 'mawps_singleop', ...]."""
    out: list[str] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        out += GROUPS.get(name, [name])
    return out


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".json"}:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if suffix == ".csv":
        import pandas as pd

        return pd.read_csv(path).to_dict("records")
    if suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    raise BenchmarkError(f"{path}: unknown benchmark format (use .jsonl, .csv or .parquet)")


def load_benchmark(
    name: str, benchmarks_dir: str | Path = BENCHMARKS_DIR, question_field: str | None = None,
    answer_field: str | None = None, limit: int | None = None, split: str = "test",
) -> list[Item]:
    if name in STANDARD and question_field is None:
        adapter = STANDARD[name]
        path = Path(benchmarks_dir) / adapter.file
        if not path.exists():
            raise BenchmarkError(f"{path}: benchmark '{name}' not found (set --benchmarks-dir)")
        rows, question, answer = _read_rows(path), adapter.question, adapter.answer
    else:
        if not question_field or not answer_field:
            raise BenchmarkError(f"benchmark '{name}' is not a standard set: give --question-field and --answer-field")
        path = Path(name)
        if path.exists():
            rows = _read_rows(path)
        else:
            import datasets

            rows = list(datasets.load_dataset(name, split=split))

        def question(row):
            return row[question_field]

        def answer(row):
            value = row[answer_field]
            return _gsm8k_answer({"answer": value}) if isinstance(value, str) and "####" in value else number_text(value)

    items = []
    for i, row in enumerate(rows[:limit] if limit else rows):
        try:
            items.append(Item(str(row.get("id", row.get("idx", i))), question(row), answer(row)))
        except (KeyError, TypeError) as error:
            raise BenchmarkError(f"{path}: row {i + 1}: field {error} missing or malformed") from None
    return items


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem if Path(name).suffix else name)
