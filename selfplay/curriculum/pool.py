"""The problem pool: what the teacher is shown, and (through its FAISS archive) what novelty is measured
against. Entries and embeddings are kept side by side; the archive indexes exactly the embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from selfplay.errors import SelfPlayError
from selfplay.files import atomic_write, jsonl_text
from selfplay.novelty import Archive, not_near_duplicates
from selfplay.rewards import in_band


class PoolError(SelfPlayError):
    """Pool files that cannot be read back; the message names the folder."""


def eligible(valid: bool, solve_rate: float | None, admission: str, band_low: float, band_high: float) -> bool:
    """May a new problem enter the pool? `admission` 'valid': every valid problem; 'in_band': only those whose
    solve rate lands in the band (a data gate against collapse)."""
    return valid and (admission == "valid" or in_band(solve_rate, band_low, band_high))


class Pool:
    def __init__(self, dim: int, index_type: str = "flat", nlist: int = 256, max_size: int = 0):
        self.entries: list[dict] = []
        # Rows [0, len) are the pool's embeddings; the buffer grows by doubling, so an append costs its own rows
        # (amortised), not a copy of the whole pool every step.
        self._buffer = np.zeros((0, dim), np.float32)
        self.archive = Archive(dim, index_type, nlist)
        self.max_size = max_size

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def embeddings(self) -> np.ndarray:
        return self._buffer[: len(self.entries)]

    def add(self, entries: list[dict], vectors: np.ndarray) -> None:
        size, new = len(self.entries), len(entries)
        if size + new > len(self._buffer):
            grown = np.zeros((max(2 * len(self._buffer), size + new), self._buffer.shape[1]), np.float32)
            grown[:size] = self._buffer[:size]
            self._buffer = grown
        self._buffer[size : size + new] = vectors
        self.entries.extend(entries)
        self.archive.add(vectors)
        self._evict()

    def admit(self, entries: list[dict], vectors: np.ndarray, dedup_threshold: float | None) -> list[int]:
        """Add the entries that are not near-duplicates (cosine >= `dedup_threshold`) of the pool or of each
        other, or all of them when `dedup_threshold` is None; returns the indices admitted."""
        if dedup_threshold is None:
            admitted = list(range(len(entries)))
        else:
            admitted = not_near_duplicates(vectors, self.archive, dedup_threshold)
        self.add([entries[i] for i in admitted], vectors[admitted] if admitted else vectors[:0])
        return admitted

    def _evict(self) -> None:
        """FIFO over non-seed entries once over max_size; seeds are never evicted. Evicting down to 90% of
        the bound makes the index rebuild happen once per 10% of growth rather than every step."""
        if not self.max_size or len(self) <= self.max_size:
            return
        target = int(self.max_size * 0.9)
        removable = [i for i, e in enumerate(self.entries) if not e.get("seed")]
        drop = set(removable[: max(0, len(self) - target)])
        keep = [i for i in range(len(self)) if i not in drop]
        self._buffer = self.embeddings[keep]
        self.entries = [self.entries[i] for i in keep]
        self.archive.rebuild(self.embeddings)

    def sample(self, rng: np.random.Generator, k: int) -> list[dict]:
        if not self.entries:
            raise PoolError("the pool is empty")
        picks = rng.choice(len(self.entries), size=min(k, len(self.entries)), replace=False)
        return [self.entries[i] for i in picks]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "pool.jsonl", jsonl_text(self.entries))
        with open(folder / "embeddings.npy", "wb") as handle:
            np.save(handle, self.embeddings)
        self.archive.save(folder / "index.faiss")

    def load(self, folder: Path) -> None:
        try:
            entries = [json.loads(line) for line in (folder / "pool.jsonl").read_text().splitlines() if line]
            embeddings = np.load(folder / "embeddings.npy")
            self.archive.load(folder / "index.faiss")
        except (OSError, ValueError) as error:
            raise PoolError(f"{folder}: pool files unreadable ({error})") from None
        if not (len(entries) == len(embeddings) == len(self.archive)):
            raise PoolError(
                f"{folder}: pool.jsonl ({len(entries)}), embeddings.npy ({len(embeddings)}) and index.faiss "
                f"({len(self.archive)}) disagree in size"
            )
        self.entries, self._buffer = entries, embeddings
