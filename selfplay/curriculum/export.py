"""Export a run's curriculum as a dataset (JSONL, Parquet, or a Hugging Face `datasets` folder).

Streams: records are read, filtered and written in batches, so memory stays flat in the number of problems
(near-duplicate removal is the exception: it keeps one embedding per exported problem).
"""

from __future__ import annotations

import json
import tempfile
import typing
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from selfplay.files import atomic_write, read_jsonl
from selfplay.rundir import CONFIG, CURRICULUM, RunDirError

ExportFormat = Literal["jsonl", "parquet", "hf"]
ExportShape = Literal["rl", "sft"]
FORMATS, SHAPES = typing.get_args(ExportFormat), typing.get_args(ExportShape)
BATCH_ROWS = 10_000


@dataclass
class ExportTarget:
    out: str = field(metadata={"help": "Output file (jsonl, parquet) or folder (hf)."})
    format: ExportFormat = field(default="jsonl", metadata={"help": "Dataset format."})
    shape: ExportShape = field(default="rl", metadata={
        "help": "rl: problem, reference answer and stats; sft: problem plus a verified solution as chat messages."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push the hf folder to this hub repo."})


@dataclass
class ExportFilters:
    min_solve_rate: float | None = field(default=None, metadata={"help": "Lowest solve rate; None: the run's band_low."})
    max_solve_rate: float | None = field(default=None, metadata={"help": "Highest solve rate; None: the run's band_high."})
    min_novelty: float | None = field(default=None, metadata={"help": "Lowest novelty score."})
    min_step: int | None = field(default=None, metadata={"help": "First step exported."})
    max_step: int | None = field(default=None, metadata={"help": "Last step exported."})
    include_invalid: bool = field(default=False, metadata={"help": "Keep problems the parser rejected."})
    dedup_threshold: float | None = field(
        default=None, metadata={"help": "Drop problems this similar (cosine) to an earlier exported one."})
    limit: int | None = field(default=None, metadata={"help": "Most problems exported."})


@dataclass
class ExportSummary:
    rows: int = 0
    read: int = 0
    solve_rate_histogram: list[int] = field(default_factory=lambda: [0] * 10)  # bins of 0.1
    concepts: Counter = field(default_factory=Counter)

    def add(self, record: dict) -> None:
        self.rows += 1
        rate = record.get("solve_rate")
        if rate is not None:
            self.solve_rate_histogram[min(int(rate * 10), 9)] += 1
        self.concepts.update(record.get("concepts") or [])


def run_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def resolve_filters(run_dir: Path, filters: ExportFilters) -> ExportFilters:
    """Default solve-rate range: the run's band (so the export holds what the run considered learnable)."""
    config = run_config(run_dir)
    low = filters.min_solve_rate if filters.min_solve_rate is not None else config.get("band_low", 0.0)
    high = filters.max_solve_rate if filters.max_solve_rate is not None else config.get("band_high", 1.0)
    return ExportFilters(**{**asdict(filters), "min_solve_rate": low, "max_solve_rate": high})


def passes(record: dict, f: ExportFilters) -> bool:
    if not f.include_invalid and not record.get("valid"):
        return False
    if not record.get("problem"):
        return False
    rate, novelty, step = record.get("solve_rate"), record.get("novelty"), record.get("step", 0)
    if rate is None or not (f.min_solve_rate <= rate <= f.max_solve_rate):
        return False
    if f.min_novelty is not None and (novelty is None or novelty < f.min_novelty):
        return False
    if f.min_step is not None and step < f.min_step:
        return False
    return f.max_step is None or step <= f.max_step


def dedup(records: Iterable[dict], threshold: float, embedder, batch: int = 256) -> Iterator[dict]:
    """Drop records whose problem has cosine >= threshold with an earlier kept one."""
    from selfplay.novelty import Archive, not_near_duplicates

    archive = Archive(embedder.dim)
    chunk: list[dict] = []

    def flush() -> Iterator[dict]:
        vectors = embedder.encode([r["problem"] for r in chunk])
        kept = not_near_duplicates(vectors, archive, threshold)
        archive.add(vectors[kept])
        yield from (chunk[i] for i in kept)
        chunk.clear()

    for record in records:
        chunk.append(record)
        if len(chunk) == batch:
            yield from flush()
    if chunk:
        yield from flush()


def select(run_dir: Path, filters: ExportFilters, embedder=None) -> Iterator[dict]:
    records = (r for r in read_jsonl(Path(run_dir) / CURRICULUM) if passes(r, filters))
    if filters.dedup_threshold is not None:
        records = dedup(records, filters.dedup_threshold, embedder)
    for count, record in enumerate(records):
        if filters.limit is not None and count >= filters.limit:
            return
        yield record


def to_row(record: dict, shape: str) -> dict | None:
    base = {
        "problem": record["problem"],
        "answer": record.get("answer"),
        "solve_rate": record.get("solve_rate"),
        "novelty": record.get("novelty"),
        "step": record.get("step"),
        "concepts": record.get("concepts") or [],
    }
    if shape == "rl":
        return base
    if not record.get("solution"):
        return None  # sft needs a verified correct solution
    messages = [{"role": "user", "content": record["problem"]}, {"role": "assistant", "content": record["solution"]}]
    return {"messages": messages, **base}


def _schema(shape: str):
    import pyarrow as pa

    fields = [
        ("problem", pa.string()), ("answer", pa.string()), ("solve_rate", pa.float64()), ("novelty", pa.float64()),
        ("step", pa.int64()), ("concepts", pa.list_(pa.string())),
    ]
    if shape == "sft":
        message = pa.struct([("role", pa.string()), ("content", pa.string())])
        fields.insert(0, ("messages", pa.list_(message)))
    return pa.schema(fields)


def _batches(rows: Iterable[dict]) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_parquet(rows: Iterable[dict], path: Path, shape: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(shape)
    with pq.ParquetWriter(path, schema) as writer:
        for batch in _batches(rows):
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))


def export(
    run_dir: str | Path, out: str | Path, fmt: str = "jsonl", shape: str = "rl",
    filters: ExportFilters | None = None, embedder=None,
) -> ExportSummary:
    if fmt not in FORMATS or shape not in SHAPES:
        raise ValueError(f"format must be one of {FORMATS} and shape one of {SHAPES}")
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / CURRICULUM).exists():
        raise RunDirError(f"{run_dir / CURRICULUM}: no curriculum to export")
    filters = resolve_filters(run_dir, filters or ExportFilters())
    if filters.dedup_threshold is not None and embedder is None:
        from selfplay.novelty import Embedder

        embedder = Embedder(run_config(run_dir).get("embedder", "embedded"))
    summary = ExportSummary()

    def rows() -> Iterator[dict]:
        for record in select(run_dir, filters, embedder):
            row = to_row(record, shape)
            if row is not None:
                summary.add(row)
                yield row

    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        staging = out.with_name(f".{out.name}.tmp")
        with open(staging, "w", encoding="utf-8") as handle:
            for row in rows():
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        staging.replace(out)
    elif fmt == "parquet":
        staging = out.with_name(f".{out.name}.tmp")
        _write_parquet(rows(), staging, shape)
        staging.replace(out)
    else:
        import datasets

        # Through a temporary Parquet file: streams like the other formats, and datasets never has to hash a
        # Python generator (slow, and impossible with an embedder inside it).
        with tempfile.TemporaryDirectory() as tmp:
            _write_parquet(rows(), Path(tmp) / "rows.parquet", shape)
            features = datasets.Features.from_arrow_schema(_schema(shape))
            dataset = datasets.Dataset.from_parquet(str(Path(tmp) / "rows.parquet"), features=features,
                                                    cache_dir=str(Path(tmp) / "cache"))
            dataset.save_to_disk(str(out))
        atomic_write(out / "README.md", dataset_card(run_dir, shape, filters, summary))
    return summary


