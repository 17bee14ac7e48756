"""Inner-product nearest-neighbour search over item embeddings with FAISS (no Kedro here).

The index holds the item tower's embeddings, one row per item: the FAISS id of a row is its
position ``0 .. N-1``, i.e. the item index ``item_idx``. A query is a user embedding and the
score of an item is the dot product ``user · item``, higher is better, the same score as
:func:`recsys_kedro.evaluation.retrieval.embedding_score_fn`.

Three kinds of index (:class:`IndexConfig`):

* ``exact``: ``IndexFlatIP``, brute force over the whole catalogue;
* ``ivf``: ``IndexIVFFlat`` with the inner-product metric; k-means (seeded) puts the items
  into ``nlist`` cells, a query scans the ``nprobe`` best cells;
* ``hnsw``: ``IndexHNSWFlat`` with the inner-product metric; a graph search with a
  candidate list of ``ef_search`` (at least the number of results asked for).

:func:`search` follows the ranking rules of :mod:`recsys_kedro.evaluation.retrieval`:

* **Ties** go to the lower item index: each result row is the sort of ``(-score, item)``.
  FAISS's own order among equal scores is unspecified, so :func:`search` re-sorts what FAISS
  returns, and when the k-th kept score equals the lowest score FAISS fetched for that row
  (so an item left out of the fetch could tie with it and have a lower index) it searches
  that row again with twice as many results, up to the whole catalogue. For ``exact``
  the result is therefore exactly the top-k of the full catalogue under the evaluation's
  rules, for any number of ties, given the float32 scores FAISS computes. (FAISS sums the
  dot products in its own order, so a score can differ from a torch/numpy product by a
  rounding error, which can swap two items whose scores differ by that little; with
  scores exact in float32, such as small integer embeddings, the results are identical.)
  For ``ivf`` / ``hnsw`` the same rule orders the candidates the index finds; which
  candidates it finds is approximate.
* **Excluded items** (e.g. a user's training items) are never returned. They are removed
  from what FAISS returns, and FAISS is asked for ``k + (largest exclusion count among the
  queries of the chunk) + 1`` results, so exclusions never leave fewer than ``k`` items
  when the catalogue has enough (a row that still falls short is searched again, wider);
  the one extra result shows whether the k-th score ties with items beyond the fetch, so
  without such ties one FAISS call per chunk suffices. ``hnsw`` is the exception: a wider
  fetch would widen its search too (FAISS searches with ``max(efSearch, results asked)``),
  so a user with 800 excluded items would get an almost exhaustive search instead of the
  configured one. There each query is searched alone with its exclusions as a FAISS
  ``IDSelector`` and ``efSearch`` as configured: the breadth is ``ef_search`` for every
  query, and so is the recall an evaluation measures.
* **k larger than the catalogue** (or than what remains after exclusions, or than what an
  approximate index can reach) is allowed: every row still has exactly ``k`` columns and
  the missing tail is item ``-1`` with score ``-inf``.

Threads: FAISS parallelises with OpenMP and by default uses all cores. :func:`build_index`
and :func:`search` take ``threads``; ``None`` leaves FAISS's setting alone, an integer sets
the OpenMP thread count for the duration of the call and restores the previous count
afterwards (a process-wide setting, so do not change it from two Python threads at once).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import faiss
import numpy as np

__all__ = [
    "INDEX_KINDS",
    "IndexConfig",
    "build_index",
    "default_nlist",
    "deserialize_index",
    "recall_vs_exact",
    "search",
    "serialize_index",
]

INDEX_KINDS = ("exact", "ivf", "hnsw")
"""The kinds of index :func:`build_index` can build."""

_MIN_POINTS_PER_CENTROID = 39  # FAISS warns when k-means gets fewer points per centroid
_MAX_FETCH_CELLS = 1 << 22  # queries x fetched results per FAISS call, bounds memory


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        checked = operator.index(value)  # type: ignore[arg-type]
    except TypeError as err:
        raise ValueError(f"{name} must be an integer, got {value!r}") from err
    if checked < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {checked}")
    return checked


@dataclass(frozen=True)
class IndexConfig:
    """How to build (and search) the item index.

    Attributes:
        kind: ``"exact"`` (``IndexFlatIP``), ``"ivf"`` (``IndexIVFFlat``, inner product) or
            ``"hnsw"`` (``IndexHNSWFlat``, inner product).
        nlist: ivf cells; ``None`` picks :func:`default_nlist` of the catalogue size.
        nprobe: ivf cells scanned per query (capped at ``nlist``).
        hnsw_m: hnsw neighbours per node.
        ef_construction: hnsw candidate list while building.
        ef_search: hnsw candidate list while searching (FAISS uses at least ``k``).
        seed: seed of the ivf k-means.

    ``nprobe`` and ``ef_search`` are stored in the index, so they survive
    :func:`serialize_index`.
    """

    kind: str = "exact"
    nlist: int | None = None
    nprobe: int = 8
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(
                f"unknown index kind {self.kind!r}; choose one of {', '.join(INDEX_KINDS)}"
            )
        if self.nlist is not None:
            _check_int(self.nlist, "nlist", 1)
        _check_int(self.nprobe, "nprobe", 1)
        _check_int(self.hnsw_m, "hnsw_m", 2)
        _check_int(self.ef_construction, "ef_construction", 1)
        _check_int(self.ef_search, "ef_search", 1)
        seed = _check_int(self.seed, "seed", 0)
        if seed >= 2**31:
            raise ValueError(f"seed must be < 2**31, got {seed}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> IndexConfig:
        """An :class:`IndexConfig` from a parameters mapping (e.g. Kedro parameters).

        Missing keys take their defaults; unknown keys raise a ``ValueError`` naming them.
        """
        if not isinstance(params, Mapping):
            raise ValueError(f"index parameters must be a mapping, got {type(params).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(key) for key in params if key not in known)
        if unknown:
            raise ValueError(
                f"unknown index parameter(s) {unknown}; valid ones are {', '.join(known)}"
            )
        return cls(**dict(params))


def default_nlist(n_items: int) -> int:
    """ivf cells for ``n_items`` items: about ``4 * sqrt(n_items)``, at most
    ``n_items // 39`` (so k-means gets ~39 points per centroid, as FAISS wants), at least 1.
    """
    n_items = _check_int(n_items, "n_items", 1)
    return max(1, min(round(4 * math.sqrt(n_items)), n_items // _MIN_POINTS_PER_CENTROID))


# --------------------------------------------------------------------------------------
# building and (de)serialising
# --------------------------------------------------------------------------------------


@contextmanager
def _faiss_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` OpenMP threads (``None``: leave FAISS's setting)."""
    if threads is None:
        yield
        return
    threads = _check_int(threads, "threads", 1)
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _as_float32_matrix(values: object, name: str, *, allow_no_rows: bool) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dim), got shape {array.shape}")
    if array.shape[0] == 0 and not allow_no_rows:
        raise ValueError(f"{name} is empty (shape {array.shape}): at least one row is needed")
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column, got shape {array.shape}")
    with np.errstate(over="ignore"):  # a float64 too large for float32 becomes inf
        array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} hold NaN or infinite values (after conversion to float32)")
    return array


