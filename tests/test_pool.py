"""The archive (FAISS index over every problem, append-only files) and the pool (its admitted rows), with real
FAISS indexes."""

import faiss
import numpy as np
import pytest

from selfplay.curriculum.pool import POOL_FILE, Pool, PoolError
from selfplay.novelty import Archive, neighbour_similarities, not_near_duplicates, novelty_scores
from selfplay.novelty.archive import EMBEDDINGS, ArchiveError, snapshot_path


def unit(n, dim=16, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def entries(n, seed=False, start=0):
    return [{"problem": f"p{start + i}", "seed": seed} for i in range(n)]


def grown(archive, batches=8, size=250):
    """An archive grown batch by batch, as steps grow it; returns all its vectors."""
    vectors = unit(batches * size)
    for start in range(0, len(vectors), size):
        archive.add(vectors[start : start + size])
    return vectors


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_index_kinds_find_the_exact_nearest_neighbour(index_type, storage):
    archive = Archive(16, index_type, storage)
    vectors = grown(archive)
    sims, ids = archive.search(vectors[:50], 1)
    assert (ids[:, 0] == np.arange(50)).mean() >= 0.95
    assert np.allclose(sims[:, 0][ids[:, 0] == np.arange(50)], 1.0, atol=1e-3 if storage == "float16" else 1e-5)


def test_auto_searches_exactly_up_to_its_limit_then_switches_to_hnsw():
    archive = Archive(16, "auto", exact_limit=1000)
    archive.add(unit(1000))
    assert not archive.is_hnsw
    archive.add(unit(1, seed=1))
    assert archive.is_hnsw and len(archive) == 1001
    sims, ids = archive.search(unit(1000)[:20], 1)
    assert (ids[:, 0] == np.arange(20)).all()


def test_novelty_uses_archive_and_same_step_peers_but_not_self():
    archive = Archive(2)
    archive.add(np.array([[1.0, 0.0]], np.float32))
    candidates = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    assert neighbour_similarities(candidates, archive, 5) == [[1.0, 0.0], [0.0, 0.0]]
    assert novelty_scores(candidates, archive, 5) == [pytest.approx(0.25), pytest.approx(0.5)]


def test_near_duplicates_of_archive_and_of_earlier_peers_are_rejected():
    archive = Archive(2)
    archive.add(np.array([[1.0, 0.0]], np.float32))
    batch = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    assert not_near_duplicates(batch, archive, 0.95) == [1, 3]


def test_fifo_eviction_keeps_seeds_and_only_members_count_as_duplicates():
    archive = Archive(16)
    pool = Pool(archive, max_size=10)
    archive.add(unit(2, seed=1))
    pool.add(entries(2, seed=True), [0, 1])
    for step in range(5):
        vectors = unit(3, seed=step + 2)
        first = len(archive)
        archive.add(vectors)
        pool.add(entries(3, start=10 * step), [first, first + 1, first + 2])
    members = pool.entries()
    assert len(pool) == len(members) <= 10 and len(archive) == 17  # evicted problems stay in the archive
    assert [e["problem"] for e in members[:2]] == ["p0", "p1"] and all(e["seed"] for e in members[:2])
    assert members[-1]["problem"] == "p42" and "p0" not in [e["problem"] for e in members[2:]]
    evicted, kept = unit(3, seed=2)[:1], unit(3, seed=6)[:1]  # the first admitted non-seed; the newest
    assert pool.distinct(evicted, 0.95) == [0] and pool.distinct(kept, 0.95) == []


def test_seeds_only_draws_from_the_seeds_even_after_eviction_and_from_all_without_seeds():
    archive = Archive(16)
    pool = Pool(archive, max_size=6)
    archive.add(unit(12, seed=1))
    pool.add(entries(2, seed=True), [0, 1])
    pool.add(entries(10, start=10), list(range(2, 12)))  # evicts the oldest non-seeds, never a seed
    rng = np.random.default_rng(0)
    shown = {e["problem"] for _ in range(50) for e in pool.sample(rng, 2, seeds_only=True)}
    assert shown == {"p0", "p1"}
    everyone = {e["problem"] for _ in range(50) for e in pool.sample(rng, 1)}
    assert everyone == {e["problem"] for e in pool.entries()} and len(everyone) == len(pool)
    unseeded = Pool(archive)
    unseeded.add(entries(3, start=20), [2, 3, 4])
    assert {e["problem"] for _ in range(30) for e in unseeded.sample(rng, 1, seeds_only=True)} == {"p20", "p21", "p22"}


def test_pool_files_reload_to_the_same_members(tmp_path):
    archive = Archive(16, folder=tmp_path)
    pool = Pool(archive, max_size=6, folder=tmp_path)
    archive.add(unit(1))
    pool.add(entries(1, seed=True), [0])
    for step in range(4):
        first = len(archive)
        archive.add(unit(3, seed=step + 1))
        pool.add(entries(2, start=10 * step), [first, first + 2])  # a third of each batch is not admitted
    lengths = {**archive.lengths(), **pool.lengths()}
    assert lengths[POOL_FILE] == (tmp_path / POOL_FILE).stat().st_size
    loaded_archive = Archive(16)
    loaded_archive.load(tmp_path, archive.state())
    loaded = Pool(loaded_archive, max_size=6)
    loaded.load(tmp_path, pool.state())
    assert loaded.entries() == pool.entries() and np.array_equal(loaded.members, pool.members)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert loaded.sample(rng_a, 3) == pool.sample(rng_b, 3)
    (tmp_path / POOL_FILE).write_text('{"problem": "no id"}\n')
    with pytest.raises(PoolError, match=POOL_FILE):
        Pool(loaded_archive).load(tmp_path, {"evicted": 0})
    with pytest.raises(PoolError, match="the pool is empty"):
        Pool(archive).sample(np.random.default_rng(0), 1)


@pytest.mark.parametrize("requires_derived", [False, True])
def test_eligibility_by_admission_mode(requires_derived):
    from selfplay.curriculum.pool import eligible

    def admits(valid, solve_rate, admission, derived):
        return eligible(valid, solve_rate, admission, 0.5, 0.9, derived, requires_derived)

    assert admits(True, 0.0, "valid", False) and admits(True, None, "valid", False)
    assert not admits(False, 0.7, "valid", True)
    # where the reward requires a derived answer, 'in_band' agrees with it: no problem the band does not pay for
    assert admits(True, 0.5, "in_band", False) is admits(True, 0.9, "in_band", False) is (not requires_derived)
    assert admits(True, 0.5, "in_band", True) and admits(True, 0.9, "in_band", True)
    assert not admits(True, 0.25, "in_band", True)
    assert not admits(True, None, "in_band", True)
    assert not admits(False, 0.7, "in_band", True)
    assert admits(True, 0.7, "in_band_derived", True)
    assert not admits(True, 0.7, "in_band_derived", False)
    assert not admits(True, 0.25, "in_band_derived", True)
    assert not admits(False, 0.7, "in_band_derived", True)


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_distinct_rejects_near_duplicates_of_members_and_of_each_other_but_not_of_other_archive_rows(index_type):
    archive = Archive(3, index_type)
    pool = Pool(archive)
    archive.add(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32))
    pool.add([{"problem": "old", "seed": True}], [0])  # row 1 is archived but was never admitted
    close = np.array([0.99, 0.141, 0.0], np.float32) / np.linalg.norm([0.99, 0.141, 0.0])
    vectors = np.stack([close, [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).astype(np.float32)
    assert pool.distinct(vectors, dedup_threshold=0.95) == [1, 3]


def test_a_threshold_of_one_catches_every_exact_duplicate_and_none_admits_everything():
    embedder_like = unit(200, dim=384, seed=3)
    # The same texts embedded again: float32 cosines of identical vectors land a few ulps either side of 1.0.
    again = (embedder_like.astype(np.float64) * (1 + 1e-7)).astype(np.float32)
    archive = Archive(384)
    archive.add(embedder_like)
    sims, _ = archive.search(again, 1)
    assert (sims[:, 0] < 1.0).any(), "the test needs cosines just under 1.0"
    assert not_near_duplicates(again, archive, threshold=1.0) == []
    pool = Pool(archive)
    pool.add(entries(200), list(range(200)))
    assert pool.distinct(again, dedup_threshold=None) == list(range(200))


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "auto"])
@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_an_archive_rebuilt_from_its_files_answers_as_the_one_that_grew(tmp_path, index_type, storage):
    """Same neighbours, not just similar ones: an HNSW graph is rebuilt batch by batch, from its last snapshot."""
    archive = Archive(16, index_type, storage, exact_limit=1000, folder=tmp_path)
    grown(archive, batches=4)
    state = archive.state()  # a checkpoint: an HNSW index writes its snapshot here (auto switches to one later)
    snapshotted = archive.is_hnsw
    grown_more = unit(500, seed=9)
    for start in range(0, 500, 100):
        archive.add(grown_more[start : start + 100])
    assert sorted(tmp_path.glob("index-*.faiss")) == ([snapshot_path(tmp_path, 1000)] if snapshotted else [])
    assert archive.is_hnsw == (index_type != "flat")
    loaded = Archive(16, index_type, storage, exact_limit=1000)
    loaded.load(tmp_path, state)
    assert loaded.snapshot_rows == (1000 if snapshotted else 0)
    assert type(loaded.index) is type(archive.index) and len(loaded) == 1500
    queries = unit(50, seed=1)
    for expected, got in zip(archive.search(queries, 5), loaded.search(queries, 5)):
        np.testing.assert_array_equal(expected, got)
    loaded.add(unit(5, seed=2))  # a loaded archive keeps growing
    archive.add(unit(5, seed=2))
    for expected, got in zip(archive.search(queries, 5), loaded.search(queries, 5)):
        np.testing.assert_array_equal(expected, got)
    if archive.is_hnsw:  # at this size any graph finds the exact neighbours: compare the graphs themselves
        for part in ("levels", "neighbors"):
            np.testing.assert_array_equal(*(faiss.vector_to_array(getattr(a.index.hnsw, part)) for a in (archive, loaded)))


def test_archive_files_that_disagree_are_an_error_naming_the_file(tmp_path):
    archive = Archive(16, folder=tmp_path)
    archive.add(unit(10))
    with open(tmp_path / EMBEDDINGS, "ab") as handle:
        handle.write(b"\0" * 64)  # one row more than batches.bin covers
    with pytest.raises(ArchiveError, match=EMBEDDINGS):
        Archive(16).load(tmp_path, {"snapshot_rows": 0})
