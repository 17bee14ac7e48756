"""Synthetic click logs whose labels come from a PLANTED model, so the best possible AUC is known.

Why: the Databricks DLRM notebook trains on uniformly random labels, so its test AUC is 0.5 by
construction and nobody can tell whether the model (or the pipeline around it) is any good.
Here every label is drawn from a known probability ``p_true`` that is stored beside it, so a
trained model can be judged against the Bayes-optimal one: ``AUC(p_true, label)`` (the *oracle
AUC*) is the ceiling, and ``test AUC / oracle AUC`` says how much of the learnable signal the
model found.

The planted model (one row, ``F = num_sparse`` sparse features, ``D = num_dense`` dense ones)::

    x        ~ N(0, I_D)                        dense features (stored as float32)
    w        = D weights drawn N(0, 1), rescaled to norm sqrt(D)
    v_f      = T_f[id]                          hidden vector (latent_dim) of the row's id of
                                                feature f; a multi-hot feature uses the MEAN
                                                of its ids' vectors
    logit    = b
             + dense_signal       * (w . x) / sqrt(D)
             + interaction_signal * sum_{f < g} <v_f, v_g> / sqrt(F (F - 1) / 2)
    p_true   = sigmoid(logit)
    label    = 1 if uniform(seed, row_id, "label") < p_true else 0

It is exactly what a DLRM computes: per-id embeddings, pairwise dot products between the pooled
sparse embeddings (mean pooling for the multi-hot ones), and a function of the dense features
that an MLP represents easily. The hidden tables ``T_f`` have entries ``N(0, 1) / latent_dim**0.25``
(not ``/ sqrt(latent_dim)``): then each ``<v_f, v_g>`` of two one-hot features has unit variance,
the pair terms are uncorrelated, and dividing their sum by ``sqrt(#pairs)`` leaves the interaction
part with a standard deviation of about ``interaction_signal`` (a bit less, since multi-hot means
shrink their vectors); the dense part's standard deviation is exactly ``dense_signal``. The
intercept ``b`` is calibrated (:func:`planted_intercept`) so that the mean of ``p_true`` is
``positive_rate``.

Ids follow a power law ``P(k) ~ (k + 1) ** -zipf_exponent`` over ``[0, cardinality)``, so popular
ids repeat often enough to learn their embeddings from a few hundred thousand rows; the long tail
is noise a model can only learn on average (this is why the oracle AUC is an upper bound that a
finite training set does not quite reach).

Randomness is counter-based: every random value of a row is ``splitmix64(seed, row_id, which
value)`` turned into a uniform (and, through Box-Muller, a normal). The tables and weights come
from the same hash with the id (or weight index) as the counter. So the data is a function of the
seed and the row id only: independent of the number of Spark partitions, of the Arrow batch size
and of the numpy version, and a dataset of ``rows = N`` is the first ``N`` rows of a larger one
(the intercept is calibrated on a fixed sample of row ids, not on the rows asked for).

Plain framework code: nothing here knows how it is wired into a project.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

# The default mix of cardinalities, cycled over the sparse features: a few tiny features
# (like a device type), some mid-sized and a few large ones (like an item or a site id). Kept
# modest so that, under the power law, most rows carry ids seen often in 400K training rows.
DEFAULT_CARDINALITY_CYCLE: tuple[int, ...] = (3, 10, 50, 200, 1000, 5000)
# Default multi-hot features: sparse index -> max ids per row (only those < num_sparse apply;
# each is clipped to its cardinality). With the cycle above: 200 -> 3, 1000 -> 4, 5000 -> 5,
# 50 -> 3.
DEFAULT_MULTI_HOT: Mapping[int, int] = {3: 3, 10: 4, 17: 5, 20: 3}

# Row ids of the fixed sample the intercept is calibrated on (the same for every ``rows``).
CALIBRATION_ROWS = 50_000
# Hidden tables are rebuilt in every Python worker: keep them to a size that fits comfortably.
MAX_TABLE_VALUES = 20_000_000
# Rounds of redrawing an id that repeats an earlier id of the same row (multi-hot features);
# a slot still duplicated afterwards is dropped, so the row's length shrinks (never below 1).
DISTINCT_ROUNDS = 8

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB

# Stream kinds: the "which value" part of the hash key.
_DENSE, _TABLE, _WEIGHT, _LENGTH, _ID, _LABEL = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class ClickLogSpec:
    """What to generate: the table's shape, the id distributions and the planted model.

    ``cardinalities`` and ``multi_hot`` may be given as one int (the same for every sparse
    feature) or a sequence of ``num_sparse`` ints; empty (the default) means the default mix
    (:data:`DEFAULT_CARDINALITY_CYCLE` cycled, and :data:`DEFAULT_MULTI_HOT`), sized to
    ``num_sparse``. They are stored as tuples of ``num_sparse`` ints.

    Attributes:
        rows: number of rows (row ids ``0 .. rows - 1``).
        num_dense: number of dense float features.
        num_sparse: number of categorical features.
        cardinalities: per sparse feature, the number of distinct ids.
        multi_hot: per sparse feature, the max ids per row; 1 = exactly one id (a scalar
            column), > 1 = a list of 1..multi_hot distinct ids.
        zipf_exponent: ids follow ``P(k) ~ (k + 1) ** -zipf_exponent``, k in [0, cardinality).
        latent_dim: size of the hidden per-id vectors of the planted model.
        positive_rate: target share of label 1 (the intercept is calibrated to it).
        dense_signal: weight (standard deviation) of the dense, linear part of the logit.
        interaction_signal: weight (about the standard deviation) of the pairwise part.
        seed: the seed every random value derives from.
    """

    rows: int = 500_000
    num_dense: int = 13
    num_sparse: int = 26
    cardinalities: tuple[int, ...] = ()
    multi_hot: tuple[int, ...] = ()
    zipf_exponent: float = 1.1
    latent_dim: int = 8
    positive_rate: float = 0.25
    dense_signal: float = 1.0
    interaction_signal: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rows", "num_dense", "num_sparse", "latent_dim", "seed"):
            object.__setattr__(self, name, _as_int(name, getattr(self, name)))
        for name in ("zipf_exponent", "positive_rate", "dense_signal", "interaction_signal"):
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        _check(self.rows >= 1, f"rows must be >= 1, got {self.rows}")
        _check(self.num_dense >= 0, f"num_dense must be >= 0, got {self.num_dense}")
        _check(self.num_sparse >= 1, f"num_sparse must be >= 1, got {self.num_sparse}")
        _check(
            self.num_dense + self.num_sparse >= 2,
            "num_dense + num_sparse must be >= 2 (at least two features), got "
            f"{self.num_dense} + {self.num_sparse}",
        )
        cards = self._per_feature("cardinalities", self.cardinalities, _default_cardinalities)
        object.__setattr__(self, "cardinalities", cards)
        for j, card in enumerate(cards):
            _check(card >= 1, f"cardinalities[{j}] must be >= 1, got {card}")
        hot = self._per_feature("multi_hot", self.multi_hot, _default_multi_hot)
        object.__setattr__(self, "multi_hot", hot)
        for j, (m, card) in enumerate(zip(hot, cards, strict=True)):
            _check(m >= 1, f"multi_hot[{j}] must be >= 1, got {m}")
            _check(
                m <= card,
                f"multi_hot[{j}] = {m} asks for more distinct ids per row than "
                f"cardinalities[{j}] = {card}",
            )
        _check(
            0.0 < self.positive_rate < 1.0,
            f"positive_rate must be in (0, 1) (exclusive), got {self.positive_rate}",
        )
        _check(self.latent_dim >= 1, f"latent_dim must be >= 1, got {self.latent_dim}")
        _check(self.zipf_exponent >= 0, f"zipf_exponent must be >= 0, got {self.zipf_exponent}")
        _check(self.dense_signal >= 0, f"dense_signal must be >= 0, got {self.dense_signal}")
        _check(
            self.interaction_signal >= 0,
            f"interaction_signal must be >= 0, got {self.interaction_signal}",
        )
        _check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        table_values = sum(cards) * self.latent_dim
        _check(
            table_values <= MAX_TABLE_VALUES,
            f"sum(cardinalities) * latent_dim must be <= {MAX_TABLE_VALUES:,} (the hidden "
            f"tables are rebuilt in every worker), got {sum(cards):,} * {self.latent_dim} = "
            f"{table_values:,}",
        )

    def _per_feature(self, name: str, value: Any, default: Any) -> tuple[int, ...]:
        """``value`` (an int, a sequence, or empty for the default) as ``num_sparse`` ints."""
        if isinstance(value, bool):
            raise ValueError(f"{name} must be an int or a list of ints, got {value!r}")
        if isinstance(value, int | np.integer):
            return (int(value),) * self.num_sparse
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
            raise ValueError(f"{name} must be an int or a list of ints, got {value!r}")
        if len(value) == 0:
            return default(self)
        _check(
            len(value) == self.num_sparse,
            f"{name} must have one entry per sparse feature (num_sparse = {self.num_sparse}), "
            f"got {len(value)}",
        )
        return tuple(_as_int(f"{name}[{j}]", v) for j, v in enumerate(value))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ClickLogSpec:
        """A spec from a plain mapping (as read from a YAML parameters file).

        Keys are the field names; missing keys take the defaults. ``cardinalities`` and
        ``multi_hot`` may be one int or a list of ``num_sparse`` ints.

        Raises:
            ValueError: unknown keys (all of them named), or any value out of range.
        """
        if not isinstance(params, Mapping):
            raise ValueError(f"click-log parameters must be a mapping, got {type(params).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in params if k not in known)
        if unknown:
            raise ValueError(
                f"unknown click-log parameter(s): {', '.join(unknown)} (known: {', '.join(known)})"
            )
        kwargs = dict(params)
        for name in ("cardinalities", "multi_hot"):
            if isinstance(kwargs.get(name), list):
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)

    @property
    def dense_columns(self) -> tuple[str, ...]:
        """``("dense_0", ..., f"dense_{num_dense - 1}")``."""
        return dense_column_names(self.num_dense)

    @property
    def sparse_columns(self) -> tuple[str, ...]:
        """``("sparse_0", ..., f"sparse_{num_sparse - 1}")``."""
        return sparse_column_names(self.num_sparse)

    @property
    def jagged_columns(self) -> tuple[str, ...]:
        """The sparse columns whose ``multi_hot > 1`` (arrays of ids)."""
        return tuple(c for c, m in zip(self.sparse_columns, self.multi_hot, strict=True) if m > 1)

    @property
    def num_pairs(self) -> int:
        """Number of sparse-feature pairs in the interaction part: ``F (F - 1) / 2``."""
        return self.num_sparse * (self.num_sparse - 1) // 2


def dense_column_names(n: int) -> tuple[str, ...]:
    """The click logs' dense columns, generated or read (``dense_0`` ..)."""
    return tuple(f"dense_{i}" for i in range(n))


