"""The per-step cost of the novelty archive and the pool as they grow: 10k, 100k and 1,000,000 problems.

    python experiments/bench_archive.py [--sizes 10000,100000,1000000] [--steps 5] [--index-type flat]

Embeddings are synthetic: standard normal vectors of the default embedder's dimension (384), L2-normalised, so
neighbours are as far apart as random problems (a pessimistic case for index recall). Each size runs in a fresh
process, so its peak RSS is its own. A step is what `SelfPlay` does with 64 new valid problems, all admitted
(`pool_admission: valid`, the reference's setting): novelty against the archive plus same-step peers,
admission into the pool (near-duplicate search, add), the archive add, and the checkpoint of pool and archive.
`novelty_abs_error` compares the novelty scores with exact search over the same vectors.

Issue 10's targets at 1M on 2 cores: novelty + admission + add < 1000 ms per step; checkpoint < 1000 ms; peak RSS
< 3 GiB; novelty_abs_error < 0.01. Last line: one JSON object (one entry per size).
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

DIM, PER_STEP = 384, 64


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def child(size: int, steps: int, index_type: str) -> dict:
    from selfplay.curriculum.pool import Pool
    from selfplay.novelty import Archive, novelty_scores

    rng = np.random.default_rng(0)
    archive, pool = Archive(DIM, index_type), Pool(DIM, index_type)
    exact = Archive(DIM, "flat")
    for start in range(0, size, 100_000):  # the archive and pool a long run has grown
        vectors = unit(rng, min(100_000, size - start))
        archive.add(vectors)
        exact.add(vectors)
        pool.add([{"problem": f"p{start + i}", "seed": False} for i in range(len(vectors))], vectors)
    times = {"novelty": [], "admission": [], "add": [], "checkpoint": []}
    errors = []
    with tempfile.TemporaryDirectory() as folder:
        for step in range(steps):
            new = unit(rng, PER_STEP)
            start = time.perf_counter()
            scores = novelty_scores(new, archive, 5)
            times["novelty"].append(time.perf_counter() - start)
            errors.append(float(np.mean(np.abs(np.array(scores) - np.array(novelty_scores(new, exact, 5))))))
            start = time.perf_counter()
            pool.admit([{"problem": f"s{step}-{i}", "seed": False} for i in range(PER_STEP)], new, 0.95)
            times["admission"].append(time.perf_counter() - start)
            start = time.perf_counter()
            archive.add(new)
            exact.add(new)
            times["add"].append(time.perf_counter() - start)
            start = time.perf_counter()
            pool.save(Path(folder) / "pool")
            archive.save(Path(folder) / "archive.faiss")
            times["checkpoint"].append(time.perf_counter() - start)
        start = time.perf_counter()
        Pool(DIM, index_type).load(Path(folder) / "pool")
        Archive(DIM, index_type).load(Path(folder) / "archive.faiss")
        resume = time.perf_counter() - start
    del exact  # the exact copy is the benchmark's yardstick, not part of the run: its memory is counted below
    return {
        "archive_size": len(archive),
        **{f"{phase}_ms_per_step": round(1000 * float(np.median(t)), 1) for phase, t in times.items()},
        "resume_s": round(resume, 2),
        "peak_rss_gib_with_exact_copy": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "novelty_abs_error": round(float(np.mean(errors)), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--index-type", default="flat", choices=["flat", "hnsw", "ivf"])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.index_type)))
        return
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        done = subprocess.run([sys.executable, __file__, "--child", str(size), "--steps", str(args.steps),
                               "--index-type", args.index_type], capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"index_type": args.index_type, "per_step": PER_STEP, "sizes": results}))


if __name__ == "__main__":
    main()
