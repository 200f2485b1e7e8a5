import numpy as np
import pytest

from selfplay.curriculum.pool import Pool, PoolError
from selfplay.novelty import Archive, neighbour_similarities, not_near_duplicates, novelty_scores


def unit(n, dim=16, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def entries(n, seed=False, start=0):
    return [{"problem": f"p{start + i}", "seed": seed} for i in range(n)]


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_index_kinds_find_the_exact_nearest_neighbour(index_type):
    vectors = unit(2000)
    archive = Archive(16, index_type, nlist=8)  # ivf switches on after 39 * 8 vectors
    archive.add(vectors)
    sims, ids = archive.search(vectors[:50], 1)
    assert (ids[:, 0] == np.arange(50)).mean() >= 0.95 and np.allclose(sims[:, 0][ids[:, 0] == np.arange(50)], 1.0, atol=1e-5)
    if index_type == "ivf":
        assert type(archive.index).__name__ == "IndexIVFFlat"


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


def test_fifo_eviction_keeps_seeds_and_index_in_step():
    pool = Pool(16, max_size=10)
    pool.add(entries(2, seed=True), unit(2, seed=1))
    for step in range(5):
        pool.add(entries(3, start=10 * step), unit(3, seed=step + 2))
    assert len(pool) <= 10 and len(pool.archive) == len(pool.embeddings) == len(pool)
    assert [e["problem"] for e in pool.entries[:2]] == ["p0", "p1"] and all(e["seed"] for e in pool.entries[:2])
    assert pool.entries[-1]["problem"] == "p42"  # newest kept, oldest non-seeds gone
    sims, ids = pool.archive.search(pool.embeddings, 1)
    assert (ids[:, 0] == np.arange(len(pool))).all()


def test_save_load_and_disagreement_is_an_error(tmp_path):
    pool = Pool(16)
    pool.add(entries(4), unit(4))
    pool.save(tmp_path / "pool")
    loaded = Pool(16)
    loaded.load(tmp_path / "pool")
    assert loaded.entries == pool.entries and np.array_equal(loaded.embeddings, pool.embeddings)
    (tmp_path / "pool" / "pool.jsonl").write_text('{"problem": "only one"}\n')
    with pytest.raises(PoolError, match="disagree in size"):
        Pool(16).load(tmp_path / "pool")
    with pytest.raises(PoolError, match="the pool is empty"):
        Pool(16).sample(np.random.default_rng(0), 1)


def test_eligibility_by_admission_mode():
    from selfplay.curriculum.pool import eligible

    assert eligible(True, 0.0, "valid", 0.5, 0.9) and eligible(True, None, "valid", 0.5, 0.9)
    assert not eligible(False, 0.7, "valid", 0.5, 0.9)
    assert eligible(True, 0.5, "in_band", 0.5, 0.9) and eligible(True, 0.9, "in_band", 0.5, 0.9)
    assert not eligible(True, 0.25, "in_band", 0.5, 0.9) and not eligible(True, None, "in_band", 0.5, 0.9)
    assert not eligible(False, 0.7, "in_band", 0.5, 0.9)


def test_admit_rejects_near_duplicates_of_the_pool_and_of_each_other():
    pool = Pool(3)
    pool.add([{"problem": "old", "seed": True}], np.array([[1.0, 0.0, 0.0]], np.float32))
    close = np.array([0.99, 0.141, 0.0], np.float32) / np.linalg.norm([0.99, 0.141, 0.0])
    vectors = np.stack([close, [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).astype(np.float32)
    entries = [{"problem": name, "seed": False} for name in ("near old", "new", "same as new", "other")]
    assert pool.admit(entries, vectors, dedup_threshold=0.95) == [1, 3]
    assert [e["problem"] for e in pool.entries] == ["old", "new", "other"] and len(pool.archive) == 3


def test_a_threshold_of_one_catches_every_exact_duplicate_and_none_admits_everything():
    embedder_like = unit(200, dim=384, seed=3)
    # The same texts embedded again: float32 cosines of identical vectors land a few ulps either side of 1.0.
    again = (embedder_like.astype(np.float64) * (1 + 1e-7)).astype(np.float32)
    archive = Archive(384)
    archive.add(embedder_like)
    sims, _ = archive.search(again, 1)
    assert (sims[:, 0] < 1.0).any(), "the test needs cosines just under 1.0"
    assert not_near_duplicates(again, archive, threshold=1.0) == []
    pool = Pool(384)
    pool.add(entries(200), embedder_like)
    assert pool.admit(entries(200, start=200), again, dedup_threshold=None) == list(range(200))


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_every_index_kind_saves_and_loads_to_the_same_answers(tmp_path, index_type):
    vectors = unit(400)
    archive = Archive(16, index_type, nlist=8)
    archive.add(vectors)
    archive.save(tmp_path / "index.faiss")
    loaded = Archive(16, index_type, nlist=8)
    loaded.load(tmp_path / "index.faiss")
    assert type(loaded.index) is type(archive.index) and len(loaded) == 400
    queries = unit(20, seed=1)
    for expected, got in zip(archive.search(queries, 5), loaded.search(queries, 5)):
        np.testing.assert_array_equal(expected, got)
    loaded.add(unit(5, seed=2))  # a loaded index keeps growing
    assert len(loaded) == 405