def sparse_column_names(n: int) -> tuple[str, ...]:
    """The click logs' categorical columns, generated or read (``sparse_0`` ..)."""
    return tuple(f"sparse_{j}" for j in range(n))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _as_int(name: str, value: Any) -> int:
    """``value`` as an int, or a ValueError naming the parameter (no silent float truncation)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def _default_cardinalities(spec: ClickLogSpec) -> tuple[int, ...]:
    cycle = DEFAULT_CARDINALITY_CYCLE
    return tuple(cycle[j % len(cycle)] for j in range(spec.num_sparse))


def _default_multi_hot(spec: ClickLogSpec) -> tuple[int, ...]:
    cards = spec.cardinalities  # already normalised: __post_init__ sets it first
    return tuple(min(DEFAULT_MULTI_HOT.get(j, 1), cards[j]) for j in range(spec.num_sparse))


# --------------------------------------------------------------------------------------------
# Counter-based randomness: value = f(seed, stream, counter), no state anywhere.
# --------------------------------------------------------------------------------------------


def _mix_int(z: int) -> int:
    """splitmix64's finaliser on a Python int (for stream keys)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


@functools.lru_cache(maxsize=4096)
def _stream_key(seed: int, *parts: int) -> int:
    """A 64-bit key for one stream of values (e.g. dense feature 3, second normal)."""
    key = _mix_int(seed + _GOLDEN)
    for part in parts:
        key = _mix_int(key ^ ((part + 1) * _GOLDEN))
    return key