def build_index(
    item_embeddings: np.ndarray, config: IndexConfig | None = None, *, threads: int | None = None
) -> faiss.Index:
    """A FAISS index over ``item_embeddings`` ``(N, D)``; row ``i`` gets id ``i``.

    The embeddings are converted to float32 (what FAISS stores). ``threads``: see the module
    docstring.

    Raises:
        ValueError: if the embeddings are not a non-empty 2-D real array, hold NaN or
            infinite values, or ``config.nlist`` exceeds the number of items.
    """
    config = IndexConfig() if config is None else config
    if not isinstance(config, IndexConfig):
        raise ValueError(f"config must be an IndexConfig, got {type(config).__name__}")
    items = _as_float32_matrix(item_embeddings, "item_embeddings", allow_no_rows=False)
    n_items, dim = items.shape

    with _faiss_threads(threads):
        if config.kind == "exact":
            index = faiss.IndexFlatIP(dim)
        elif config.kind == "ivf":
            nlist = default_nlist(n_items) if config.nlist is None else config.nlist
            if nlist > n_items:
                raise ValueError(
                    f"nlist={nlist} exceeds the number of items ({n_items}); k-means needs at "
                    f"least one item per cell (~{_MIN_POINTS_PER_CENTROID} for good cells)"
                )
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = config.seed
            index.train(items)
            index.nprobe = min(config.nprobe, nlist)
        else:  # hnsw
            index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.ef_construction
            index.hnsw.efSearch = config.ef_search
        index.add(items)
    return index


