"""The archive: every problem novelty is measured against, as one FAISS inner-product index over L2-normalised
embeddings (scores are cosine similarities). Row i is the i-th problem added; the pool names its problems by row.

Its cost per step does not grow with its size:
- The index's storage is the only copy of the embeddings in memory; the run directory holds them once more, in a
  file that is only appended to (`embeddings.bin`, plus `batches.bin`, the row count after each add). A checkpoint
  records the files' lengths (`lengths`); resume cuts the files back to them and rebuilds the index from them.
- index_type 'auto' searches exactly (flat) up to `exact_limit` rows, then switches to HNSW (a graph: a search
  costs about log N); 'flat' and 'hnsw' fix the kind. An HNSW index is snapshotted, graph only, each time the
  archive has grown by `SNAPSHOT_GROWTH` since the last snapshot, so a resume adds only the rows after it.
- storage 'float16' halves the memory and the file (4096-d embedders: 8 GB instead of 16 at 1M problems).

HNSW graphs depend on insertion order and on the levels drawn for each row, so rows are added batch by batch on
one thread with levels seeded by the batch's first row: every rank of a multi-process run, and a resumed run
replaying the batches from the file, build the same graph and find the same neighbours.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from selfplay.errors import SelfPlayError

EMBEDDINGS, BATCHES = "embeddings.bin", "batches.bin"
SNAPSHOT_GROWTH = 1.1  # a new snapshot once the archive is 10% larger than the last one
HNSW_NEIGHBOURS = 32
# How far an HNSW search looks. Novelty averages the top-k similarities, so it needs them all: 1024 keeps it within
# 0.01 of exact search at 1M random vectors (the hard case: every neighbour almost as far as the next;
# bench_archive). A near-duplicate check asks for one neighbour that lies very close, which a short search finds.
EF_NOVELTY, EF_NEAR_DUPLICATE = 1024, 64
READ_ROWS = 65_536  # rows read from the embeddings file at a time: a resume never holds a second full copy


class ArchiveError(SelfPlayError):
    """Archive files that cannot be read back; the message names the file."""


class Archive:
    def __init__(self, dim: int, index_type: str = "auto", storage: str = "float32", exact_limit: int = 50_000,
                 folder: Path | None = None):
        """`folder`: where rows are appended (None: nowhere, as on every rank of a run but the first)."""
        self.dim, self.index_type, self.storage, self.exact_limit = dim, index_type, storage, exact_limit
        self.dtype = np.dtype(np.float16 if storage == "float16" else np.float32)
        self.folder = Path(folder) if folder is not None else None
        self.batch_ends: list[int] = []
        self.index = self._empty_index(hnsw=index_type == "hnsw")
        self.snapshot_rows = 0

    def _empty_index(self, hnsw: bool):
        ip = faiss.METRIC_INNER_PRODUCT
        if self.storage == "float16":
            fp16 = faiss.ScalarQuantizer.QT_fp16
            return (faiss.IndexHNSWSQ(self.dim, fp16, HNSW_NEIGHBOURS, ip) if hnsw
                    else faiss.IndexScalarQuantizer(self.dim, fp16, ip))
        return faiss.IndexHNSWFlat(self.dim, HNSW_NEIGHBOURS, ip) if hnsw else faiss.IndexFlatIP(self.dim)

    @property
    def is_hnsw(self) -> bool:
        return isinstance(self.index, faiss.IndexHNSW)

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, vectors: np.ndarray) -> None:
        """Append one batch (a step's problems); it is written to the folder too."""
        if not len(vectors):
            return
        stored = np.ascontiguousarray(vectors, dtype=self.dtype)
        # Indexed as stored: a graph built from the rounded rows is the one a resume rebuilds from the file.
        self._index_batch(stored.astype(np.float32, copy=False))
        self.batch_ends.append(len(self))
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / EMBEDDINGS, "ab") as handle:
                handle.write(stored.tobytes())
            with open(self.folder / BATCHES, "ab") as handle:
                handle.write(np.int64(len(self)).tobytes())
        if self.index_type == "auto" and not self.is_hnsw and len(self) > self.exact_limit:
            self._switch_to_hnsw()

    def _index_batch(self, vectors: np.ndarray) -> None:
        if not self.is_hnsw:
            self.index.add(vectors)
            return
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            self.index.hnsw.rng = faiss.RandomGenerator(len(self))
            self.index.add(vectors)
        finally:
            faiss.omp_set_num_threads(threads)

    def _switch_to_hnsw(self) -> None:
        flat, self.index = self.index, self._empty_index(hnsw=True)
        self._replay(lambda start, stop: flat.reconstruct_n(start, stop - start), 0)

    def _replay(self, rows, after: int) -> None:
        """Index the batches that end past row `after` as they were added (whole, in order); `rows(start, stop)`
        gives their vectors."""
        for end in (end for end in self.batch_ends if end > after):
            self._index_batch(rows(len(self), end))

    def search(self, queries: np.ndarray, k: int, members: np.ndarray | None = None,
               ef_search: int = EF_NOVELTY) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), each [len(queries), k]; missing neighbours have id -1. `members`: a bitmap (bit i
        of byte i // 8) of the rows that may be returned; None: all. `ef_search`: HNSW's search breadth."""
        if len(self) == 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        selector = None if members is None else faiss.IDSelectorBitmap(len(members), faiss.swig_ptr(members))
        params = (faiss.SearchParametersHNSW(sel=selector, efSearch=max(ef_search, k)) if self.is_hnsw
                  else faiss.SearchParameters(sel=selector))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self)), params=params)

    # ------------------------------------------------------------------ files
    def lengths(self) -> dict[str, int]:
        """Bytes of each appended file that the archive's current rows cover (a checkpoint records them)."""
        return {EMBEDDINGS: len(self) * self.dim * self.dtype.itemsize, BATCHES: len(self.batch_ends) * 8}

    def state(self) -> dict:
        """What a checkpoint records besides the lengths: the graph snapshot a resume starts from (written now
        when one is due). Only that snapshot is ever read back, so one left by a later, lost checkpoint is not."""
        if self.folder is not None and self.is_hnsw and len(self) >= SNAPSHOT_GROWTH * self.snapshot_rows:
            self._write_snapshot()
        return {"snapshot_rows": self.snapshot_rows}

    def _write_snapshot(self) -> None:
        staging = self.folder / f".index-{len(self)}.tmp"
        faiss.write_index(self.index, str(staging), faiss.IO_FLAG_SKIP_STORAGE)
        staging.replace(snapshot_path(self.folder, len(self)))
        for old in self.folder.glob("index-*.faiss"):
            if old != snapshot_path(self.folder, len(self)):
                old.unlink(missing_ok=True)
        self.snapshot_rows = len(self)

    def load(self, folder: Path, state: dict) -> None:
        """Rebuild from `folder`'s files (already cut back to a checkpoint's lengths) and that checkpoint's
        `state`: its graph snapshot where there is one, then the batches after it."""
        folder, row_bytes = Path(folder), self.dim * self.dtype.itemsize
        try:
            ends = np.fromfile(folder / BATCHES, np.int64).tolist() if (folder / BATCHES).exists() else []
            size = (folder / EMBEDDINGS).stat().st_size if ends else 0
        except OSError as error:
            raise ArchiveError(f"{folder}: archive files unreadable ({error})") from None
        rows = ends[-1] if ends else 0
        if size != rows * row_bytes:
            raise ArchiveError(f"{folder / EMBEDDINGS}: {size} bytes, but {BATCHES} counts {rows} rows of {row_bytes}")

        def read(start: int, stop: int) -> np.ndarray:
            flat = np.fromfile(folder / EMBEDDINGS, self.dtype, (stop - start) * self.dim, offset=start * row_bytes)
            return flat.reshape(-1, self.dim).astype(np.float32)

        self.batch_ends, self.snapshot_rows = ends, 0
        hnsw = self.index_type == "hnsw" or (self.index_type == "auto" and rows > self.exact_limit)
        self.index = self._empty_index(hnsw)
        covered = state["snapshot_rows"]
        if hnsw and covered and snapshot_path(folder, covered).is_file():
            self.index, self.snapshot_rows = self._read_snapshot(snapshot_path(folder, covered), covered, read), covered
        self._replay(read, len(self))

    def _read_snapshot(self, path: Path, rows: int, read):
        """The graph from `path`, its storage (the first `rows` rows) from `read(start, stop)`."""
        index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_STORAGE)
        storage = self._empty_index(hnsw=False)
        for start in range(0, rows, READ_ROWS):
            storage.add(read(start, min(start + READ_ROWS, rows)))
        index.storage, index.own_fields = storage, True
        storage.this.disown()  # the index frees its storage now
        return index



def snapshot_path(folder: Path, rows: int) -> Path:
    return Path(folder) / f"index-{rows}.faiss"