def _uniform(seed: int, counters: np.ndarray, *parts: int) -> np.ndarray:
    """Uniforms in [0, 1), one per counter (a row id, or an id/weight index): float64, shape of
    ``counters``.

    This is splitmix64 with the stream key as its starting state: the ``counter``-th output is
    ``mix(key + counter * golden)``. Two streams would only overlap if their keys differed by a
    small multiple of the golden gamma, which for hashed 64-bit keys does not happen.
    """
    with np.errstate(over="ignore"):  # uint64 products wrap mod 2**64, as splitmix64 wants
        z = counters.astype(np.uint64) * np.uint64(_GOLDEN) + np.uint64(_stream_key(seed, *parts))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _normal(seed: int, counters: np.ndarray, *parts: int) -> np.ndarray:
    """Standard normals (Box-Muller on two uniform streams): float64, shape of ``counters``."""
    u1 = _uniform(seed, counters, *parts, 0)
    u2 = _uniform(seed, counters, *parts, 1)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)  # log1p(-u1): u1 < 1


def _power_law_ids(u: np.ndarray, cardinality: int, exponent: float) -> np.ndarray:
    """Ids in [0, cardinality) with ``P(k) ~ (k + 1) ** -exponent``: int64, shape of ``u``.

    Inverse CDF of the continuous power law ``x ** -exponent`` truncated to
    ``[1, cardinality + 1)``, then ``k = floor(x) - 1`` (clipped against rounding at the ends).
    """
    n1 = cardinality + 1.0
    if abs(exponent - 1.0) < 1e-9:  # the integral of 1/x is a log: its own formula
        x = np.exp(u * math.log(n1))
    else:
        e = 1.0 - exponent
        x = (1.0 + u * (n1**e - 1.0)) ** (1.0 / e)
    return np.clip(np.floor(x).astype(np.int64) - 1, 0, cardinality - 1)


