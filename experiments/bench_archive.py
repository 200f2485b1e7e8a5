"""The per-step cost of the novelty archive and the pool as they grow: 10k, 100k and 1,000,000 problems.

    python experiments/bench_archive.py [--sizes 10000,100000,1000000] [--steps 5] [--index-type auto]
                                        [--storage float32]

Embeddings are synthetic: standard normal vectors of the default embedder's dimension (384), L2-normalised, so
neighbours are as far apart as random problems (a pessimistic case for an approximate index). The archive a long
run has grown is built first, in batches of 25k rows (a run adds 64 at a time; the files and the index kind are
the same), with every problem admitted to the pool (`pool_admission: valid`, the reference's setting), and
checkpointed once. Then each step does what `SelfPlay` does with 64 new valid problems: novelty against the
archive plus same-step peers, admission (near-duplicate search among pool members), the add to archive and pool,
and the incremental checkpoint (the appended files' lengths; an HNSW graph snapshot falls due once per 10% of
growth, and its cost spread over those steps is `snapshot_ms_per_step`). `resume_s` rebuilds archive and pool from
the files in a fresh process, as `--resume` does. `novelty_abs_error` compares the novelty scores with exact
search, read in chunks from the embeddings file so that no second copy is held. Each size runs in its own process,
so `peak_rss_gib` is its own.

Issue 10's targets at 1M on 2 cores: novelty + admission + add < 1000 ms per step; checkpoint < 1000 ms; peak RSS
< 3 GiB; novelty_abs_error < 0.01. Last line: one JSON object, the largest size's figures with every size's
under "sizes".
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM, PER_STEP, HISTORY_BATCH, TOP_K, DEDUP = 384, 64, 25_000, 5, 0.95


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


class ExactFromFile:
    """Exact top-k search over the archive's embeddings file, a chunk at a time (the yardstick for the error)."""

    def __init__(self, path: Path, dtype):
        self.path, self.dtype = path, dtype

    def search(self, queries: np.ndarray, k: int, members=None):
        rows = self.path.stat().st_size // (DIM * self.dtype.itemsize)
        best_sims, best_ids = np.full((len(queries), 0), -2.0, np.float32), np.zeros((len(queries), 0), np.int64)
        for start in range(0, rows, HISTORY_BATCH):
            count = min(HISTORY_BATCH, rows - start) * DIM
            chunk = np.fromfile(self.path, self.dtype, count, offset=start * DIM * self.dtype.itemsize)
            sims = queries @ chunk.reshape(-1, DIM).astype(np.float32).T
            best_sims = np.concatenate([best_sims, sims], axis=1)
            best_ids = np.concatenate([best_ids, np.broadcast_to(np.arange(start, start + sims.shape[1]), sims.shape)],
                                      axis=1)
            order = np.argsort(-best_sims, axis=1)[:, :k]
            best_sims, best_ids = np.take_along_axis(best_sims, order, 1), np.take_along_axis(best_ids, order, 1)
        return best_sims, best_ids


def archive_and_pool(folder: Path, index_type: str, storage: str, writes: bool):
    from selfplay.curriculum.pool import Pool
    from selfplay.novelty import Archive

    archive = Archive(DIM, index_type, storage, folder=folder if writes else None)
    return archive, Pool(archive, folder=folder if writes else None)


def child(size: int, steps: int, index_type: str, storage: str, folder: Path) -> dict:
    from selfplay.novelty import novelty_scores
    from selfplay.novelty.archive import EMBEDDINGS, SNAPSHOT_GROWTH

    rng = np.random.default_rng(0)
    archive, pool = archive_and_pool(folder, index_type, storage, writes=True)
    for start in range(0, size, HISTORY_BATCH):  # the archive and pool a long run has grown
        vectors = unit(rng, min(HISTORY_BATCH, size - start))
        archive.add(vectors)
        pool.add([{"problem": f"p{start + i}", "step": 0} for i in range(len(vectors))],
                 list(range(start, start + len(vectors))))
    start = time.perf_counter()
    archive.state()  # the first checkpoint writes the graph snapshot of an HNSW archive
    snapshot_s = time.perf_counter() - start
    exact = ExactFromFile(folder / EMBEDDINGS, archive.dtype)
    times = {"novelty": [], "admission": [], "add": [], "checkpoint": []}
    errors = []
    for step in range(steps):
        new = unit(rng, PER_STEP)
        start = time.perf_counter()
        scores = novelty_scores(new, archive, TOP_K)
        times["novelty"].append(time.perf_counter() - start)
        errors.append(float(np.mean(np.abs(np.array(scores) - np.array(novelty_scores(new, exact, TOP_K))))))
        start = time.perf_counter()
        admitted = pool.distinct(new, DEDUP)
        times["admission"].append(time.perf_counter() - start)
        start = time.perf_counter()
        first = len(archive)
        archive.add(new)
        pool.add([{"problem": f"s{step}-{i}", "step": step + 1} for i in admitted], [first + i for i in admitted])
        times["add"].append(time.perf_counter() - start)
        start = time.perf_counter()
        state = {"appended": {**archive.lengths(), **pool.lengths()}, "archive": archive.state(), "pool": pool.state()}
        (folder / "state.json").write_text(json.dumps(state))
        times["checkpoint"].append(time.perf_counter() - start)
    steps_per_snapshot = (SNAPSHOT_GROWTH - 1) * len(archive) / PER_STEP
    return {
        "archive_size": len(archive),
        "index": type(archive.index).__name__,
        **{f"{phase}_ms_per_step": round(1000 * float(np.median(t)), 1) for phase, t in times.items()},
        "snapshot_ms_per_step": round(1000 * snapshot_s / steps_per_snapshot, 1) if archive.is_hnsw else 0.0,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "novelty_abs_error": round(float(np.mean(errors)), 5),
    }


def resume_child(index_type: str, storage: str, folder: Path) -> dict:
    archive, pool = archive_and_pool(folder, index_type, storage, writes=False)
    start = time.perf_counter()
    state = json.loads((folder / "state.json").read_text())
    archive.load(folder, state["archive"])
    pool.load(folder, state["pool"])
    return {"resume_s": round(time.perf_counter() - start, 2), "resume_archive_size": len(archive),
            "resume_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--index-type", default="auto", choices=["auto", "flat", "hnsw"])
    parser.add_argument("--storage", default="float32", choices=["float32", "float16"])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--resume-child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.index_type, args.storage, Path(args.folder))))
        return
    if args.resume_child:
        print(json.dumps(resume_child(args.index_type, args.storage, Path(args.folder))))
        return
    common = ["--index-type", args.index_type, "--storage", args.storage]
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            runs = [[sys.executable, __file__, "--child", str(size), "--steps", str(args.steps)],
                    [sys.executable, __file__, "--resume-child", "1"]]
            result = {}
            for command in runs:
                done = subprocess.run(command + common + ["--folder", folder], capture_output=True, text=True)
                if done.returncode:
                    sys.exit(done.stderr[-3000:])
                result.update(json.loads(done.stdout.strip().splitlines()[-1]))
        results.append(result)
        print(json.dumps(result), flush=True)
    # The largest size's figures at the top (the ones the targets are set for), every size under "sizes".
    print(json.dumps({**results[-1], "index_type": args.index_type, "storage": args.storage, "per_step": PER_STEP,
                      "sizes": results}))


if __name__ == "__main__":
    main()
