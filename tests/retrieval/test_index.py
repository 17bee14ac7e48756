"""FAISS item index: exact search against the evaluation's ranking rules, ANN recall,
padding, input checks and serialisation."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from recsys_kedro.evaluation.retrieval import embedding_score_fn, topk_items
from recsys_kedro.retrieval import (
    IndexConfig,
    build_index,
    default_nlist,
    deserialize_index,
    recall_vs_exact,
    search,
    serialize_index,
)

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def brute_force_topk(
    queries: np.ndarray, items: np.ndarray, k: int, exclude: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reference: full sort of ``(-score, item)`` per row in float64, exclusions dropped,
    padded with -1 / -inf to exactly ``k`` columns."""
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    n_items = items.shape[0]
    out_items = np.full((queries.shape[0], k), -1, dtype=np.int64)
    out_scores = np.full((queries.shape[0], k), -np.inf)
    for row in range(queries.shape[0]):
        allowed = np.ones(n_items, dtype=bool)
        if exclude is not None:
            allowed[np.asarray(exclude[row], dtype=np.int64)] = False
        candidates = np.flatnonzero(allowed)
        order = np.lexsort((candidates, -scores[row, candidates]))[:k]
        out_items[row, : order.size] = candidates[order]
        out_scores[row, : order.size] = scores[row, candidates[order]]
    return out_scores, out_items


def small_int_embeddings(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """Embeddings in {-1, 0, 1}: dot products are exact in float32 and tie a lot."""
    return rng.integers(-1, 2, size=(rows, dim)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, dim: int, n_clusters: int) -> np.ndarray:
    centres = rng.normal(size=(n_clusters, dim))
    labels = rng.integers(0, n_clusters, size=n)
    return (centres[labels] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def random_exclusions(rng: np.random.Generator, n_queries: int, n_items: int, most: int):
    return [
        rng.choice(n_items, size=rng.integers(0, most + 1), replace=False) for _ in range(n_queries)
    ]


# --------------------------------------------------------------------------------------
# exact search = the evaluation's ranking rules
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 7, 40, 299, 300, 350])
def test_exact_search_equals_evaluation_topk_with_ties_and_exclusions(k):
    rng = np.random.default_rng(k)
    n_items, n_users, dim = 300, 60, 3
    items = small_int_embeddings(rng, n_items, dim)
    users = small_int_embeddings(rng, n_users, dim)
    exclude = random_exclusions(rng, n_users, n_items, most=40)
    exclude[3] = np.arange(n_items - 5)  # a user with only 5 items left

    index = build_index(items, IndexConfig(kind="exact"))
    scores, got = search(index, users, k, exclude=exclude, batch_size=16)

    excl_users = np.repeat(np.arange(n_users), [e.size for e in exclude])
    excl_items = np.concatenate(exclude).astype(np.int64)
    expected = topk_items(
        embedding_score_fn(users, items),
        n_items,
        np.arange(n_users),
        k,
        exclude_users=excl_users,
        exclude_items=excl_items,
        batch_size=16,
    )
    assert got.shape == scores.shape == (n_users, k)
    assert got.dtype == np.int64 and scores.dtype == np.float32
    for row in range(n_users):
        # topk_items lets excluded items fill the tail (score -inf); search pads with -1.
        n_allowed = n_items - np.unique(exclude[row]).size
        width = min(k, n_allowed)
        np.testing.assert_array_equal(got[row, :width], expected[row, :width])
        assert (got[row, width:] == -1).all()
        assert np.isneginf(scores[row, width:]).all()
        np.testing.assert_array_equal(scores[row, :width], users[row] @ items[got[row, :width]].T)
    ref_scores, ref_items = brute_force_topk(users, items, k, exclude)
    np.testing.assert_array_equal(got, ref_items)
    np.testing.assert_array_equal(scores, ref_scores.astype(np.float32))