# --------------------------------------------------------------------------------------------
# The planted model
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _planted_parameters(
    seed: int, num_dense: int, cardinalities: tuple[int, ...], latent_dim: int
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The planted model's dense weights (num_dense,) and hidden tables, one
    (cardinality, latent_dim) float64 array per sparse feature.

    Derived from the seed alone (hashed with the weight index / ``id * latent_dim + k`` as the
    counter), so every worker and the driver build the same model. Cached: Spark reuses its
    Python workers, and the tables are needed by every Arrow batch.
    """
    weights = _normal(seed, np.arange(num_dense), _WEIGHT)
    norm = float(np.linalg.norm(weights))
    if num_dense > 0 and norm > 0:  # exact norm sqrt(D): the dense part has unit variance
        weights *= math.sqrt(num_dense) / norm
    scale = latent_dim**-0.25  # <v_f, v_g> of two one-hot features has unit variance
    tables = tuple(
        _normal(seed, np.arange(card * latent_dim), _TABLE, j).reshape(card, latent_dim) * scale
        for j, card in enumerate(cardinalities)
    )
    for array in (weights, *tables):  # shared through the cache: nobody may change them
        array.flags.writeable = False
    return weights, tables


def _multi_hot_ids(
    spec: ClickLogSpec, j: int, row_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Feature ``j``'s ids as a padded (n, multi_hot[j]) int64 matrix and its validity mask.

    The row's length is uniform in [1, multi_hot[j]]; each slot draws a power-law id, and a
    slot that repeats an earlier id of the row is redrawn (from a fresh stream per round) up to
    :data:`DISTINCT_ROUNDS` times, then dropped. Slot 0 is never dropped: length >= 1.
    Vectorised over rows; the loops run over slots and rounds only.
    """
    m, card, a, seed = spec.multi_hot[j], spec.cardinalities[j], spec.zipf_exponent, spec.seed
    n = row_ids.shape[0]
    lengths = np.minimum(1 + np.floor(_uniform(seed, row_ids, _LENGTH, j) * m), m)
    valid = np.arange(m)[None, :] < lengths[:, None]
    ids = np.empty((n, m), dtype=np.int64)
    for s in range(m):
        ids[:, s] = _power_law_ids(_uniform(seed, row_ids, _ID, j, s, 0), card, a)
        for r in range(1, DISTINCT_ROUNDS + 2):
            dup = valid[:, s] & ((ids[:, :s] == ids[:, s : s + 1]) & valid[:, :s]).any(axis=1)
            if not dup.any():
                break
            if r > DISTINCT_ROUNDS:  # still a repeat after all rounds: drop the slot
                valid[dup, s] = False
                break
            rows = np.flatnonzero(dup)
            ids[rows, s] = _power_law_ids(_uniform(seed, row_ids[rows], _ID, j, s, r), card, a)
    return ids, valid


def _planted_columns(spec: ClickLogSpec, row_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Every column of the given rows except ``p_true`` and ``label`` (see
    :func:`planted_probabilities`)."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    n = row_ids.shape[0]
    seed = spec.seed
    weights, tables = _planted_parameters(seed, spec.num_dense, spec.cardinalities, spec.latent_dim)
    out: dict[str, np.ndarray] = {"row_id": row_ids}

    # Dense part. The logit uses the float32 values that are stored, so p_true is exactly a
    # function of what a model sees.
    dense = np.empty((n, spec.num_dense), dtype=np.float32)
    for i in range(spec.num_dense):
        dense[:, i] = _normal(seed, row_ids, _DENSE, i)
    out["dense"] = dense
    dense_logit = np.zeros(n)
    if spec.num_dense > 0:
        dense_logit = dense.astype(np.float64) @ weights / math.sqrt(spec.num_dense)

    # Interaction part: sum_{f<g} <v_f, v_g> = (||sum_f v_f||^2 - sum_f ||v_f||^2) / 2.
    total = np.zeros((n, spec.latent_dim))
    squares = np.zeros(n)
    for j, name in enumerate(spec.sparse_columns):
        if spec.multi_hot[j] == 1:
            ids = _power_law_ids(
                _uniform(seed, row_ids, _ID, j, 0, 0), spec.cardinalities[j], spec.zipf_exponent
            )
            out[name] = ids
            vec = tables[j][ids]
        else:
            padded, valid = _multi_hot_ids(spec, j, row_ids)
            lengths = valid.sum(axis=1)
            out[name] = padded[valid]  # row-major: each row's ids in slot order
            out[f"{name}_lengths"] = lengths.astype(np.int32)
            # Mean pooling of the row's ids (what an EmbeddingBag with mode="mean" computes).
            vec = (tables[j][padded] * valid[:, :, None]).sum(axis=1) / lengths[:, None]
        total += vec
        squares += np.einsum("nd,nd->n", vec, vec)
    interaction_logit = np.zeros(n)
    if spec.num_pairs > 0:
        pair_sum = (np.einsum("nd,nd->n", total, total) - squares) / 2.0
        interaction_logit = pair_sum / math.sqrt(spec.num_pairs)

    out["dense_logit"] = dense_logit
    out["interaction_logit"] = interaction_logit
    out["logit"] = spec.dense_signal * dense_logit + spec.interaction_signal * interaction_logit
    out["label_uniform"] = _uniform(seed, row_ids, _LABEL)
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free for any z


@functools.lru_cache(maxsize=32)
def planted_intercept(spec: ClickLogSpec) -> float:
    """The intercept ``b`` that makes the mean of ``p_true`` equal ``spec.positive_rate``.

    Bisection on the fixed sample of row ids ``0 .. CALIBRATION_ROWS - 1`` (computed in numpy,
    no Spark), whatever ``spec.rows`` is: so the planted model does not depend on how many rows
    are generated. ``mean(sigmoid(b + logit))`` is increasing in ``b``; the bracket is widened
    until it holds the target. Computed once on the driver; the value is shipped to the workers.
    """
    logit = _planted_columns(spec, np.arange(CALIBRATION_ROWS, dtype=np.int64))["logit"]
    target = spec.positive_rate

    def rate(b: float) -> float:
        return float(_sigmoid(b + logit).mean())

    lo, hi = -10.0, 10.0
    while rate(lo) > target:
        lo *= 2.0
    while rate(hi) < target:
        hi *= 2.0
    for _ in range(100):  # 20 / 2**100: far below float precision
        mid = 0.5 * (lo + hi)
        if rate(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def planted_probabilities(
    spec: ClickLogSpec, row_ids: np.ndarray, intercept: float | None = None
) -> dict[str, np.ndarray]:
    """The numpy core: every generated value of the given rows, and the planted model's view.

    Args:
        spec: what to generate.
        row_ids: (n,) int row ids (any ids >= 0, not only ``< spec.rows``; order is kept).
        intercept: the planted intercept; ``None`` computes :func:`planted_intercept` (cached).

    Returns:
        ``row_id`` (n,) int64; ``dense`` (n, num_dense) float32; for a one-hot feature
        ``sparse_j`` (n,) int64; for a multi-hot feature ``sparse_j`` (sum of lengths,) int64
        (the rows' ids concatenated) and ``sparse_j_lengths`` (n,) int32; ``dense_logit`` and
        ``interaction_logit`` (n,) float64 (unweighted parts); ``logit`` (n,) float64 (weighted
        sum, WITHOUT intercept); ``label_uniform`` (n,) float64; ``p_true`` (n,) float64
        (``sigmoid(intercept + logit)``) and ``label`` (n,) int32 (``label_uniform < p_true``).
    """
    out = _planted_columns(spec, row_ids)
    b = planted_intercept(spec) if intercept is None else float(intercept)
    out["p_true"] = _sigmoid(b + out["logit"])
    out["label"] = (out["label_uniform"] < out["p_true"]).astype(np.int32)
    return out


# --------------------------------------------------------------------------------------------
# Spark
# --------------------------------------------------------------------------------------------


def click_log_schema(spec: ClickLogSpec) -> T.StructType:
    """Spark schema of :func:`generate_click_logs`: row_id, dense_*, sparse_*, label, p_true."""
    sparse = [
        T.StructField(c, T.ArrayType(T.LongType(), False) if m > 1 else T.LongType(), False)
        for c, m in zip(spec.sparse_columns, spec.multi_hot, strict=True)
    ]
    return T.StructType(
        [T.StructField("row_id", T.LongType(), False)]
        + [T.StructField(c, T.FloatType(), False) for c in spec.dense_columns]
        + sparse
        + [
            T.StructField("label", T.IntegerType(), False),
            T.StructField("p_true", T.DoubleType(), False),
        ]
    )


def _arrow_batch(spec: ClickLogSpec, row_ids: np.ndarray, intercept: float) -> pa.RecordBatch:
    """One Arrow batch of generated rows, columns in :func:`click_log_schema` order."""
    cols = planted_probabilities(spec, row_ids, intercept)
    arrays: list[pa.Array] = [pa.array(cols["row_id"], pa.int64())]
    arrays += [pa.array(cols["dense"][:, i], pa.float32()) for i in range(spec.num_dense)]
    for name, m in zip(spec.sparse_columns, spec.multi_hot, strict=True):
        if m == 1:
            arrays.append(pa.array(cols[name], pa.int64()))
        else:
            offsets = np.zeros(len(row_ids) + 1, dtype=np.int32)
            np.cumsum(cols[f"{name}_lengths"], out=offsets[1:])
            arrays.append(
                pa.ListArray.from_arrays(pa.array(offsets), pa.array(cols[name], pa.int64()))
            )
    arrays += [pa.array(cols["label"], pa.int32()), pa.array(cols["p_true"], pa.float64())]
    names = ["row_id", *spec.dense_columns, *spec.sparse_columns, "label", "p_true"]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def generate_click_logs(spark: SparkSession, spec: ClickLogSpec, num_partitions: int) -> DataFrame:
    """The click logs of ``spec`` as a lazy Spark DataFrame, generated in parallel.

    ``spark.range(rows)`` is cut into ``num_partitions`` partitions and each Arrow batch of row
    ids is turned into rows by :func:`planted_probabilities` (``mapInArrow``, vectorised numpy);
    nothing is collected to the driver. The intercept is calibrated once here, on the driver.
    Same seed -> same rows, whatever ``num_partitions`` (each value depends on seed and row id
    only); row order within the result follows ``row_id`` within each partition.

    Columns (in order): ``row_id: long`` (0 .. rows - 1), ``dense_i: float``, ``sparse_j: long``
    (one-hot) or ``array<long>`` (multi-hot: 1 .. multi_hot[j] distinct ids), ``label: int``
    (0/1), ``p_true: double`` (the planted probability of label 1).
    """
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int | np.integer):
        raise ValueError(f"num_partitions must be an integer, got {num_partitions!r}")
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    intercept = planted_intercept(spec)

    def generate(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                row_ids = batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64)
                yield _arrow_batch(spec, row_ids, intercept)

    ids = spark.range(0, spec.rows, numPartitions=int(num_partitions))
    return ids.mapInArrow(generate, click_log_schema(spec))


def split_click_logs(
    df: DataFrame, fractions: Sequence[float], seed: int
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Split into (train, validation, test) by a hash of ``(seed, row_id)``.

    Each row gets ``u = pmod(xxhash64(seed, row_id), 2**31) / 2**31`` in [0, 1): train if
    ``u < f0``, validation if ``f0 <= u < f0 + f1``, test otherwise. Deterministic and
    independent of partitioning; every row lands in exactly one part. The three DataFrames are
    lazy filters of ``df``: persist or write ``df`` first if it is expensive to recompute.

    Args:
        df: a DataFrame with a non-null ``row_id`` column.
        fractions: (train, validation, test), each >= 0, summing to 1.
        seed: split seed (>= 0); a different seed gives a different split.
    """
    fracs = [float(f) for f in fractions]
    if len(fracs) != 3:
        raise ValueError(
            f"fractions must be 3 numbers (train, validation, test), got {len(fracs)}: {fracs}"
        )
    if any(not math.isfinite(f) or f < 0 for f in fracs):
        raise ValueError(f"fractions must each be >= 0, got {fracs}")
    if abs(sum(fracs) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fracs} (sum {sum(fracs):.6g})")
    seed = _as_int("seed", seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if "row_id" not in df.columns:
        raise ValueError(f"split_click_logs needs a row_id column, got columns {df.columns}")
    scale = float(1 << 31)
    u = F.pmod(F.xxhash64(F.lit(seed).cast("long"), F.col("row_id")), F.lit(1 << 31)) / scale
    cut1, cut2 = fracs[0], fracs[0] + fracs[1]
    return (
        df.filter(u < F.lit(cut1)),
        df.filter((u >= F.lit(cut1)) & (u < F.lit(cut2))),
        df.filter(u >= F.lit(cut2)),
    )
