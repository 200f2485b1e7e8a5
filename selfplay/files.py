"""File helpers that make a kill at any moment lose no finished work.

- Whole files are written to a temporary file, flushed, fsync'd and renamed into place.
- JSONL appends are one `write` of complete lines; readers drop a torn trailing line, so a reader never sees
  half a record, and `truncate_jsonl` cuts a log back to the records a resume keeps.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def atomic_write(path: Path, data: bytes | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value) -> None:
    atomic_write(path, json.dumps(value, indent=2, sort_keys=True))


def jsonl_text(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def append_jsonl(path: Path, records: list[dict]) -> None:
    if not records:
        return
    blob = jsonl_text(records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> Iterator[dict]:
    """Records of a JSONL file, streaming; a torn trailing line (a kill mid-append) or a corrupt line is skipped."""
    if not Path(path).exists():
        return
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                log.warning("%s:%d: incomplete last line skipped", path, number)
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: corrupt line skipped", path, number)


def truncate_jsonl(path: Path, keep: Callable[[dict], bool]) -> int:
    """Rewrite `path` atomically with only the complete records that `keep` accepts; returns how many went."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for record in read_jsonl(path):
        if keep(record):
            kept.append(record)
        else:
            dropped += 1
    atomic_write(path, jsonl_text(kept))
    return dropped
