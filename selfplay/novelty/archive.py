"""A FAISS inner-product index over L2-normalised embeddings (so scores are cosine similarities).

flat: exact, the default. hnsw: approximate graph search for large archives. ivf: inverted lists; it needs
training data, so it searches exactly until it holds 39 x nlist vectors, then trains on what it has.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np


class Archive:
    def __init__(self, dim: int, index_type: str = "flat", nlist: int = 256):
        self.dim, self.index_type, self.nlist = dim, index_type, nlist
        self.index = self._empty_index(0)

    def _empty_index(self, expected_size: int):
        if self.index_type == "hnsw":
            return faiss.IndexHNSWFlat(self.dim, 32, faiss.METRIC_INNER_PRODUCT)
        if self.index_type == "ivf" and expected_size >= 39 * self.nlist:
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            index.nprobe = min(16, self.nlist)
            return index
        return faiss.IndexFlatIP(self.dim)

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, vectors: np.ndarray) -> None:
        if len(vectors):
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        if self.index_type == "ivf" and isinstance(self.index, faiss.IndexFlatIP) and len(self) >= 39 * self.nlist:
            self.rebuild(self.index.reconstruct_n(0, len(self)))

    def rebuild(self, vectors: np.ndarray) -> None:
        """Index exactly `vectors` (after eviction, or to switch IVF on)."""
        self.index = self._empty_index(len(vectors))
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self.index.is_trained:
            self.index.train(vectors)
        if len(vectors):
            self.index.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), each [len(queries), k]; missing neighbours have id -1."""
        if len(self) == 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self)))

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    def load(self, path: Path) -> None:
        self.index = faiss.read_index(str(path))
