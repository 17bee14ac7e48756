"""Synthetic explicit ratings at any scale, generated in Spark (nothing sits in the driver).

What it is for: running the two-tower pipeline's stages on data far larger than MovieLens
(``python -m recsys_kedro.benchmarks.scale``: 1M users, 100K items, 20M interactions) with
the shape of real ratings, so that memory and time are measured on realistic work:

* **Exactly** ``interactions`` distinct ``(user, item)`` pairs, plus a share of re-ratings
  (``duplicate_share``: the same pair rated again *earlier*, with another rating), which the
  ingestion stage's de-duplication removes (it keeps the latest rating): after ingestion
  there are exactly ``interactions`` rows.
* **User activity** is heavy-tailed: user of activity rank ``q`` (0 = the most active) gets
  ``n(q) = floor(C(q + 1)) - floor(C(q))`` interactions, where ``C(x) = m x + E G(x / U)``
  with ``G(t) = ((t + t0)^(1-a) - t0^(1-a)) / ((1 + t0)^(1-a) - t0^(1-a))`` (a power-law
  density ``(t + t0)^-a``), ``m`` the minimum per user, ``E = interactions - m U`` and
  ``C(U) = interactions``: the counts sum to ``interactions`` exactly (the sum telescopes).
  ``t0`` is the smallest value (from 0.001 up) that keeps the most active user at or below
  ``max_user_share`` of the catalogue. Activity ranks are dealt to user ids by a seeded
  affine permutation, so ids say nothing about activity.
* **Item popularity** is Zipf-like: a draw picks popularity rank ``floor(x) - 1`` where
  ``x`` follows a continuous power law ``x^-item_exponent`` on ``[1, K + 1)`` (inverse CDF of
  a hashed uniform); ranks become item ids by another seeded affine permutation.
* **Taste** (the learnable signal): every item belongs to one of ``clusters`` clusters (its
  rank modulo ``clusters``), every user to one (hashed). A ``taste_share`` of a user's draws
  come from the Zipf over its own cluster's items, the rest from the global Zipf. Ratings
  ``1..5`` are ``round(2.8 + 1.6 [same cluster] + 1.5 (quality - 0.5) + (user bias - 0.5) +
  1.5 (noise - 0.5))`` clipped, with a hashed item quality and user bias: about 55 % of the
  ratings are >= 4, nine in ten within the user's cluster.
* **Timestamps** (epoch seconds, UTC): each user is active over a year somewhere in
  ``span_days`` from ``start``; a re-rating is 1 to 30 days before the rating it repeats.

Distinct items per user without a shuffle: a user's draws are made as one Spark array
(``1.5 n + 4`` candidates through ``transform``), de-duplicated with ``array_distinct`` (the
first occurrence kept) and cut to ``n``; in the rare case the candidates hold fewer than
``n`` distinct items, the rest come from a seeded permutation of the catalogue (``n``
distinct items by construction). Each user is one row until ``posexplode`` makes its
ratings, so generation is one narrow Spark stage, parallel over partitions of users.

Randomness is counter-based: every random value is Spark's ``xxhash64`` of
``(seed, stream, user, draw)`` turned into a uniform in ``[0, 1)``, so the data is a function
of the spec alone (not of the number of partitions). Plain framework code: no Kedro.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

#: Columns (and types) of the generated raw ratings, as the ratings ingestion reads them
#: from a table (``recsys_kedro.data.ratings.read_ratings_table``).
RAW_COLUMNS = (
    ("user_id", "bigint"),
    ("item_id", "bigint"),
    ("rating", "double"),
    ("timestamp", "bigint"),
)
RATING_RANGE = (1.0, 5.0)

# Streams: the "which value" part of the hash key.
_ACTIVITY, _CLUSTER, _DRAW, _TASTE, _QUALITY, _BIAS, _NOISE, _START, _TIME, _DUP = range(10)
_DUP_DELAY, _DUP_RATING, _FALLBACK = 10, 11, 12
_DAY = 86_400
_INV_2_53 = 1.0 / float(1 << 53)
# Rating model (see the module docstring).
_BASE, _MATCH, _QUALITY_W, _BIAS_W, _NOISE_W = 2.8, 1.6, 1.5, 1.0, 1.5


@dataclass(frozen=True)
class SyntheticRatingsSpec:
    """What to generate (see the module docstring for the model).

    Attributes:
        interactions: distinct ``(user, item)`` pairs (rows after de-duplication).
        users: users; every one gets at least one interaction (so ``interactions >= users``).
        items: catalogue size (not every item need be drawn).
        seed: the seed of every random value.
        item_exponent: Zipf exponent of item popularity by rank (> 0).
        activity_exponent: ``a`` of the activity density ``(t + t0)^-a``, in ``[0, 1)``.
        min_user_interactions: ``m``, the fewest interactions of a user; ``None`` picks
            ``clamp(interactions // (4 users), 1, 5)``.
        max_user_share: the most active user rates at most this share of the catalogue.
        clusters: taste clusters of users and items.
        taste_share: share of a user's draws made from its own cluster.
        duplicate_share: share of interactions also present as an earlier re-rating.
        start: first possible timestamp (epoch seconds).
        span_days: days over which users start; each is active for a year after its start.
    """

    interactions: int = 20_000_000
    users: int = 1_000_000
    items: int = 100_000
    seed: int = 0
    item_exponent: float = 1.0
    activity_exponent: float = 0.8
    min_user_interactions: int | None = None
    max_user_share: float = 0.25
    clusters: int = 20
    taste_share: float = 0.5
    duplicate_share: float = 0.01
    start: int = 1_420_070_400  # 2015-01-01
    span_days: int = 4 * 365

    def __post_init__(self) -> None:
        for name in ("interactions", "users", "items", "clusters", "span_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.interactions < self.users:
            raise ValueError(
                f"interactions ({self.interactions}) must be >= users ({self.users}): every "
                "user gets at least one interaction"
            )
        if self.clusters > self.items:
            raise ValueError(f"clusters ({self.clusters}) must be <= items ({self.items})")
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"seed must be in [0, 2**31), got {self.seed}")
        if not self.item_exponent > 0:
            raise ValueError(f"item_exponent must be > 0, got {self.item_exponent}")
        if not 0 <= self.activity_exponent < 1:
            raise ValueError(f"activity_exponent must be in [0, 1), got {self.activity_exponent}")
        for name in ("taste_share", "duplicate_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.max_user_share <= 1:
            raise ValueError(f"max_user_share must be in (0, 1], got {self.max_user_share}")
        m = self.min_interactions
        if m * self.users > self.interactions:
            raise ValueError(
                f"min_user_interactions ({m}) x users ({self.users}) exceeds interactions "
                f"({self.interactions})"
            )
        if m > self.max_user_interactions:
            raise ValueError(
                f"min_user_interactions ({m}) exceeds max_user_share x items "
                f"({self.max_user_interactions}): use more items"
            )
        if math.ceil(self.interactions / self.users) > self.max_user_interactions:
            raise ValueError(
                f"{self.interactions} interactions over {self.users} users need more than "
                f"max_user_share x items = {self.max_user_interactions} interactions for some "
                "user: use more items or users"
            )

    @property
    def min_interactions(self) -> int:
        """``m``: the fewest interactions of a user."""
        if self.min_user_interactions is not None:
            return int(self.min_user_interactions)
        return max(1, min(5, self.interactions // (4 * self.users)))

    @property
    def max_user_interactions(self) -> int:
        """The cap on the most active user's interactions."""
        return max(1, int(self.items * self.max_user_share))

    @property
    def activity_offset(self) -> float:
        """``t0``: the smallest from 0.001 up that keeps the top user within the cap."""
        cap = self.max_user_interactions
        lo = 1e-3
        if _top_activity(self, lo) <= cap:
            return lo
        hi = lo
        while _top_activity(self, hi) > cap:
            lo, hi = hi, hi * 4
        for _ in range(60):  # bisection: the top user's count decreases as t0 grows
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if _top_activity(self, mid) <= cap else (mid, hi)
        return hi


# ---------------------------------------------------------------------------- activity


def _cumulative(spec: SyntheticRatingsSpec, x: np.ndarray, t0: float) -> np.ndarray:
    """``floor(C(x))`` for activity ranks ``x`` in ``[0, users]`` (numpy)."""
    a, users, m = spec.activity_exponent, spec.users, spec.min_interactions
    extra = spec.interactions - m * users
    b = 1.0 - a
    g = ((x / users + t0) ** b - t0**b) / ((1.0 + t0) ** b - t0**b)
    out = np.floor(m * x + extra * g).astype(np.int64)
    out = np.where(x <= 0, 0, out)
    return np.where(x >= users, spec.interactions, out)


def _top_activity(spec: SyntheticRatingsSpec, t0: float) -> int:
    x = np.array([0.0, 1.0])
    c = _cumulative(spec, x, t0)
    return int(c[1] - c[0])


def user_activity(spec: SyntheticRatingsSpec) -> np.ndarray:
    """Interactions per activity rank ``0 .. users - 1`` (numpy; the same numbers as Spark's,
    up to the last bit of ``pow``): for summaries and tests, ``users`` int64 values."""
    x = np.arange(spec.users + 1, dtype=np.float64)
    c = _cumulative(spec, x, spec.activity_offset)
    return np.diff(c)


def _activity_column(spec: SyntheticRatingsSpec, rank: Column) -> Column:
    """``n(rank)`` as a Spark expression (``rank``: a long in ``[0, users)``)."""
    a, users, m = spec.activity_exponent, spec.users, spec.min_interactions
    extra = float(spec.interactions - m * users)
    t0 = spec.activity_offset
    b = 1.0 - a
    denom = (1.0 + t0) ** b - t0**b

    def cumulative(x: Column) -> Column:
        g = (F.pow(x.cast("double") / F.lit(float(users)) + F.lit(t0), F.lit(b)) - t0**b) / denom
        value = F.floor(x.cast("double") * float(m) + F.lit(extra) * g)
        # C(0) = 0 and C(U) = interactions exactly, whatever the rounding of pow.
        value = F.when(x <= F.lit(0), F.lit(0)).otherwise(value)
        return F.when(x >= F.lit(users), F.lit(spec.interactions)).otherwise(value)

    return (cumulative(rank + 1) - cumulative(rank)).cast("int")


# ---------------------------------------------------------------------------- random values


def _uniform(seed: int, stream: int, *parts: Column) -> Column:
    """A uniform in ``[0, 1)`` from ``xxhash64(seed, stream, *parts)`` (53 bits)."""
    h = F.xxhash64(F.lit(seed), F.lit(stream), *parts)
    return F.shiftrightunsigned(h, 11).cast("double") * F.lit(_INV_2_53)


def _zipf_rank(u: Column, size: Column | int, exponent: float) -> Column:
    """Popularity rank in ``[0, size)``: ``floor(x) - 1``, ``x ~ x^-exponent`` on
    ``[1, size + 1)`` (inverse CDF of the uniform ``u``)."""
    size_col = size if isinstance(size, Column) else F.lit(size)
    top = size_col.cast("double") + 1.0
    if abs(exponent - 1.0) < 1e-12:
        x = F.exp(u * F.log(top))
    else:
        b = 1.0 - exponent
        x = F.pow(F.lit(1.0) + u * (F.pow(top, F.lit(b)) - 1.0), F.lit(1.0 / b))
    rank = F.floor(x).cast("long") - 1
    return F.least(F.greatest(rank, F.lit(0)), size_col.cast("long") - 1)


def _coprime_multiplier(n: int, seed: int, salt: int) -> int:
    """A multiplier coprime with ``n`` (so ``x -> (a x + b) mod n`` permutes ``0..n-1``)."""
    if n == 1:
        return 1
    rng = np.random.default_rng([seed, salt])
    while True:
        a = int(rng.integers(1, n))
        if math.gcd(a, n) == 1:
            return a


# ---------------------------------------------------------------------------- generation


def generate_ratings(
    spark: SparkSession, spec: SyntheticRatingsSpec, num_partitions: int | None = None
) -> DataFrame:
    """The raw ratings (lazy): ``user_id, item_id, rating, timestamp`` (see ``RAW_COLUMNS``).

    ``spec.interactions`` distinct pairs plus about ``duplicate_share`` of them again as
    earlier re-ratings. ``num_partitions``: partitions of users (default: one per 2M
    interactions, at least 2); rows come out in the partitions of their users.
    """
    seed, users, items, clusters = spec.seed, spec.users, spec.items, spec.clusters
    parts = num_partitions or max(2, math.ceil(spec.interactions / 2_000_000))
    a_user = _coprime_multiplier(users, seed, 1)
    b_user = int(np.random.default_rng([seed, 2]).integers(0, users))
    a_item = _coprime_multiplier(items, seed, 3)
    b_item = int(np.random.default_rng([seed, 4]).integers(0, items))
    a_fallback = _coprime_multiplier(items, seed, 5)

    user = F.col("user_id")
    frame = spark.range(users, numPartitions=parts).select(F.col("id").alias("user_id"))
    rank = F.pmod(user * F.lit(a_user) + F.lit(b_user), F.lit(users))
    frame = frame.select(
        "user_id",
        _activity_column(spec, rank).alias("n"),
        F.pmod(F.xxhash64(F.lit(seed), F.lit(_CLUSTER), user), F.lit(clusters)).alias("cluster"),
    )
    # The user's own cluster holds the ranks r with r % clusters == cluster.
    own_size = (F.lit(items - 1) - F.col("cluster")) / F.lit(clusters)
    own_size = F.floor(own_size).cast("long") + 1

    def draw(j: Column) -> Column:
        u = _uniform(seed, _DRAW, user, j)
        own = _zipf_rank(u, own_size, spec.item_exponent) * clusters + F.col("cluster")
        anywhere = _zipf_rank(u, items, spec.item_exponent)
        return F.when(_uniform(seed, _TASTE, user, j) < spec.taste_share, own).otherwise(anywhere)

    n = F.col("n")
    candidates = F.transform(F.sequence(F.lit(0), n + F.floor(n / 2).cast("int") + 3), draw)
    # Its own projection: the draws are made once per user (Spark does not inline an
    # expensive expression into a projection that uses it three times).
    frame = frame.select("user_id", "n", "cluster", F.array_distinct(candidates).alias("_drawn"))
    distinct = F.col("_drawn")
    offset = F.pmod(F.xxhash64(F.lit(seed), F.lit(_FALLBACK), user), F.lit(items))
    fallback = F.transform(
        F.sequence(F.lit(0), n - 1),
        lambda j: F.pmod(j.cast("long") * F.lit(a_fallback) + offset, F.lit(items)),
    )
    enough = F.when(F.size(distinct) >= n, distinct).otherwise(
        F.array_distinct(F.concat(distinct, fallback))
    )
    frame = frame.select(
        "user_id", "cluster", F.posexplode(F.slice(enough, 1, n)).alias("j", "item_rank")
    )

    j, item_rank = F.col("j"), F.col("item_rank")
    same = (F.pmod(item_rank, F.lit(clusters)) == F.col("cluster")).cast("double")
    score = (
        F.lit(_BASE)
        + same * _MATCH
        + (_uniform(seed, _QUALITY, item_rank) - 0.5) * _QUALITY_W
        + (_uniform(seed, _BIAS, user) - 0.5) * _BIAS_W
        + (_uniform(seed, _NOISE, user, j) - 0.5) * _NOISE_W
    )
    rating = F.least(F.greatest(F.floor(score + 0.5), F.lit(1.0)), F.lit(5.0))
    span = spec.span_days * _DAY
    start = F.lit(spec.start) + F.floor(_uniform(seed, _START, user) * span).cast("long")
    when = start + F.floor(_uniform(seed, _TIME, user, j) * (365 * _DAY)).cast("long")
    rated = frame.select(
        "user_id",
        F.pmod(item_rank * F.lit(a_item) + F.lit(b_item), F.lit(items)).alias("item_id"),
        rating.alias("rating"),
        when.alias("timestamp"),
        (_uniform(seed, _DUP, user, j) < spec.duplicate_share).alias("_dup"),
        (1 + F.floor(_uniform(seed, _DUP_DELAY, user, j) * 30)).cast("long").alias("_days"),
        (1 + F.floor(_uniform(seed, _DUP_RATING, user, j) * 4)).alias("_shift"),
    )
    copies = F.when(F.col("_dup"), F.array(F.lit(0), F.lit(1))).otherwise(F.array(F.lit(0)))
    rated = rated.select("*", F.explode(copies).alias("_copy"))
    again = F.col("_copy") == 1
    return rated.select(
        "user_id",
        "item_id",
        F.when(again, F.pmod(F.col("rating") - 1 + F.col("_shift"), F.lit(5.0)) + 1)
        .otherwise(F.col("rating"))
        .cast("double")
        .alias("rating"),
        F.when(again, F.col("timestamp") - F.col("_days") * _DAY)
        .otherwise(F.col("timestamp"))
        .cast("long")
        .alias("timestamp"),
    )
