"""Side features for the ranking stage: user/item profiles, train statistics, ranker rows.

Plain framework code on Spark DataFrames: nothing here knows about Kedro, nothing creates a
SparkSession, and the only things brought to the driver are small vocabularies (genders,
occupations, genres) and scalar aggregates (counts, the global mean rating, maxima).

Conventions:

* Every categorical ("sparse") feature is an ``int`` vocabulary index starting at 1; **0 is
  reserved for unknown/missing**, so a user or item without a profile still gets a row of
  zeros (profiles are left joins from the id index). Vocabularies are sorted, so the same
  side files always give the same indexes.
* Statistics (activity, popularity, mean ratings, genre shares) are computed from the
  **train split only**; validation and test rows never reach them. A row per index is
  returned, with defaults for ids absent from train, so callers never see nulls.
* The raw side files are RecBole atomic files (tab separated, ``name:type`` headers): read
  them with ``spark.read.csv(path, sep="\\t", header=True)`` and pass them through
  :func:`strip_atomic_types`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

DEFAULT_AGE_BUCKETS: tuple[int, ...] = (18, 25, 35, 45, 50, 56)
"""Age boundaries (MovieLens-1M's age groups): ``<18`` -> 1, ``18-24`` -> 2, ..., ``56+`` -> 7."""

DEFAULT_YEAR_BUCKETS: tuple[int, ...] = (1940, 1960, 1970, 1980, 1990, 1993, 1995, 1997)
"""Release-year boundaries: ``<1940`` -> 1, ``1940-1959`` -> 2, ..., ``1997+`` -> 9.

Finer in the 1990s, where most MovieLens-100K titles are (1922-1998, ~70% in 1993-1997).
"""

UNKNOWN_GENRES: tuple[str, ...] = ("unknown",)
"""Genre tokens that mean "no genre" (MovieLens-100K's ``unknown``): mapped to 0, not a genre."""

USER_VOCABULARY_COLUMNS: tuple[str, ...] = ("gender", "occupation")
USER_PROFILE_COLUMNS: tuple[str, ...] = ("age", "gender", "occupation", "zip_code")
USER_SPARSE: tuple[str, ...] = ("age_bucket", "gender", "occupation", "zip_prefix")
ITEM_SPARSE: tuple[str, ...] = ("year_bucket", "genres")
SPARSE_FEATURES: tuple[str, ...] = USER_SPARSE + ITEM_SPARSE
DENSE_FEATURES: tuple[str, ...] = (
    "user_log_activity",
    "user_mean_rating",
    "item_log_popularity",
    "item_mean_rating",
    "genre_affinity",
)

ZIP_NON_DIGIT = 11
"""``zip_prefix`` of a zip code that starts with a letter (Canadian postal codes in ML-100K)."""

_MAX_EXAMPLES = 3


# --------------------------------------------------------------------------- helpers


def _require(frame: DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise a ValueError naming every column of ``columns`` that ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if not missing:
        return
    typed = [c for c in frame.columns if ":" in c]
    hint = (
        f" The header still has RecBole types ({', '.join(typed)}): pass the frame through "
        "strip_atomic_types() first."
        if typed
        else f" Add the column(s), or rename the existing ones to {missing}."
    )
    raise ValueError(
        f"{what} is missing required column(s) {missing}; it has {frame.columns}.{hint}"
    )


def _check_buckets(boundaries: Sequence[int], name: str) -> tuple[int, ...]:
    values = tuple(int(b) for b in boundaries)
    if not values or any(a >= b for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(
            f"{name} must be a non-empty, strictly increasing sequence of boundaries, "
            f"got {tuple(boundaries)!r}"
        )
    return values


def _bucket(value: Column, boundaries: Sequence[int]) -> Column:
    """1 + the number of boundaries ``<= value``; 0 where ``value`` is null."""
    above = sum(
        (F.when(value >= F.lit(b), F.lit(1)).otherwise(F.lit(0)) for b in boundaries),
        F.lit(1),
    )
    return F.when(value.isNull(), F.lit(0)).otherwise(above).cast("int")


def _normalised(column: str) -> Column:
    """Trimmed, lower-cased string; null where empty."""
    value = F.lower(F.trim(F.col(column).cast("string")))
    return F.when(value == F.lit(""), F.lit(None).cast("string")).otherwise(value)


def _vocab_index(value: Column, vocabulary: Sequence[str]) -> Column:
    """1-based position of ``value`` in ``vocabulary``; 0 if absent or null."""
    if not vocabulary:
        return F.lit(0).cast("int")
    position = F.array_position(F.array(*[F.lit(v) for v in vocabulary]), value)
    return F.coalesce(position, F.lit(0)).cast("int")


def _check_unique(frame: DataFrame, key: str, what: str) -> None:
    """Raise if ``key`` repeats in ``frame`` (a duplicated profile would duplicate joined rows)."""
    dupes = frame.groupBy(key).count().where(F.col("count") > 1).limit(_MAX_EXAMPLES).collect()
    if dupes:
        examples = [(row[key], row["count"]) for row in dupes]
        raise ValueError(
            f"{what} has several rows for the same {key}, e.g. (id, rows) = {examples}: keep "
            f"one row per {key} in the side file (deduplicate it before building features)."
        )


def _parsed_int(column: str, pattern: str) -> Column:
    """``column`` as an int where its trimmed text matches ``pattern``, else null (ANSI-safe)."""
    text = F.trim(F.col(column).cast("string"))
    return F.when(text.rlike(pattern), text).cast("int")


def _global_mean_rating(train: DataFrame) -> float:
    """The mean train rating (one aggregate). Raises if train has no rating."""
    _require(train, ("rating",), "train")
    mean = train.agg(F.avg("rating").alias("m")).first()["m"]
    if mean is None:
        raise ValueError(
            "train has no ratings, so there is no global mean to shrink toward: check the "
            "split (two_tower.features.split) produced a non-empty train split."
        )
    return float(mean)


def _shrunk_mean(total: Column, n: Column, prior_mean: float, prior_weight: float) -> Column:
    """``(sum + w * m) / (n + w)``; ``m`` where there is nothing to average (``n + w == 0``)."""
    numerator = total + F.lit(prior_weight * prior_mean)
    denominator = n + F.lit(float(prior_weight))
    return F.coalesce(F.try_divide(numerator, denominator.cast("double")), F.lit(prior_mean)).cast(
        "float"
    )


# --------------------------------------------------------------------------- raw files


def strip_atomic_types(frame: DataFrame) -> DataFrame:
    """Rename RecBole ``name:type`` columns to ``name`` (plain names are left alone).

    Only the last ``:suffix`` is removed (``"a:b:token"`` -> ``"a:b"``).

    Raises:
        ValueError: if two columns would end up with the same name.
    """
    renamed = [
        c.rpartition(":")[0] if ":" in c and c.rpartition(":")[0] else c for c in frame.columns
    ]
    clashes = sorted({c for c in renamed if renamed.count(c) > 1})
    if clashes:
        raise ValueError(
            f"stripping the RecBole types from {frame.columns} gives duplicate column(s) "
            f"{clashes}: drop or rename one of each pair before calling strip_atomic_types()."
        )
    return frame.toDF(*renamed)


# --------------------------------------------------------------------------- user profiles


def user_vocabularies(users: DataFrame) -> dict[str, list[str]]:
    """Sorted vocabularies of the users' categorical columns (one aggregate).

    Values are trimmed and lower-cased; empty values are left out (they map to 0).

    Args:
        users: ``gender, occupation`` (strings; other columns ignored).

    Returns:
        ``{"gender": [...], "occupation": [...]}``; index ``i`` of a list is vocabulary
        index ``i + 1``.
    """
    _require(users, USER_VOCABULARY_COLUMNS, "users")
    row = users.agg(
        *[F.array_sort(F.collect_set(_normalised(c))).alias(c) for c in USER_VOCABULARY_COLUMNS]
    ).first()
    return {c: list(row[c] or []) for c in USER_VOCABULARY_COLUMNS}


def user_profiles(
    users: DataFrame,
    user_index: DataFrame,
    *,
    age_buckets: Sequence[int] = DEFAULT_AGE_BUCKETS,
    vocabularies: Mapping[str, Sequence[str]] | None = None,
) -> DataFrame:
    """One categorical profile row per user of ``user_index``.

    Args:
        users: the user side file after :func:`strip_atomic_types`:
            ``user_id, age, gender, occupation, zip_code`` (strings; other columns ignored).
            At most one row per ``user_id``.
        user_index: ``user_id: string, user_idx: long`` (the features stage's index).
        age_buckets: strictly increasing age boundaries (see :data:`DEFAULT_AGE_BUCKETS`).
        vocabularies: ``{"gender": [...], "occupation": [...]}`` to pin the indexes (e.g. the
            ones a model was trained with); default: :func:`user_vocabularies` of ``users``.
            Values not in a given vocabulary map to 0.

    Returns:
        ``user_idx: long, age_bucket: int, gender: int, occupation: int, zip_prefix: int``,
        one row per user of ``user_index``; every column 0 where unknown (a user without a
        row in ``users`` gets all zeros).

        * ``age_bucket``: 1 + the number of ``age_buckets`` boundaries ``<= age``; 0 where
          the age is missing, not an integer, or 0.
        * ``gender``, ``occupation``: 1-based index in the sorted vocabulary (trimmed,
          lower-cased values).
        * ``zip_prefix``: a fixed 12-value code of the zip's first character: digit ``d`` ->
          ``d + 1`` (1..10), a letter or other non-digit (ML-100K has Canadian postal codes
          such as ``T8H1N``) -> :data:`ZIP_NON_DIGIT` (11), missing/empty -> 0. Fixed rather
          than learned from the data, so it never shifts when the user file changes.

    Raises:
        ValueError: a required column is missing, the age boundaries are not increasing, or a
            ``user_id`` appears more than once in ``users``.
    """
    _require(users, ("user_id", *USER_PROFILE_COLUMNS), "users")
    _require(user_index, ("user_id", "user_idx"), "user_index")
    boundaries = _check_buckets(age_buckets, "age_buckets")
    vocab = dict(vocabularies) if vocabularies is not None else user_vocabularies(users)
    missing = [c for c in USER_VOCABULARY_COLUMNS if c not in vocab]
    if missing:
        raise ValueError(
            f"vocabularies lacks {missing}: pass a list for each of "
            f"{list(USER_VOCABULARY_COLUMNS)} (or None to build them from `users`)"
        )

    age = _parsed_int("age", r"^[0-9]+$")
    age = F.when(age > F.lit(0), age)
    first = F.substring(F.trim(F.col("zip_code").cast("string")), 1, 1)
    zip_prefix = (
        F.when(F.col("zip_code").isNull() | (first == F.lit("")), F.lit(0))
        .when(first.rlike("^[0-9]$"), first.cast("int") + F.lit(1))
        .otherwise(F.lit(ZIP_NON_DIGIT))
    )
    profiles = users.select(
        F.trim(F.col("user_id").cast("string")).alias("user_id"),
        _bucket(age, boundaries).alias("age_bucket"),
        _vocab_index(_normalised("gender"), vocab["gender"]).alias("gender"),
        _vocab_index(_normalised("occupation"), vocab["occupation"]).alias("occupation"),
        zip_prefix.cast("int").alias("zip_prefix"),
    )
    _check_unique(profiles, "user_id", "users")
    joined = user_index.select(
        F.col("user_id").cast("string").alias("user_id"), F.col("user_idx").cast("long")
    ).join(profiles, "user_id", "left")
    return joined.select(
        "user_idx", *[F.coalesce(c, F.lit(0)).cast("int").alias(c) for c in USER_SPARSE]
    )


# --------------------------------------------------------------------------- item profiles


def _genre_tokens(column: str) -> Column:
    """The whitespace-separated tokens of ``column`` (array<string>; empty for null/blank)."""
    text = F.coalesce(F.trim(F.col(column).cast("string")), F.lit(""))
    return F.filter(F.split(text, r"\s+"), lambda t: t != F.lit(""))


def genre_vocabulary(
    items: DataFrame,
    *,
    genre_column: str = "class",
    unknown_genres: Sequence[str] = UNKNOWN_GENRES,
) -> list[str]:
    """The sorted distinct genre tokens of ``items`` (one small aggregate).

    Tokens are whitespace separated (RecBole ``token_seq``) and case-sensitive; tokens in
    ``unknown_genres`` (compared case-insensitively) are not genres and are left out.

    Returns:
        The genres; index ``i`` of the list is genre index ``i + 1`` (0 = no genre).
    """
    _require(items, (genre_column,), "items")
    unknown = [u.lower() for u in unknown_genres]
    tokens = F.filter(
        _genre_tokens(genre_column),
        lambda t: ~F.lower(t).isin(unknown) if unknown else F.lit(True),
    )
    row = items.agg(F.array_sort(F.array_distinct(F.flatten(F.collect_list(tokens))))).first()
    return list(row[0] or [])


def item_profiles(
    items: DataFrame,
    item_index: DataFrame,
    *,
    year_buckets: Sequence[int] = DEFAULT_YEAR_BUCKETS,
    genres: Sequence[str] | None = None,
    genre_column: str = "class",
    year_column: str = "release_year",
    unknown_genres: Sequence[str] = UNKNOWN_GENRES,
) -> DataFrame:
    """One categorical profile row per item of ``item_index``.

    Args:
        items: the item side file after :func:`strip_atomic_types`:
            ``item_id, release_year, class`` (strings; ``class`` = space-separated genres;
            other columns such as ``movie_title`` ignored). At most one row per ``item_id``.
        item_index: ``item_id: string, item_idx: long`` (the features stage's index).
        year_buckets: strictly increasing release-year boundaries
            (see :data:`DEFAULT_YEAR_BUCKETS`).
        genres: the genre vocabulary to pin the indexes; default:
            :func:`genre_vocabulary` of ``items``. Tokens outside it are dropped.
        genre_column, year_column: the names of those columns in ``items``.
        unknown_genres: tokens that mean "no genre" (dropped, case-insensitive).

    Returns:
        ``item_idx: long, year_bucket: int, genres: array<int>``, one row per item of
        ``item_index``.

        * ``year_bucket``: 1 + the number of ``year_buckets`` boundaries ``<= year``; 0 where
          the year is not a 4-digit number (ML-100K has an empty-ish ``unkonwn`` and a ``V``).
        * ``genres``: the item's distinct genre indexes (1-based, sorted); ``[0]`` for an item
          with no known genre or no row in ``items``, so the jagged feature is never empty.

    Raises:
        ValueError: a required column is missing, the year boundaries are not increasing, or
            an ``item_id`` appears more than once in ``items``.
    """
    _require(items, ("item_id", year_column, genre_column), "items")
    _require(item_index, ("item_id", "item_idx"), "item_index")
    boundaries = _check_buckets(year_buckets, "year_buckets")
    vocab = (
        list(genres)
        if genres is not None
        else genre_vocabulary(items, genre_column=genre_column, unknown_genres=unknown_genres)
    )
    if vocab:
        lookup = F.array(*[F.lit(g) for g in vocab])
        indexes = F.transform(
            _genre_tokens(genre_column), lambda t: F.array_position(lookup, t).cast("int")
        )
        known = F.array_sort(F.array_distinct(F.filter(indexes, lambda i: i > F.lit(0))))
    else:
        known = F.array().cast("array<int>")
    profiles = items.select(
        F.trim(F.col("item_id").cast("string")).alias("item_id"),
        _bucket(_parsed_int(year_column, r"^[0-9]{4}$"), boundaries).alias("year_bucket"),
        known.alias("genres"),
    )
    _check_unique(profiles, "item_id", "items")
    joined = item_index.select(
        F.col("item_id").cast("string").alias("item_id"), F.col("item_idx").cast("long")
    ).join(profiles, "item_id", "left")
    no_genre = F.array(F.lit(0)).cast("array<int>")
    return joined.select(
        "item_idx",
        F.coalesce("year_bucket", F.lit(0)).cast("int").alias("year_bucket"),
        F.when(F.coalesce(F.size("genres"), F.lit(0)) > F.lit(0), F.col("genres"))
        .otherwise(no_genre)
        .cast("array<int>")
        .alias("genres"),
    )


def cardinalities(user_profiles: DataFrame, item_profiles: DataFrame) -> dict[str, int]:
    """Embedding-table sizes: max index + 1 of every sparse column (one aggregate per frame).

    Args:
        user_profiles: :func:`user_profiles`' output.
        item_profiles: :func:`item_profiles`' output.

    Returns:
        ``{"user_idx", "age_bucket", "gender", "occupation", "zip_prefix", "item_idx",
        "year_bucket", "genres": int}``. Pass ``["genres"]`` as ``n_genres`` to
        :func:`user_statistics`.

    Raises:
        ValueError: a column is missing or a frame is empty.
    """
    user_cols = ("user_idx", *USER_SPARSE)
    _require(user_profiles, user_cols, "user_profiles")
    _require(item_profiles, ("item_idx", *ITEM_SPARSE), "item_profiles")
    users = user_profiles.agg(*[F.max(c).alias(c) for c in user_cols]).first()
    items = item_profiles.agg(
        F.max("item_idx").alias("item_idx"),
        F.max("year_bucket").alias("year_bucket"),
        F.max(F.array_max("genres")).alias("genres"),
    ).first()
    out: dict[str, int] = {}
    for what, row in (("user_profiles", users), ("item_profiles", items)):
        for name, value in row.asDict().items():
            if value is None:
                raise ValueError(
                    f"{what} is empty (no maximum for {name!r}): build it from a non-empty "
                    "index before sizing the embedding tables."
                )
            out[name] = int(value) + 1
    return out


# --------------------------------------------------------------------------- train statistics


def user_statistics(
    train: DataFrame,
    user_index: DataFrame,
    item_profiles: DataFrame,
    n_genres: int,
    *,
    prior_weight: float = 0.0,
) -> DataFrame:
    """Per-user statistics from the train split only, one row per user of ``user_index``.

    Args:
        train: the train split: ``user_idx, item_idx, rating, label`` (other columns ignored).
        user_index: ``user_idx`` (``user_id`` ignored): which users get a row.
        item_profiles: :func:`item_profiles`' output (``item_idx, genres``).
        n_genres: the genre cardinality (``cardinalities(...)["genres"]``): the share array has
            one entry per genre index ``0..n_genres-1`` (0 = "no genre").
        prior_weight: pseudo-ratings at the global train mean added to each user's mean
            (0 = plain mean).

    Returns:
        ``user_idx: long, user_log_activity: float, user_mean_rating: float,
        user_genre_share: array<float>`` (length ``n_genres``).

        * ``user_log_activity``: ``log1p`` of the user's train rows (every rating, liked or
          not); 0 for a user absent from train.
        * ``user_mean_rating``: mean train rating (shrunk by ``prior_weight``); the global
          train mean for a user absent from train.
        * ``user_genre_share``: the user's train positives (``label == 1``) spread over
          genres, each interaction weighing 1 shared equally among its item's genres, so the
          entries sum to 1. A user with train rows but no positive falls back to all their
          train rows (their exposure still says something about taste); a user with no train
          rows gets all zeros.

    Raises:
        ValueError: a column is missing, ``n_genres < 1``, an item profile has a genre index
            ``>= n_genres``, ``prior_weight < 0``, or train has no rating.
    """
    _require(train, ("user_idx", "item_idx", "rating", "label"), "train")
    _require(user_index, ("user_idx",), "user_index")
    _require(item_profiles, ("item_idx", "genres"), "item_profiles")
    if int(n_genres) < 1:
        raise ValueError(f"n_genres must be >= 1 (cardinalities()['genres']), got {n_genres!r}")
    n_genres = int(n_genres)
    if prior_weight < 0:
        raise ValueError(f"prior_weight must be >= 0, got {prior_weight!r}")
    top = item_profiles.agg(F.max(F.array_max("genres"))).first()[0]
    if top is not None and top >= n_genres:
        raise ValueError(
            f"item_profiles has genre index {top} but n_genres={n_genres}: pass "
            "cardinalities(user_profiles, item_profiles)['genres'] built from the same profiles."
        )
    global_mean = _global_mean_rating(train)

    activity = train.groupBy("user_idx").agg(
        F.count("*").alias("_n"), F.sum(F.col("rating").cast("double")).alias("_sum")
    )

    by_user = train.select(
        "user_idx",
        "item_idx",
        F.col("label"),
        F.max(F.when(F.col("label") == 1, 1).otherwise(0))
        .over(Window.partitionBy("user_idx"))
        .alias("_has_pos"),
    )
    used = by_user.where((F.col("label") == 1) | (F.col("_has_pos") == 0))
    weighted = used.join(item_profiles.select("item_idx", "genres"), "item_idx", "left").select(
        "user_idx",
        F.explode(F.when(F.size("genres") > 0, F.col("genres")).otherwise(F.array(F.lit(0)))).alias(
            "_genre"
        ),
        (F.lit(1.0) / F.greatest(F.coalesce(F.size("genres"), F.lit(1)), F.lit(1))).alias("_w"),
    )
    per_genre = weighted.groupBy("user_idx", "_genre").agg(F.sum("_w").alias("_w"))
    shares = per_genre.groupBy("user_idx").agg(
        F.map_from_entries(F.collect_list(F.struct("_genre", "_w"))).alias("_mass"),
        F.sum("_w").alias("_total"),
    )
    share = F.transform(
        F.sequence(F.lit(0), F.lit(n_genres - 1)),
        lambda g: F.coalesce(F.try_element_at("_mass", g), F.lit(0.0)) / F.col("_total"),
    )
    zeros = F.array_repeat(F.lit(0.0), n_genres)

    joined = (
        user_index.select(F.col("user_idx").cast("long"))
        .join(activity, "user_idx", "left")
        .join(shares, "user_idx", "left")
    )
    n = F.coalesce(F.col("_n"), F.lit(0))
    return joined.select(
        "user_idx",
        F.log1p(n.cast("double")).cast("float").alias("user_log_activity"),
        _shrunk_mean(F.coalesce("_sum", F.lit(0.0)), n, global_mean, prior_weight).alias(
            "user_mean_rating"
        ),
        F.when(F.col("_total") > 0, share)
        .otherwise(zeros)
        .cast("array<float>")
        .alias("user_genre_share"),
    )


def item_statistics(
    train: DataFrame, item_index: DataFrame, *, prior_weight: float = 10.0
) -> DataFrame:
    """Per-item statistics from the train split only, one row per item of ``item_index``.

    Args:
        train: the train split: ``item_idx, rating`` (other columns ignored).
        item_index: ``item_idx`` (``item_id`` ignored): which items get a row.
        prior_weight: ``w``, pseudo-ratings at the global train mean ``m`` (must be >= 0).

    Returns:
        ``item_idx: long, item_log_popularity: float, item_mean_rating: float``.

        * ``item_log_popularity``: ``log1p`` of the item's train rows; 0 if absent from train.
        * ``item_mean_rating``: the Bayesian mean ``(sum of ratings + w * m) / (n + w)``;
          ``m`` for an item absent from train.

    Raises:
        ValueError: a column is missing, ``prior_weight < 0``, or train has no rating.
    """
    _require(train, ("item_idx", "rating"), "train")
    _require(item_index, ("item_idx",), "item_index")
    if prior_weight < 0:
        raise ValueError(f"prior_weight must be >= 0, got {prior_weight!r}")
    global_mean = _global_mean_rating(train)
    counts = train.groupBy("item_idx").agg(
        F.count("*").alias("_n"), F.sum(F.col("rating").cast("double")).alias("_sum")
    )
    joined = item_index.select(F.col("item_idx").cast("long")).join(counts, "item_idx", "left")
    n = F.coalesce(F.col("_n"), F.lit(0))
    return joined.select(
        "item_idx",
        F.log1p(n.cast("double")).cast("float").alias("item_log_popularity"),
        _shrunk_mean(F.coalesce("_sum", F.lit(0.0)), n, global_mean, prior_weight).alias(
            "item_mean_rating"
        ),
    )


# --------------------------------------------------------------------------- ranker rows


def ranker_rows(
    candidates: DataFrame,
    user_profiles: DataFrame,
    item_profiles: DataFrame,
    user_stats: DataFrame,
    item_stats: DataFrame,
) -> DataFrame:
    """Attach the ranker's sparse and dense features to retrieval candidates.

    Args:
        candidates: ``user_idx, item_idx`` plus whatever else the caller carries (typically
            ``retrieval_score: float, retrieval_rank: int, label: int``); every column is kept,
            in order.
        user_profiles: :func:`user_profiles`' output.
        item_profiles: :func:`item_profiles`' output.
        user_stats: :func:`user_statistics`' output.
        item_stats: :func:`item_statistics`' output.

    Returns:
        The candidates' columns, then sparse ``age_bucket: int, gender: int, occupation: int,
        zip_prefix: int, year_bucket: int, genres: array<int>``, then dense
        ``user_log_activity: float, user_mean_rating: float, item_log_popularity: float,
        item_mean_rating: float, genre_affinity: float``; one row per candidate row, no nulls
        (sparse 0 and ``genres`` ``[0]`` where a profile value is null).

        ``genre_affinity`` = the sum, over the item's genre indexes, of the user's
        ``user_genre_share`` at that index (a Spark higher-order ``aggregate``; an index
        outside the share array adds 0).

    Raises:
        ValueError: a column is missing; the candidates already have a feature column; a
            candidate's ``user_idx``/``item_idx`` has no row in a profile or statistics frame
            (build them all from the same ``user_index``/``item_index``); the joins changed the
            row count (a profile or statistics frame repeats a key); or a mean rating is null.
            Checking costs two Spark jobs: a count of ``candidates`` and one aggregate over the
            result.
    """
    _require(candidates, ("user_idx", "item_idx"), "candidates")
    _require(user_profiles, ("user_idx", *USER_SPARSE), "user_profiles")
    _require(item_profiles, ("item_idx", *ITEM_SPARSE), "item_profiles")
    _require(
        user_stats,
        ("user_idx", "user_log_activity", "user_mean_rating", "user_genre_share"),
        "user_stats",
    )
    _require(item_stats, ("item_idx", "item_log_popularity", "item_mean_rating"), "item_stats")
    sides = {
        "user_profiles": (user_profiles, "user_idx", list(USER_SPARSE)),
        "item_profiles": (item_profiles, "item_idx", list(ITEM_SPARSE)),
        "user_stats": (
            user_stats,
            "user_idx",
            ["user_log_activity", "user_mean_rating", "user_genre_share"],
        ),
        "item_stats": (item_stats, "item_idx", ["item_log_popularity", "item_mean_rating"]),
    }
    added = [c for _, _, cols in sides.values() for c in cols] + ["genre_affinity"]
    clashes = [c for c in candidates.columns if c in added or c.startswith("_rr_")]
    if clashes:
        raise ValueError(
            f"candidates already has column(s) {clashes} that ranker_rows adds: drop or rename "
            "them before attaching features."
        )

    joined = candidates
    for name, (frame, key, cols) in sides.items():
        right = frame.select(
            F.col(key).alias(f"_rr_{name}_key"), *cols, F.lit(True).alias(f"_rr_{name}")
        )
        joined = joined.join(right, F.col(key) == F.col(f"_rr_{name}_key"), "left")

    share = F.col("user_genre_share")
    affinity = F.aggregate(
        F.col("genres"),
        F.lit(0.0).cast("double"),
        lambda acc, g: acc + F.coalesce(F.get(share, g), F.lit(0.0)).cast("double"),
    )
    no_genre = F.array(F.lit(0)).cast("array<int>")
    genres = F.when(F.coalesce(F.size("genres"), F.lit(0)) > 0, F.col("genres")).otherwise(no_genre)
    out = joined.select(
        *[F.col(c) for c in candidates.columns],
        *[F.coalesce(c, F.lit(0)).cast("int").alias(c) for c in USER_SPARSE],
        F.coalesce("year_bucket", F.lit(0)).cast("int").alias("year_bucket"),
        genres.cast("array<int>").alias("genres"),
        F.coalesce("user_log_activity", F.lit(0.0)).cast("float").alias("user_log_activity"),
        F.col("user_mean_rating").cast("float").alias("user_mean_rating"),
        F.coalesce("item_log_popularity", F.lit(0.0)).cast("float").alias("item_log_popularity"),
        F.col("item_mean_rating").cast("float").alias("item_mean_rating"),
        F.coalesce(affinity, F.lit(0.0)).cast("float").alias("genre_affinity"),
        *[F.col(f"_rr_{name}") for name in sides],
    )

    n_in = candidates.count()
    missing_count = {
        name: F.sum(F.when(F.col(f"_rr_{name}").isNull(), 1).otherwise(0)).alias(name)
        for name in sides
    }
    null_means = F.sum(
        F.when(
            F.col("user_mean_rating").isNull() | F.col("item_mean_rating").isNull(), 1
        ).otherwise(0)
    ).alias("_null_means")
    check = out.agg(F.count("*").alias("_n"), *missing_count.values(), null_means).first()
    missing = {name: int(check[name] or 0) for name in sides}
    if any(missing.values()):
        raise ValueError(
            "candidate rows whose key has no row in "
            + ", ".join(f"{name} ({n} rows)" for name, n in missing.items() if n)
            + ": build the profiles and statistics from the same user_index/item_index as the "
            "candidates (user_profiles/user_statistics take user_index, item_profiles/"
            "item_statistics take item_index, and each returns a row per index entry)."
        )
    if int(check["_n"]) != n_in:
        dupes = [
            name
            for name, (frame, key, _) in sides.items()
            if frame.groupBy(key).count().where(F.col("count") > 1).limit(1).count()
        ]
        raise ValueError(
            f"joining features turned {n_in} candidate rows into {check['_n']}: {dupes or 'a'} "
            "frame(s) repeat a key. Build each with its function here (one row per index entry) "
            "or deduplicate it."
        )
    if check["_null_means"]:
        raise ValueError(
            f"{check['_null_means']} candidate rows have a null user_mean_rating or "
            "item_mean_rating: build user_stats/item_stats with user_statistics()/"
            "item_statistics(), which fill the global train mean."
        )
    return out.drop(*[f"_rr_{name}" for name in sides])