def test_massive_ties_at_the_cutoff_go_to_the_lowest_item_indexes():
    # 1-D popularity-like scores: thousands of items share each of three values, so the
    # k-th score ties with far more items than FAISS is first asked for.
    rng = np.random.default_rng(0)
    n_items = 3000
    items = rng.integers(0, 3, size=(n_items, 1)).astype(np.float32)
    queries = np.array([[1.0], [-1.0], [0.0], [2.0]], dtype=np.float32)
    exclude = [rng.choice(n_items, 50, replace=False) for _ in range(queries.shape[0])]
    index = build_index(items, IndexConfig(kind="exact"))
    for k in (1, 5, 100, 1500):
        scores, got = search(index, queries, k, exclude=exclude)
        ref_scores, ref_items = brute_force_topk(queries, items, k, exclude)
        np.testing.assert_array_equal(got, ref_items)
        np.testing.assert_array_equal(scores, ref_scores.astype(np.float32))


def test_exclusions_never_leave_fewer_than_k_items_when_the_catalogue_has_enough():
    rng = np.random.default_rng(1)
    items = rng.normal(size=(200, 8)).astype(np.float32)
    users = rng.normal(size=(10, 8)).astype(np.float32)
    index = build_index(items)
    # exclude each user's own 150 best items: the answer lies entirely beyond them
    _, best = brute_force_topk(users, items, 150)
    exclude = list(best)
    scores, got = search(index, users, 20, exclude=exclude)
    assert (got >= 0).all()
    for row in range(10):
        assert not np.isin(got[row], exclude[row]).any()
    _, ref_items = brute_force_topk(users, items, 20, exclude)
    np.testing.assert_array_equal(got, ref_items)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_each_chunk_fetches_k_plus_its_largest_exclusion_count_once():
    # continuous scores (no ties): one FAISS call per chunk suffices when it asks for
    # k + the chunk's largest exclusion count + 1 (the tie sentinel), even when every
    # excluded item is among the user's best.
    rng = np.random.default_rng(9)
    items = rng.normal(size=(500, 8)).astype(np.float32)
    users = rng.normal(size=(10, 8)).astype(np.float32)
    _, best = brute_force_topk(users, items, 100)
    exclude = [best[row, : 10 * row] for row in range(10)]  # 0, 10, ..., 90 of the best
    index = build_index(items)
    original, calls = index.search, []

    def spy(x, k, **kwargs):
        calls.append((x.shape[0], k))
        return original(x, k, **kwargs)

    index.search = spy
    _, got = search(index, users, 5, exclude=exclude, batch_size=4)
    assert calls == [(4, 5 + 30 + 1), (4, 5 + 70 + 1), (2, 5 + 90 + 1)]
    np.testing.assert_array_equal(got, brute_force_topk(users, items, 5, exclude)[1])


def test_padding_when_k_exceeds_what_is_available():
    rng = np.random.default_rng(2)
    items = rng.normal(size=(10, 4)).astype(np.float32)
    users = rng.normal(size=(3, 4)).astype(np.float32)
    index = build_index(items)
    exclude = [np.array([0, 1, 2]), np.arange(10), np.array([], dtype=np.int64)]
    scores, got = search(index, users, 15, exclude=exclude)
    assert got.shape == (3, 15)
    assert (got[0, :7] >= 0).all() and (got[0, 7:] == -1).all()
    assert set(got[0, :7]) == set(range(3, 10))
    assert (got[1] == -1).all() and np.isneginf(scores[1]).all()
    assert sorted(got[2, :10]) == list(range(10)) and (got[2, 10:] == -1).all()
    assert np.isfinite(scores[0, :7]).all() and np.isneginf(scores[0, 7:]).all()


def test_duplicate_exclusions_count_once():
    items = np.eye(5, dtype=np.float32)
    index = build_index(items)
    query = np.ones((1, 5), dtype=np.float32)
    _, got = search(index, query, 4, exclude=[np.array([1, 1, 1, 3, 3])])
    np.testing.assert_array_equal(got, [[0, 2, 4, -1]])