def dataset_card(run_dir: Path, shape: str, filters: ExportFilters, summary: ExportSummary) -> str:
    config = run_config(run_dir)
    histogram = "\n".join(
        f"| {i / 10:.1f}-{(i + 1) / 10:.1f} | {count} |" for i, count in enumerate(summary.solve_rate_histogram)
    )
    concepts = "\n".join(f"| {name} | {count} |" for name, count in summary.concepts.most_common(20)) or "| (none) | 0 |"
    active = {k: v for k, v in asdict(filters).items() if v is not None}
    return f"""---
tags: [math, synthetic, self-play, selfplay]
task_categories: [{"reinforcement-learning" if shape == "rl" else "text-generation"}]
size_categories: [n<1K]
---
# Self-play math curriculum

Problems generated by a teacher policy during a [selfplay](https://pypi.org/project/selfplay/) run, with
the solve rate the student reached on them and a novelty score against everything generated before.

- **Problems:** {summary.rows}
- **Shape:** `{shape}` ({"problem, reference answer, solve rate, novelty, step, concepts" if shape == "rl"
  else "problem plus one student solution that matched the reference answer, as chat messages"})
- **Source run:** `{run_dir}` (policy `{config.get("model", "?")}`, embedder `{config.get("embedder", "?")}`,
  reference answer: `{config.get("reference_answer", "?")}`, band {config.get("band_low", "?")}-{config.get("band_high", "?")})
- **Filters:** {", ".join(f"{k}={v}" for k, v in active.items())}

Reference answers are what the run verified against (by default the students' majority answer); they are
not checked by a human.

## Solve rates
| solve rate | problems |
|---|---|
{histogram}

## Most frequent concepts
| concept | problems |
|---|---|
{concepts}

## Loading
```python
import datasets
ds = datasets.load_from_disk("PATH")
# ds.push_to_hub("you/your-curriculum")  # with a hub account
```
"""
