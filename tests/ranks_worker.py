"""Run by test_distributed.py as each of two launched processes: exercises every collective of `Ranks` over gloo
and writes what this rank saw to <folder>/rank-<r>.json (the folder is the first argument)."""

import json
import sys
from pathlib import Path

import torch

from selfplay import distributed
from selfplay.distributed import Ranks, RanksDiverged

distributed.BUCKET_ELEMENTS = 4  # small buckets, so the summing crosses bucket edges
ranks = Ranks()
seen = {"rank": ranks.rank, "world": ranks.world, "share": list(ranks.share(5))}
seen["map"] = ranks.map(lambda mine: [x * 10 + ranks.rank for x in mine], list(range(5)))
seen["map_fewer_items_than_ranks"] = ranks.map(lambda mine: [x + ranks.rank for x in mine], [100])
weights = torch.nn.Parameter(torch.zeros(3))
weights.grad = torch.full((3,), float(ranks.rank + 1))
matrix = torch.nn.Parameter(torch.zeros(2, 3))
matrix.grad = torch.arange(6.0).view(2, 3) * (ranks.rank + 1)
untouched = torch.nn.Parameter(torch.zeros(2))  # only rank 0 has a gradient for it: rank 1 had no rows
if ranks.rank == 0:
    untouched.grad = torch.ones(2)
ranks.sum_gradients([weights, matrix, untouched])
seen["summed"] = [weights.grad.tolist(), matrix.grad.tolist(), untouched.grad.tolist()]
seen["agreed"] = ranks.agree({"pool": b"the same everywhere"})
try:
    ranks.agree({"pool": b"the same everywhere", "weights": str(ranks.rank).encode()})
    seen["diverged"] = None
except RanksDiverged as error:
    seen["diverged"] = str(error)
(Path(sys.argv[1]) / f"rank-{ranks.rank}.json").write_text(json.dumps(seen))
ranks.close()