def test_no_queries_give_empty_results():
    index = build_index(np.ones((5, 3), dtype=np.float32))
    scores, got = search(index, np.zeros((0, 3), dtype=np.float32), 4)
    assert scores.shape == got.shape == (0, 4)


def test_threads_argument_restores_the_previous_setting():
    before = faiss.omp_get_max_threads()
    rng = np.random.default_rng(3)
    items = rng.normal(size=(50, 4)).astype(np.float32)
    index = build_index(items, threads=1)
    scores, got = search(index, items[:5], 3, threads=1)
    assert faiss.omp_get_max_threads() == before
    np.testing.assert_array_equal(got, brute_force_topk(items[:5], items, 3)[1])
    assert scores.shape == (5, 3)


# --------------------------------------------------------------------------------------
# approximate kinds
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        IndexConfig(kind="ivf", nprobe=16),
        IndexConfig(kind="ivf", nlist=20, nprobe=6, seed=7),
        IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=100, ef_search=128),
    ],
    ids=["ivf-default-nlist", "ivf-nlist20", "hnsw"],
)
def test_approximate_indexes_reach_high_recall_and_respect_the_rules(config):
    rng = np.random.default_rng(4)
    items = clustered(rng, 2000, 16, n_clusters=25)
    users = clustered(rng, 200, 16, n_clusters=25)
    exclude = random_exclusions(rng, 200, 2000, most=30)
    k = 10
    exact_scores, exact_items = search(build_index(items), users, k, exclude=exclude)
    index = build_index(items, config)
    scores, got = search(index, users, k, exclude=exclude)

    assert recall_vs_exact(got, exact_items) > 0.9
    assert got.shape == (200, k)
    for row in range(200):
        real = got[row][got[row] >= 0]
        assert not np.isin(real, exclude[row]).any()
        assert np.unique(real).size == real.size
        np.testing.assert_allclose(
            scores[row, : real.size], users[row] @ items[real].T, rtol=1e-5, atol=1e-4
        )
        # rows are sorted by (-score, item)
        order = np.lexsort((real, -scores[row, : real.size]))
        np.testing.assert_array_equal(order, np.arange(real.size))
    # an approximate best score never beats the exact best of the same row
    assert (scores[:, 0] <= exact_scores[:, 0] + 1e-4).all()


def test_ivf_training_is_seeded():
    rng = np.random.default_rng(5)
    items = clustered(rng, 1000, 8, n_clusters=10)
    config = IndexConfig(kind="ivf", nlist=16, nprobe=2, seed=3)
    a = build_index(items, config, threads=1)
    b = build_index(items, config, threads=1)
    assert a.nlist == 16 and a.nprobe == 2
    np.testing.assert_array_equal(search(a, items[:50], 5)[1], search(b, items[:50], 5)[1])


