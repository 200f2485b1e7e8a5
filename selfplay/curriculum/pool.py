"""The problem pool: what the teacher is shown. Its problems are rows of the archive (their embeddings live there,
once); the pool keeps their records and which rows are members, and finds near-duplicates among its members by
searching the archive restricted to them.

Records are held in memory as JSON lines (every rank samples from them) and appended by the first rank to
`pool.jsonl`, whose length a checkpoint records. Eviction is FIFO over non-seed problems, so the members are
always the seeds plus the admitted problems after the first `evicted` non-seeds: a count is all a checkpoint
needs to restore them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from selfplay.errors import SelfPlayError
from selfplay.novelty import Archive, not_near_duplicates
from selfplay.rewards import in_band

POOL_FILE = "pool.jsonl"
EVICT_TO = 0.9  # evict down to 90% of the bound, so eviction happens once per 10% of growth, not every step


class PoolError(SelfPlayError):
    """Pool files that cannot be read back; the message names the file."""


def eligible(valid: bool, solve_rate: float | None, admission: str, band_low: float, band_high: float,
             derived: bool, requires_derived: bool) -> bool:
    """May a new problem enter the pool? `admission` 'valid': every valid problem; 'in_band': only those whose
    solve rate lands in the band (a data gate against collapse); 'in_band_derived': those in the band whose
    reference answer is also derived from the problem (`rewards.answer_derived`: a gate against problems that
    state their answer, which a majority of students agree on without computing anything). Where the run's
    reward requires a derived answer (`requires_derived`), 'in_band' requires it too: the pool admits no problem
    the band would not pay for."""
    if not valid or admission == "valid":
        return valid
    return in_band(solve_rate, band_low, band_high) and (
        derived or (admission == "in_band" and not requires_derived))


class Pool:
    def __init__(self, archive: Archive, max_size: int = 0, folder: Path | None = None):
        """`folder`: where records are appended (None: nowhere, as on every rank of a run but the first)."""
        self.archive, self.max_size = archive, max_size
        self.folder = Path(folder) if folder is not None else None
        self.lines: list[bytes] = []  # every admitted record, in order; evicted ones emptied
        self.rows: list[int] = []  # their archive rows
        self.seeds = self.evicted = self.file_bytes = 0
        self.members = np.zeros(0, np.uint8)  # bit r: archive row r is in the pool

    def __len__(self) -> int:
        return len(self.rows) - self.evicted

    def add(self, entries: list[dict], rows: list[int]) -> None:
        """Admit `entries`, the problems of archive rows `rows` (the seeds, or what `distinct` kept)."""
        lines = [json.dumps({**entry, "id": row}).encode() + b"\n" for entry, row in zip(entries, rows)]
        if self.folder is not None and lines:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / POOL_FILE, "ab") as handle:
                handle.write(b"".join(lines))
        self._take(lines, rows, [bool(entry.get("seed")) for entry in entries])
        self.file_bytes += sum(map(len, lines))
        self._evict()

    def _take(self, lines: list[bytes], rows: list[int], seed: list[bool]) -> None:
        for line, row, is_seed in zip(lines, rows, seed):
            self.seeds += is_seed and self.seeds == len(self.rows)  # seeds come first and are never evicted
            self.lines.append(line)
            self.rows.append(row)
        if rows and max(rows) // 8 >= len(self.members):
            grown = np.zeros(max(2 * len(self.members), max(rows) // 8 + 1), np.uint8)
            grown[: len(self.members)] = self.members
            self.members = grown
        self._mark(rows, True)

    def _mark(self, rows: list[int], member: bool) -> None:
        rows = np.asarray(rows, np.int64)
        bits = (1 << (rows & 7)).astype(np.uint8)
        if member:
            np.bitwise_or.at(self.members, rows >> 3, bits)
        else:
            np.bitwise_and.at(self.members, rows >> 3, ~bits)

    def distinct(self, vectors: np.ndarray, dedup_threshold: float | None) -> list[int]:
        """Indices of the `vectors` (problems not yet in the archive) that are no near-duplicate (cosine >=
        `dedup_threshold`) of a member or of an earlier one of them; all when `dedup_threshold` is None."""
        if dedup_threshold is None:
            return list(range(len(vectors)))
        everyone = len(self) == len(self.archive)  # no filter needed (and none costs nothing)
        return not_near_duplicates(vectors, self.archive, dedup_threshold, None if everyone else self.members)

    def _evict(self) -> None:
        if self.max_size and len(self) > self.max_size:
            non_seeds = len(self.rows) - self.seeds - self.evicted
            self._drop_oldest(min(len(self) - int(self.max_size * EVICT_TO), non_seeds))

    def _drop_oldest(self, count: int) -> None:
        """Evict the `count` oldest non-seed members."""
        gone = range(self.seeds + self.evicted, self.seeds + self.evicted + count)
        self._mark([self.rows[i] for i in gone], False)
        for i in gone:
            self.lines[i] = b""
        self.evicted += count

    def sample(self, rng: np.random.Generator, k: int, seeds_only: bool = False) -> list[dict]:
        """`k` distinct members drawn uniformly; `seeds_only`: from the seeds alone (the whole pool if it has
        none)."""
        if not len(self):
            raise PoolError("the pool is empty")
        among = self.seeds if seeds_only and self.seeds else len(self)
        picks = rng.choice(among, size=min(k, among), replace=False)
        return [json.loads(self.lines[i if i < self.seeds else i + self.evicted]) for i in picks]

    def entries(self) -> list[dict]:
        """The members' records, oldest first."""
        kept = list(range(self.seeds)) + list(range(self.seeds + self.evicted, len(self.lines)))
        return [json.loads(self.lines[i]) for i in kept]

    # ------------------------------------------------------------------ files
    def lengths(self) -> dict[str, int]:
        return {POOL_FILE: self.file_bytes}

    def state(self) -> dict:
        return {"evicted": self.evicted}

    def load(self, folder: Path, state: dict) -> None:
        """Fill a new pool from `folder`'s file (already cut back to a checkpoint's length) and that checkpoint's
        `state`."""
        path = Path(folder) / POOL_FILE
        try:
            lines = path.read_bytes().splitlines(keepends=True) if path.exists() else []
            records = [json.loads(line) for line in lines]
            rows, seed = [r["id"] for r in records], [bool(r.get("seed")) for r in records]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PoolError(f"{path}: unreadable ({error!r})") from None
        self._take(lines, rows, seed)
        self.file_bytes = sum(map(len, lines))
        self._drop_oldest(state["evicted"])
