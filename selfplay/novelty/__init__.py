"""Novelty: embeddings, the FAISS archive, and the similarity sets that novelty rewards are computed from."""

from __future__ import annotations

import numpy as np

from selfplay.novelty.archive import EF_NEAR_DUPLICATE, Archive
from selfplay.novelty.embedder import Embedder
from selfplay.rewards import novelty


def neighbour_similarities(candidates: np.ndarray, archive: Archive, top_k: int) -> list[list[float]]:
    """For each candidate: its top-k cosine similarities among the archive and the other candidates of the
    same step (self excluded), as the reference computes novelty."""
    archive_sims, archive_ids = archive.search(candidates, top_k)
    peer_sims = candidates @ candidates.T if len(candidates) else np.zeros((0, 0))
    result = []
    for i in range(len(candidates)):
        sims = [float(s) for s, j in zip(archive_sims[i], archive_ids[i]) if j >= 0]
        sims += [float(s) for j, s in enumerate(peer_sims[i]) if j != i]
        result.append(sorted(sims, reverse=True)[:top_k])
    return result


# float32 cosines of identical texts land a few ulps either side of 1.0: without the tolerance, a threshold of 1.0
# caught only a random part of the exact duplicates.
COSINE_TOLERANCE = 1e-5


def is_near_duplicate(similarity: float, threshold: float) -> bool:
    return similarity >= threshold - COSINE_TOLERANCE


def not_near_duplicates(vectors: np.ndarray, archive: Archive, threshold: float,
                        members: np.ndarray | None = None) -> list[int]:
    """Indices of the vectors to keep: not a near-duplicate (`is_near_duplicate`) of an archive row among
    `members` (a bitmap, see `Archive.search`; None: all) or of an earlier kept vector of the same batch."""
    sims, ids = archive.search(vectors, 1, members, ef_search=EF_NEAR_DUPLICATE)
    kept: list[int] = []
    for i in range(len(vectors)):
        archive_max = float(sims[i, 0]) if sims.shape[1] and ids[i, 0] >= 0 else -1.0
        peer_max = max((float(vectors[i] @ vectors[j]) for j in kept), default=-1.0)
        if not is_near_duplicate(max(archive_max, peer_max), threshold):
            kept.append(i)
    return kept


def novelty_scores(candidates: np.ndarray, archive: Archive, top_k: int) -> list[float]:
    return [novelty(sims, top_k) for sims in neighbour_similarities(candidates, archive, top_k)]


def nearest_archived(candidates: np.ndarray, archive: Archive) -> list[float]:
    """Each candidate's cosine to its nearest archived problem (-1 with an empty archive): a near-duplicate
    (`is_near_duplicate`) is a repeat of what the teacher already wrote, whatever its top-k novelty says."""
    sims, ids = archive.search(candidates, 1, ef_search=EF_NEAR_DUPLICATE)
    return [float(sims[i, 0]) if sims.shape[1] and ids[i, 0] >= 0 else -1.0 for i in range(len(candidates))]


__all__ = ["Archive", "Embedder", "is_near_duplicate", "nearest_archived", "neighbour_similarities",
           "not_near_duplicates", "novelty_scores"]