def test_default_nlist_follows_the_sqrt_rule_within_faiss_limits():
    assert default_nlist(1) == 1
    assert default_nlist(100) == 100 // 39  # the 39-points-per-centroid cap binds
    assert default_nlist(1_000_000) == 4000  # 4 * sqrt(N)
    for n in (1, 38, 39, 500, 2000, 10**5, 10**7):
        nlist = default_nlist(n)
        assert 1 <= nlist <= max(1, n // 39)
        assert nlist <= round(4 * np.sqrt(n))
    index = build_index(
        np.random.default_rng(6).normal(size=(2000, 4)).astype(np.float32), IndexConfig(kind="ivf")
    )
    assert index.nlist == default_nlist(2000)


def test_nprobe_is_capped_at_nlist():
    items = np.random.default_rng(7).normal(size=(100, 4)).astype(np.float32)
    index = build_index(items, IndexConfig(kind="ivf", nlist=2, nprobe=8))
    assert index.nprobe == 2
    # every cell scanned: the ivf result is the exact one
    _, got = search(index, items[:10], 5)
    np.testing.assert_array_equal(got, brute_force_topk(items[:10], items, 5)[1])


# --------------------------------------------------------------------------------------
# recall_vs_exact
# --------------------------------------------------------------------------------------


def test_recall_vs_exact_on_a_hand_made_case():
    approx = np.array([[1, 2, 3], [4, -1, -1], [7, 7, 8]])
    exact = np.array([[3, 2, 9], [4, 5, -1], [7, 8, 6]])
    # row 0: {2, 3} of 3; row 1: {4} of {4, 5}; row 2: {7, 8} of 3 (7 counts once)
    assert recall_vs_exact(approx, exact) == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert recall_vs_exact(exact, exact) == 1.0
    assert recall_vs_exact(np.full((3, 3), -1), exact) == 0.0


def test_recall_vs_exact_skips_rows_without_exact_items_and_allows_other_widths():
    approx = np.array([[5, 1, 0, 9], [2, 3, 4, 6]])
    exact = np.array([[1, 0], [-1, -1]])
    assert recall_vs_exact(approx, exact) == 1.0
    assert recall_vs_exact(approx[:, :1], exact) == 0.0


def test_recall_vs_exact_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same number of rows"):
        recall_vs_exact(np.zeros((2, 3), dtype=int), np.zeros((3, 3), dtype=int))
    with pytest.raises(ValueError, match="2-D"):
        recall_vs_exact(np.zeros(3, dtype=int), np.zeros((3, 3), dtype=int))
    with pytest.raises(ValueError, match="item ids"):
        recall_vs_exact(np.zeros((3, 3)), np.zeros((3, 3), dtype=int))
    with pytest.raises(ValueError, match="no item"):
        recall_vs_exact(np.zeros((2, 3), dtype=int), np.full((2, 3), -1))


# --------------------------------------------------------------------------------------
# configuration and input checks
# --------------------------------------------------------------------------------------


def test_from_params_builds_a_config_and_names_unknown_keys():
    config = IndexConfig.from_params({"kind": "hnsw", "ef_search": 64, "nlist": None})
    assert config == IndexConfig(kind="hnsw", ef_search=64)
    assert IndexConfig.from_params({}) == IndexConfig()
    with pytest.raises(ValueError, match=r"unknown index parameter\(s\) \['efsearch', 'typo'\]"):
        IndexConfig.from_params({"kind": "hnsw", "efsearch": 64, "typo": 1})
    with pytest.raises(ValueError, match="mapping"):
        IndexConfig.from_params([("kind", "exact")])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "annoy"}, "unknown index kind 'annoy'; choose one of exact, ivf, hnsw"),
        ({"nlist": 0}, "nlist must be >= 1"),
        ({"nprobe": 0}, "nprobe must be >= 1"),
        ({"nprobe": 2.5}, "nprobe must be an integer"),
        ({"nprobe": True}, "nprobe must be an integer"),
        ({"hnsw_m": 1}, "hnsw_m must be >= 2"),
        ({"ef_construction": 0}, "ef_construction must be >= 1"),
        ({"ef_search": 0}, "ef_search must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"seed": 2**31}, "seed must be < 2"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        IndexConfig(**kwargs)


@pytest.mark.parametrize(
    ("embeddings", "message"),
    [
        (np.zeros((0, 4), dtype=np.float32), "empty"),
        (np.zeros(4, dtype=np.float32), "2-D"),
        (np.zeros((2, 3, 4), dtype=np.float32), "2-D"),
        (np.zeros((3, 0), dtype=np.float32), "at least one column"),
        (np.array([[1.0, np.nan]], dtype=np.float32), "NaN or infinite"),
        (np.array([[1.0, np.inf]]), "NaN or infinite"),
        (np.array([[1e300, 0.0]]), "NaN or infinite"),  # overflows float32
        (np.array([["a", "b"]]), "real numbers"),
        (np.ones((2, 2), dtype=bool), "real numbers"),
    ],
)
def test_build_index_rejects_bad_embeddings(embeddings, message):
    with pytest.raises(ValueError, match=message):
        build_index(embeddings)


def test_build_index_rejects_nlist_above_the_catalogue_and_a_non_config():
    items = np.ones((10, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"nlist=11 exceeds the number of items \(10\)"):
        build_index(items, IndexConfig(kind="ivf", nlist=11))
    with pytest.raises(ValueError, match="IndexConfig"):
        build_index(items, {"kind": "exact"})


def test_search_rejects_bad_inputs():
    index = build_index(np.eye(4, dtype=np.float32))
    queries = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="dimension 3 but the index has dimension 4"):
        search(index, np.ones((2, 3), dtype=np.float32), 2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        search(index, queries, 0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        search(index, queries, 1, batch_size=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        search(index, np.array([[np.nan, 0, 0, 0]]), 1)
    with pytest.raises(ValueError, match="one array per query: 2 queries, 1 exclusion"):
        search(index, queries, 1, exclude=[np.array([0])])
    with pytest.raises(ValueError, match=r"exclude\[1\] holds item ids outside \[0, 4\)"):
        search(index, queries, 1, exclude=[np.array([0]), np.array([4])])
    with pytest.raises(ValueError, match=r"exclude\[0\] must hold item ids"):
        search(index, queries, 1, exclude=[np.array([0.5]), np.array([1])])
    with pytest.raises(ValueError, match="faiss.Index"):
        search(np.eye(4), queries, 1)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        search(index, queries, 1, threads=0)


# --------------------------------------------------------------------------------------
# serialisation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        IndexConfig(kind="exact"),
        IndexConfig(kind="ivf", nlist=10, nprobe=3),
        IndexConfig(kind="hnsw", hnsw_m=8, ef_construction=40, ef_search=20),
    ],
    ids=["exact", "ivf", "hnsw"],
)
def test_serialize_round_trip_gives_identical_results(config):
    rng = np.random.default_rng(8)
    items = clustered(rng, 500, 8, n_clusters=10)
    users = rng.normal(size=(40, 8)).astype(np.float32)
    exclude = random_exclusions(rng, 40, 500, most=10)
    index = build_index(items, config)
    data = serialize_index(index)
    assert isinstance(data, bytes) and data
    restored = deserialize_index(data)
    assert type(restored) is type(index) and restored.ntotal == 500
    if config.kind == "ivf":
        assert restored.nprobe == 3 and restored.nlist == 10
    if config.kind == "hnsw":
        assert restored.hnsw.efSearch == 20
    before = search(index, users, 12, exclude=exclude, threads=1)
    after = search(restored, users, 12, exclude=exclude, threads=1)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    assert deserialize_index(bytearray(data)).ntotal == 500


def test_deserialize_rejects_garbage():
    with pytest.raises(ValueError, match="not a readable FAISS index"):
        deserialize_index(b"garbage bytes")
    with pytest.raises(ValueError, match="empty bytes"):
        deserialize_index(b"")
    with pytest.raises(ValueError, match="bytes of a FAISS index"):
        deserialize_index("a string")
    with pytest.raises(ValueError, match="faiss.Index"):
        serialize_index(object())


def test_hnsw_searches_at_the_configured_breadth_whatever_is_excluded():
    """A wider fetch to make up for excluded items would widen HNSW's search with it (FAISS
    searches with max(efSearch, results asked)): 1,000 excluded items would make it nearly
    exhaustive. The exclusions go to FAISS as a selector instead, and efSearch stays."""
    rng = np.random.default_rng(3)
    items = rng.normal(size=(2000, 16)).astype(np.float32)
    users = rng.normal(size=(5, 16)).astype(np.float32)
    index = build_index(items, IndexConfig(kind="hnsw", hnsw_m=16, ef_search=8))
    excluded = [np.arange(1000, dtype=np.int64)] * 5
    faiss.cvar.hnsw_stats.reset()
    scores, found = search(index, users, 10, exclude=excluded)
    per_query = faiss.cvar.hnsw_stats.ndis / 5
    assert per_query < 2000 / 4, per_query  # an exhaustive search computes ~2,000
    assert (found >= 1000).all() and (np.diff(scores, axis=1) <= 0).all()
