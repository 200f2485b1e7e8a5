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


def _kept(line: bytes, keep: Callable[[dict], bool]) -> bool:
    try:
        return keep(json.loads(line))
    except json.JSONDecodeError:
        return True  # a corrupt line before the cut is left for readers to skip, as they always do


def truncate_jsonl(path: Path, keep: Callable[[dict], bool]) -> int:
    """Cut an append-only log back in place, at its first line that is torn or that `keep` rejects: records are
    appended in step order, so everything after that line goes too. One pass that streams the file and one
    truncate, so a resume costs no memory however long the log is. Corrupt lines before the cut stay (readers
    skip them). Returns how many complete lines were cut."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb+") as handle:
        offset = cut = 0
        for line in handle:
            complete = line.endswith(b"\n")
            if cut:
                cut += complete
            elif complete and _kept(line, keep):
                offset += len(line)
            elif complete:
                cut = 1
        handle.truncate(offset)
    return cut