def serialize_index(index: faiss.Index) -> bytes:
    """The bytes of ``index`` (FAISS's own format, as ``faiss.write_index`` writes)."""
    if not isinstance(index, faiss.Index):
        raise ValueError(f"expected a faiss.Index, got {type(index).__name__}")
    return faiss.serialize_index(index).tobytes()


def deserialize_index(data: bytes | bytearray | memoryview) -> faiss.Index:
    """The index that :func:`serialize_index` turned into ``data``.

    Raises:
        ValueError: if ``data`` is not bytes or not a FAISS index.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"expected the bytes of a FAISS index, got {type(data).__name__}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise ValueError("cannot read a FAISS index from empty bytes")
    try:
        return faiss.deserialize_index(buffer)
    except RuntimeError as exc:
        raise ValueError(f"the bytes are not a readable FAISS index: {exc}") from exc


# --------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------


def _check_exclusions(
    exclude: Sequence[np.ndarray] | None, n_queries: int, n_items: int
) -> list[np.ndarray]:
    """``exclude`` as one sorted, distinct int64 array per query (empty when ``None``)."""
    empty = np.zeros(0, dtype=np.int64)
    if exclude is None:
        return [empty] * n_queries
    if len(exclude) != n_queries:
        raise ValueError(
            f"exclude must hold one array per query: {n_queries} queries, "
            f"{len(exclude)} exclusion arrays"
        )
    checked = []
    for row, values in enumerate(exclude):
        array = np.asarray(values)
        if array.ndim != 1:
            raise ValueError(f"exclude[{row}] must be a 1-D array, got shape {array.shape}")
        if array.size == 0:
            checked.append(empty)
            continue
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"exclude[{row}] must hold item ids, got dtype {array.dtype}")
        array = np.unique(array.astype(np.int64, copy=False))
        if array[0] < 0 or array[-1] >= n_items:
            raise ValueError(
                f"exclude[{row}] holds item ids outside [0, {n_items}): "
                f"values in [{array[0]}, {array[-1]}]"
            )
        checked.append(array)
    return checked


def _rank_fetched(
    distances: np.ndarray,
    labels: np.ndarray,
    exclusions: list[np.ndarray],
    k: int,
    n_items: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``k`` of one FAISS result, sorted by ``(-score, item)``, exclusions removed.

    Returns ``(done, scores, items)``: scores ``(R, k)`` / items ``(R, k)`` padded with
    ``-inf`` / ``-1``, and ``done[r]`` false where row ``r`` must be fetched wider (too few
    kept items, or the k-th kept score ties with the lowest fetched one) and the fetch did
    not already cover everything the index can return.
    """
    n_rows, n_fetched = labels.shape
    valid = labels >= 0
    keep = valid.copy()
    counts = np.fromiter((e.size for e in exclusions), dtype=np.int64, count=n_rows)
    if counts.any():
        excl_keys = np.repeat(np.arange(n_rows, dtype=np.int64), counts) * n_items
        excl_keys += np.concatenate(exclusions)  # sorted: rows ascending, items sorted
        fetched_keys = np.arange(n_rows, dtype=np.int64)[:, None] * n_items + labels
        pos = np.minimum(np.searchsorted(excl_keys, fetched_keys), excl_keys.size - 1)
        keep &= excl_keys[pos] != fetched_keys

    sort_scores = np.where(keep, distances, -np.inf)
    sort_items = np.where(keep, labels, n_items)
    order = np.lexsort((sort_items, -sort_scores, ~keep), axis=-1)
    width = min(k, n_fetched)
    order = order[:, :width]
    top_scores = np.take_along_axis(sort_scores, order, axis=1).astype(np.float32)
    top_items = np.take_along_axis(sort_items, order, axis=1)
    n_kept = keep.sum(axis=1)
    cols = np.arange(width)
    padded = cols[None, :] >= n_kept[:, None]
    top_scores[padded] = -np.inf
    top_items[padded] = -1

    scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
    items = np.full((n_rows, k), -1, dtype=np.int64)
    scores[:, :width] = top_scores
    items[:, :width] = top_items

    # Unfetched items score at most the lowest fetched score (excluded items included).
    lowest = np.where(valid, distances, np.inf).min(axis=1)
    exhausted = (~valid).any(axis=1) | (n_fetched >= n_items)
    has_k = n_kept >= k
    kth = scores[:, k - 1] if width == k else np.full(n_rows, -np.inf, dtype=np.float32)
    done = exhausted | (has_k & (kth > lowest))
    return done, scores, items


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    exclude: Sequence[np.ndarray] | None = None,
    *,
    batch_size: int = 4096,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items for each query, by inner product, best first.

    Args:
        index: an index from :func:`build_index` (or :func:`deserialize_index`).
        queries: ``(U, D)`` user embeddings (converted to float32).
        k: results per query, ``>= 1``; may exceed the catalogue.
        exclude: ``None`` or one array of item ids per query, never returned for it
            (duplicates fine, ids must lie in ``[0, N)``).
        batch_size: queries per chunk; a chunk's FAISS calls are further split so that
            queries x fetched results stays bounded (about 4M).
        threads: OpenMP threads for the search (see the module docstring).

    Returns:
        ``(scores, items)``: float32 ``(U, k)`` and int64 ``(U, k)``, each row sorted by
        ``(-score, item)``; where fewer than ``k`` items are available the tail is item
        ``-1`` with score ``-inf``. Ranking rules: see the module docstring.

    Raises:
        ValueError: on a non-FAISS index, queries that are not a 2-D finite real array of
            the index's dimension, ``k`` or ``batch_size`` < 1, or malformed exclusions.
    """
    if not isinstance(index, faiss.Index):
        raise ValueError(f"index must be a faiss.Index, got {type(index).__name__}")
    k = _check_int(k, "k", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    queries = _as_float32_matrix(queries, "queries", allow_no_rows=True)
    if queries.shape[1] != index.d:
        raise ValueError(
            f"queries have dimension {queries.shape[1]} but the index has dimension {index.d}"
        )
    n_queries = queries.shape[0]
    n_items = int(index.ntotal)
    exclusions = _check_exclusions(exclude, n_queries, n_items)

    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    items = np.full((n_queries, k), -1, dtype=np.int64)
    if n_queries == 0 or n_items == 0:
        return scores, items

    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        with _faiss_threads(threads):
            return _search_hnsw(index, int(hnsw.efSearch), queries, k, exclusions)

    with _faiss_threads(threads):
        for start in range(0, n_queries, batch_size):
            rows = np.arange(start, min(start + batch_size, n_queries))
            most_excluded = max(exclusions[r].size for r in rows)
            # +1: a sentinel that shows whether the k-th kept score ties beyond the fetch
            fetch = min(n_items, k + most_excluded + 1)
            while rows.size:
                step = max(1, _MAX_FETCH_CELLS // fetch)
                again = []
                for sub_start in range(0, rows.size, step):
                    sub = rows[sub_start : sub_start + step]
                    distances, labels = index.search(queries[sub], fetch)
                    done, sub_scores, sub_items = _rank_fetched(
                        distances, labels, [exclusions[r] for r in sub], k, n_items
                    )
                    scores[sub[done]] = sub_scores[done]
                    items[sub[done]] = sub_items[done]
                    again.append(sub[~done])
                rows = np.concatenate(again)
                fetch = min(n_items, 2 * fetch)
    return scores, items


def _search_hnsw(
    index: faiss.Index,
    ef_search: int,
    queries: np.ndarray,
    k: int,
    exclusions: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """HNSW search at the configured breadth: queries without exclusions together, every
    other query alone with its exclusions as an ``IDSelector`` (one FAISS call each)."""
    n_queries = queries.shape[0]
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    items = np.full((n_queries, k), -1, dtype=np.int64)

    def keep(rows: np.ndarray, distances: np.ndarray, labels: np.ndarray) -> None:
        distances = np.where(labels < 0, -np.inf, distances)
        order = np.lexsort((np.where(labels < 0, np.iinfo(np.int64).max, labels), -distances))
        scores[rows] = np.take_along_axis(distances, order, axis=1)
        items[rows] = np.take_along_axis(labels, order, axis=1)

    free = np.array([r for r in range(n_queries) if exclusions[r].size == 0], dtype=np.int64)
    if free.size:
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef_search
        distances, labels = index.search(queries[free], k, params=params)
        keep(free, distances, labels)
    for row in range(n_queries):
        if exclusions[row].size == 0:
            continue
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef_search
        selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(exclusions[row]))
        params.sel = selector  # (kept alive by the name until the search returns)
        distances, labels = index.search(queries[row : row + 1], k, params=params)
        keep(np.array([row]), distances, labels)
    return scores, items


# --------------------------------------------------------------------------------------
# quality of an approximate index
# --------------------------------------------------------------------------------------


def recall_vs_exact(approx_items: np.ndarray, exact_items: np.ndarray) -> float:
    """ANN recall: mean over rows of ``|approx ∩ exact| / |exact|``, ``-1`` padding ignored.

    ``approx_items`` / ``exact_items`` are item-id matrices with the same number of rows
    (the widths may differ, e.g. recall 10@100); each row's ids count once. Rows whose
    exact list is all padding have no defined recall and are left out of the mean.

    Raises:
        ValueError: on non-2-D or non-integer inputs, different row counts, or when no
            row has an exact item.
    """
    approx = np.asarray(approx_items)
    exact = np.asarray(exact_items)
    for name, array in (("approx_items", approx), ("exact_items", exact)):
        if array.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (rows, k), got shape {array.shape}")
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must hold item ids, got dtype {array.dtype}")
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(
            f"approx_items and exact_items must have the same number of rows, got "
            f"{approx.shape[0]} and {exact.shape[0]}"
        )
    approx = approx.astype(np.int64, copy=False)
    exact = exact.astype(np.int64, copy=False)
    n_rows = exact.shape[0]
    span = int(max(approx.max(initial=-1), exact.max(initial=-1))) + 1

    def row_keys(matrix: np.ndarray) -> np.ndarray:
        rows = np.broadcast_to(np.arange(n_rows, dtype=np.int64)[:, None], matrix.shape)
        valid = matrix >= 0
        return np.unique(rows[valid] * span + matrix[valid])

    exact_keys = row_keys(exact)
    if exact_keys.size == 0:
        raise ValueError("exact_items holds no item (only -1 padding): recall is undefined")
    approx_keys = row_keys(approx)
    hits = np.isin(approx_keys, exact_keys, assume_unique=True)
    n_hits = np.bincount(approx_keys[hits] // span, minlength=n_rows)
    n_exact = np.bincount(exact_keys // span, minlength=n_rows)
    rated = n_exact > 0
    return float(np.mean(n_hits[rated] / n_exact[rated]))
