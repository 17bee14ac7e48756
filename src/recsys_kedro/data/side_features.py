"""Side features declared by a schema: user/item profiles, train statistics, ranker rows.

Plain framework code on Spark DataFrames: nothing here knows about Kedro or creates a
SparkSession, and no dataset's columns are named in code. A :class:`FeatureSchema` (built
from the parameters with :meth:`FeatureSchema.from_params`) declares, for the user table and
the item table, which columns become which features:

* ``categorical``: a vocabulary built from the side table (sorted values, index 1..V;
  **0 = unknown/missing**), optionally capped to the ``max_size`` most frequent values or
  hashed into ``hash_buckets`` buckets for high cardinality; ``prefix_chars`` keeps the
  first N characters (a postcode's area).
* ``multi_hot``: a list column, or a string split on ``separator``; every token indexed as
  above; exported as a jagged feature, ``[0]`` where an id has none.
* ``numeric``: ``bucketize`` on declared boundaries (a sparse index: 1 + the number of
  boundaries ``<= value``, 0 = missing), or a dense float (``none``, ``log`` = signed
  ``log1p``, ``standardize`` by the side table's mean and deviation) with missing values
  filled and flagged in ``<name>_missing``.

Every id of the index gets a row: an id with no side row gets the unknown values, and the
coverage report counts it. Statistics (activity, popularity, mean ratings where the data have
ratings, and the user's share of positives over an item multi-hot feature) come from the
**train split only**. :class:`FeatureLayout` records which columns the ranker reads, so
the ranker's spec, the lists and the servable model follow the schema and not constants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys_kedro.data.feature_schema import (
    ENTITIES,
    KINDS,
    MISSING_SUFFIX,
    STATISTICS,
    TRANSFORMS,
    Feature,
    FeatureLayout,
    FeatureSchema,
    SchemaError,
    SideTable,
    feature_layout,
)
from recsys_kedro.data.interactions import build_id_index

_MAX_EXAMPLES = 3

__all__ = [
    "ENTITIES",
    "KINDS",
    "MISSING_SUFFIX",
    "STATISTICS",
    "TRANSFORMS",
    "Feature",
    "FeatureLayout",
    "FeatureSchema",
    "SchemaError",
    "SideTable",
    "feature_layout",
    "item_statistics",
    "ranker_rows",
    "side_profiles",
    "strip_atomic_types",
    "train_has_ratings",
    "user_statistics",
]

# --------------------------------------------------------------------------- helpers


def _require(frame: DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise a SchemaError naming every column of ``columns`` that ``frame`` lacks."""
    missing = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    if not missing:
        return
    typed = [c for c in frame.columns if ":" in c]
    hint = (
        f" Its header has RecBole types ({', '.join(typed)}): declare strip_types: true."
        if typed
        else " Declare the column that holds it (`column:`), or add it to the table."
    )
    raise SchemaError(f"{what} has no column(s) {missing}; it has {frame.columns}.{hint}")


def _check_unique(frame: DataFrame, key: str, what: str, id_column: str) -> None:
    """Raise if ``key`` repeats in ``frame`` (a repeated side row would repeat joined rows)."""
    dupes = frame.groupBy(key).count().where(F.col("count") > 1).limit(_MAX_EXAMPLES).collect()
    if dupes:
        examples = [(row[key], row["count"]) for row in dupes]
        raise SchemaError(
            f"{what} has several rows for the same {id_column}, e.g. (id, rows) = {examples}: "
            f"keep one row per {id_column} in the table (deduplicate it first)."
        )


def _shrunk_mean(total: Column, n: Column, prior_mean: float, prior_weight: float) -> Column:
    """``(sum + w * m) / (n + w)``; ``m`` where there is nothing to average (``n + w == 0``)."""
    numerator = total + F.lit(prior_weight * prior_mean)
    denominator = n + F.lit(float(prior_weight))
    return F.coalesce(F.try_divide(numerator, denominator.cast("double")), F.lit(prior_mean)).cast(
        "float"
    )


def strip_atomic_types(frame: DataFrame) -> DataFrame:
    """Rename RecBole ``name:type`` columns to ``name`` (plain names are left alone).

    Only the last ``:suffix`` is removed (``"a:b:token"`` -> ``"a:b"``).

    Raises:
        SchemaError: if two columns would end up with the same name.
    """
    renamed = [
        c.rpartition(":")[0] if ":" in c and c.rpartition(":")[0] else c for c in frame.columns
    ]
    clashes = sorted({c for c in renamed if renamed.count(c) > 1})
    if clashes:
        raise SchemaError(
            f"stripping the RecBole types from {frame.columns} gives duplicate column(s) "
            f"{clashes}: drop or rename one of each pair."
        )
    return frame.toDF(*renamed)


def _text(value: Column, feature: Feature) -> Column:
    """A token as the vocabulary sees it: trimmed, maybe lower-cased and cut; null if empty
    or ignored."""
    text = F.trim(value.cast("string"))
    if feature.lowercase:
        text = F.lower(text)
    if feature.prefix_chars:
        text = F.substring(text, 1, feature.prefix_chars)
    ignored = [v.strip().lower() if feature.lowercase else v.strip() for v in feature.ignore]
    bad = text == F.lit("")
    if ignored:
        bad = bad | text.isin(ignored)
    return F.when(~bad, text)


def _tokens(feature: Feature, column: str) -> Column:
    """The multi-hot feature's normalised tokens (array<string>, no nulls)."""
    raw = (
        F.col(column)
        if feature.separator is None
        else F.split(F.col(column).cast("string"), _regex_literal(feature.separator))
    )
    tokens = F.transform(
        F.coalesce(raw, F.array().cast("array<string>")), lambda t: _text(t, feature)
    )
    return F.filter(tokens, lambda t: t.isNotNull())


def _regex_literal(separator: str) -> str:
    """``separator`` as a regex; a single space also splits on runs of whitespace."""
    if separator == " ":
        return r"\s+"
    return "".join("\\" + c if not c.isalnum() else c for c in separator)


def _hashed(value: Column, buckets: int) -> Column:
    return (F.pmod(F.xxhash64(value), F.lit(buckets)) + F.lit(1)).cast("int")


def _number(column: str, feature: Feature, data_type: T.DataType) -> Column:
    """The numeric value, null where missing, unparsable, not finite (NaN, +-inf) or outside
    ``valid_range``."""
    raw = F.col(column)
    value = (
        raw.cast("double")
        if isinstance(data_type, T.NumericType)
        else F.trim(raw.cast("string")).try_cast("double")
    )
    value = F.when(~F.isnan(value) & (F.abs(value) != F.lit(math.inf)), value)
    low, high = feature.valid_range
    if low is not None:
        value = F.when(value >= F.lit(low), value)
    if high is not None:
        value = F.when(value <= F.lit(high), value)
    return value


def _bucket(value: Column, boundaries: Sequence[float]) -> Column:
    """1 + the number of boundaries ``<= value``; 0 where ``value`` is null."""
    above = sum(
        (F.when(value >= F.lit(b), F.lit(1)).otherwise(F.lit(0)) for b in boundaries),
        F.lit(1),
    )
    return F.when(value.isNull(), F.lit(0)).otherwise(above).cast("int")


def _signed_log(value: Column) -> Column:
    return F.signum(value) * F.log1p(F.abs(value))


def _vocabulary(values: DataFrame, max_size: int | None) -> DataFrame:
    """``value: string, index: int`` (1..V, sorted values) of the non-null ``value`` column;
    with ``max_size``, only its most frequent values (ties by value)."""
    counts = values.where(F.col("value").isNotNull()).groupBy("value").count()
    if max_size:
        counts = counts.orderBy(F.desc("count"), "value").limit(max_size)
    indexed = build_id_index(counts.select("value"), "value", "_i")
    return indexed.select("value", (F.col("_i") + 1).cast("int").alias("index"))


def _check_types(frame: DataFrame, table: SideTable, what: str) -> None:
    types = {f.name: f.dataType for f in frame.schema.fields}
    for feature in table.features:
        data_type = types[feature.column]
        is_list = isinstance(data_type, T.ArrayType)
        nested = isinstance(data_type, T.MapType | T.StructType | T.BinaryType)
        if feature.kind == "multi_hot" and feature.separator is None and not is_list:
            raise SchemaError(
                f"{what} column {feature.column!r} ({data_type.simpleString()}) is not a list, "
                f"so multi_hot feature {feature.name!r} cannot read it: declare `separator` "
                "(the delimiter of its values) or give a list column."
            )
        if nested or (is_list and not (feature.kind == "multi_hot" and feature.separator is None)):
            raise SchemaError(
                f"{what} column {feature.column!r} is {data_type.simpleString()}, which a "
                f"{feature.kind} feature ({feature.name!r}) cannot read: declare it as "
                "multi_hot without a separator (a list column), or point `column` at a "
                "scalar column."
            )


# --------------------------------------------------------------------------- profiles


def side_profiles(
    side: DataFrame | None, index: DataFrame, table: SideTable, *, what: str | None = None
) -> tuple[DataFrame, dict[str, Any]]:
    """One row of declared features per id of ``index``, and what was found.

    Args:
        side: the side table (any Spark frame with ``table.id_column`` and the declared
            columns; at most one row per id); ``None`` when the schema declares no feature.
        index: ``<entity>_id: string, <entity>_idx: long`` (the features stage's index).
        table: the declared features.
        what: how errors name the table (default ``"the <entity> table"``).

    Returns:
        ``<entity>_idx: long`` then each feature's columns (:attr:`Feature.outputs`): sparse
        ``int`` (0 = unknown), jagged ``array<int>`` (``[0]`` if none), dense ``float``
        (filled) and its ``float`` missing flag; one row per index id, no nulls. And a report:
        ``{"cardinalities": {feature: table size}, "coverage": {"ids", "with_side_row",
        "without_side_row", "unmatched_side_rows", "side_rows_without_id" (null or empty id:
        left out), "missing": {feature: ids}}}``.

    Raises:
        SchemaError: a declared column is missing or of the wrong type, a column has no
            usable value at all, the table is empty, or an id has several rows.
    """
    what = what or f"the {table.entity} table"
    key, id_key = table.key, table.id_key
    _require(index, (id_key, key), f"the {table.entity} index")
    ids = index.select(F.col(id_key).cast("string").alias("_id"), F.col(key).cast("long"))
    if not table.features:
        n = ids.count()
        coverage = {
            "ids": n,
            "with_side_row": 0,
            "without_side_row": n,
            "unmatched_side_rows": 0,
            "side_rows_without_id": 0,
            "missing": {},
        }
        return ids.select(key), {"cardinalities": {}, "coverage": coverage}
    if side is None:
        raise SchemaError(
            f"{what} is absent but features {[f.name for f in table.features]} are declared "
            "for it: give the table, or declare no features."
        )
    if table.strip_types:
        side = strip_atomic_types(side)
    _require(side, (table.id_column, *[f.column for f in table.features]), what)
    _check_types(side, table, what)
    columns = {f.column for f in table.features}
    rows = side.select(
        F.trim(F.col(table.id_column).cast("string")).alias("_id"),
        *[F.col(c).alias(f"_c{i}") for i, c in enumerate(sorted(columns))],
    )
    source = {c: f"_c{i}" for i, c in enumerate(sorted(columns))}
    types = {f.name: f.dataType for f in side.schema.fields}
    # A row without an id describes nothing: counted in the report, then left out.
    has_id = F.col("_id").isNotNull() & (F.col("_id") != F.lit(""))
    all_rows, rows = rows, rows.where(has_id)

    # One pass over the table: its size, the rows without an id, present values per feature,
    # numeric moments. Every aggregate but the one counting them skips the rows without an id
    # (an aggregate skips the nulls of a `when` without `otherwise`).
    def _kept(column: Column) -> Column:
        return F.when(has_id, column)

    present: dict[str, Column] = {}
    values: dict[str, Column] = {}
    for feature in table.features:
        col = source[feature.column]
        if feature.kind == "numeric":
            values[feature.name] = _number(col, feature, types[feature.column])
            present[feature.name] = values[feature.name].isNotNull()
            text = F.trim(F.col(col).cast("string"))
            present[f"_raw:{feature.name}"] = text.isNotNull() & (text != F.lit(""))
        elif feature.kind == "categorical":
            values[feature.name] = _text(F.col(col), feature)
            present[feature.name] = values[feature.name].isNotNull()
        else:
            values[feature.name] = _tokens(feature, col)
            present[feature.name] = F.size(values[feature.name]) > F.lit(0)
    moments = []
    for feature in table.features:
        if feature.role == "dense":
            v = values[feature.name]
            pre = _signed_log(v) if feature.transform == "log" else v
            moments += [
                F.avg(_kept(v)).alias(f"_mean:{feature.name}"),
                F.stddev_pop(_kept(v)).alias(f"_std:{feature.name}"),
                F.avg(_kept(pre)).alias(f"_tmean:{feature.name}"),
            ]
    stats = all_rows.agg(
        F.count(_kept(F.lit(1))).alias("_rows"),
        F.count(F.when(~has_id, F.lit(1))).alias("_without_id"),
        F.countDistinct(_kept(F.col("_id"))).alias("_ids"),
        *[F.sum(_kept(p.cast("long"))).alias(name) for name, p in present.items()],
        *moments,
    ).first()
    without_id = int(stats["_without_id"])
    if not stats["_rows"]:
        raise SchemaError(
            f"{what} is empty ({without_id} rows without an id): point its catalog entry at "
            "the table's data, or declare `id_column`."
        )
    if stats["_ids"] != stats["_rows"]:
        _check_unique(rows, "_id", what, table.id_column)
    for feature in table.features:
        if stats[feature.name]:
            continue
        if feature.kind == "numeric" and stats[f"_raw:{feature.name}"]:
            example = (
                rows.where(F.trim(F.col(source[feature.column]).cast("string")) != F.lit(""))
                .select(source[feature.column])
                .first()[0]
            )
            raise SchemaError(
                f"{what} column {feature.column!r} has no number (e.g. {example!r}) inside "
                f"valid_range {list(feature.valid_range)}, so numeric feature "
                f"{feature.name!r} cannot read it: declare it categorical, or fix the column."
            )
        raise SchemaError(
            f"{what} column {feature.column!r} has no value in any of its {stats['_rows']} "
            f"rows (all null, empty or ignored), so feature {feature.name!r} would be unknown "
            "for every id: drop the feature or fix the column."
        )

    # Per feature: its output columns (null = unknown, filled after the join with the ids).
    profile = rows.select("_id", *[values[f.name].alias(f.name) for f in table.features])
    out: list[Column] = []
    fills: dict[str, Column] = {}
    cards: dict[str, int] = {}
    for feature in table.features:
        name, v = feature.name, F.col(feature.name)
        if feature.kind == "categorical":
            if feature.hash_buckets:
                out.append(F.when(v.isNotNull(), _hashed(v, feature.hash_buckets)).alias(name))
                cards[name] = feature.hash_buckets + 1
            else:
                vocab = _vocabulary(profile.select(v.alias("value")), feature.max_size)
                cards[name] = vocab.count() + 1
                lookup = vocab.select(
                    F.col("value").alias(name), F.col("index").alias(f"_idx:{name}")
                )
                profile = profile.join(lookup, name, "left")
                out.append(F.col(f"_idx:{name}").alias(name))
            fills[name] = F.lit(0)
        elif feature.kind == "multi_hot":
            exploded = profile.select("_id", F.explode(v).alias("value"))
            if feature.hash_buckets:
                indexed = exploded.select(
                    "_id", _hashed(F.col("value"), feature.hash_buckets).alias("index")
                )
                cards[name] = feature.hash_buckets + 1
            else:
                vocab = _vocabulary(exploded.select("value"), feature.max_size)
                cards[name] = vocab.count() + 1
                indexed = exploded.join(vocab, "value", "inner").select("_id", "index")
            bags = indexed.groupBy("_id").agg(
                F.array_sort(F.array_distinct(F.collect_list("index"))).alias(f"_idx:{name}")
            )
            profile = profile.join(bags, "_id", "left")
            out.append(F.col(f"_idx:{name}").alias(name))
            fills[name] = F.array(F.lit(0))
        elif feature.transform == "bucketize":
            out.append(F.when(v.isNotNull(), _bucket(v, feature.boundaries)).alias(name))
            fills[name] = F.lit(0)
            cards[name] = len(feature.boundaries) + 2
        else:
            mean, std = stats[f"_mean:{name}"], stats[f"_std:{name}"]
            if feature.transform == "standardize":
                scale = std if std and std > 1e-12 else 1.0
                value, fill_mean = (v - F.lit(mean)) / F.lit(scale), 0.0
            elif feature.transform == "log":
                value, fill_mean = _signed_log(v), stats[f"_tmean:{name}"]
            else:
                value, fill_mean = v, mean
            fill = float(fill_mean if feature.fill == "mean" else feature.fill)
            if not math.isfinite(fill):
                raise SchemaError(f"feature {name!r}: its fill value {fill} is not finite")
            out.append(value.alias(name))
            fills[name] = F.lit(fill)
    profile = profile.select("_id", *out)

    joined = ids.join(profile.withColumn("_found", F.lit(True)), "_id", "left")
    missing = {
        f.name: F.sum(F.col(f.name).isNull().cast("long")).alias(f.name) for f in table.features
    }
    check = joined.agg(
        F.count("*").alias("_n"),
        F.sum(F.col("_found").isNotNull().cast("long")).alias("_found"),
        *missing.values(),
    ).first()
    n_ids, found = int(check["_n"]), int(check["_found"] or 0)
    report = {
        "cardinalities": cards,
        "coverage": {
            "ids": n_ids,
            "with_side_row": found,
            "without_side_row": n_ids - found,
            "unmatched_side_rows": int(stats["_rows"]) - found,
            "side_rows_without_id": int(without_id),
            "missing": {f.name: int(check[f.name] or 0) for f in table.features},
        },
    }
    columns_out: list[Column] = [F.col(key)]
    for feature in table.features:
        name = feature.name
        if feature.role == "sparse":
            columns_out.append(F.coalesce(F.col(name), fills[name]).cast("int").alias(name))
        elif feature.role == "jagged":
            columns_out.append(F.coalesce(F.col(name), fills[name]).cast("array<int>").alias(name))
        else:
            columns_out.append(F.coalesce(F.col(name), fills[name]).cast("float").alias(name))
            if feature.flag_missing:
                flag = F.col(name).isNull().cast("float").alias(name + MISSING_SUFFIX)
                columns_out.append(flag)
    return joined.select(*columns_out), report


# --------------------------------------------------------------------------- train statistics


def _share_of(mass: Column, total: Column):
    """``g -> mass[g] / total`` (0 where ``g`` has no mass), for ``F.transform``."""
    return lambda g: F.coalesce(F.try_element_at(mass, g), F.lit(0.0)) / total


def _add_share(share_column: str):
    """``(acc, g) -> acc + share[g]`` (0 past the array), for ``F.aggregate``."""
    share = F.col(share_column)
    return lambda acc, g: acc + F.coalesce(F.get(share, g), F.lit(0.0)).cast("double")


def train_has_ratings(train: DataFrame) -> bool:
    """Whether any train row has a rating (one aggregate); mean ratings exist only then."""
    if "rating" not in train.columns:
        return False
    return bool(train.agg(F.count("rating").alias("n")).first()["n"])


def _global_mean_rating(train: DataFrame) -> float:
    return float(train.agg(F.avg(F.col("rating").cast("double")).alias("m")).first()["m"])


def _counted(
    train: DataFrame, index: DataFrame, entity: str, ratings: bool, prior_weight: float
) -> tuple[DataFrame, list[Column]]:
    """The index left-joined with each id's train rows, and the count statistics:
    ``log1p`` of the rows and, with ``ratings``, the mean rating shrunk toward the global
    train mean (:data:`STATISTICS`' names for ``entity``)."""
    key = f"{entity}_idx"
    rating = F.col("rating").cast("double") if ratings else F.lit(None).cast("double")
    counts = train.groupBy(key).agg(
        F.count("*").alias("_n"), F.count(rating).alias("_nr"), F.sum(rating).alias("_sum")
    )
    joined = index.select(F.col(key).cast("long")).join(counts, key, "left")
    n = F.coalesce(F.col("_n"), F.lit(0))
    count_name, mean_name = STATISTICS[entity]
    columns = [F.col(key), F.log1p(n.cast("double")).cast("float").alias(count_name)]
    if ratings:
        mean = _shrunk_mean(
            F.coalesce("_sum", F.lit(0.0)),
            F.coalesce(F.col("_nr"), F.lit(0)),
            _global_mean_rating(train),
            prior_weight,
        )
        columns.append(mean.alias(mean_name))
    return joined, columns


def user_statistics(
    train: DataFrame,
    user_index: DataFrame,
    item_profiles: DataFrame,
    shares: Mapping[str, int],
    *,
    ratings: bool,
    prior_weight: float = 0.0,
) -> DataFrame:
    """Per-user statistics from the train split only, one row per user of ``user_index``.

    Args:
        train: ``user_idx, item_idx, label`` and, with ``ratings``, ``rating``.
        user_index: ``user_idx``: which users get a row.
        item_profiles: :func:`side_profiles`' item output, with each feature of ``shares``.
        shares: ``{item multi-hot feature: its cardinality}``: a share array each.
        ratings: whether to add the mean rating (see :func:`train_has_ratings`).
        prior_weight: pseudo-ratings at the global train mean added to each user's mean.

    Returns:
        ``user_idx: long, user_log_activity: float`` (``log1p`` of the user's train rows),
        with ``ratings`` ``user_mean_rating: float`` (shrunk; the global mean without rows),
        and ``user_<f>_share: array<float>`` per feature of ``shares``: the user's train
        positives spread over the item's values of ``f`` (each interaction weighs 1, shared
        equally among its values; entries sum to 1). A user with train rows but no positive
        falls back to all their rows; a user without train rows gets zeros.
    """
    if prior_weight < 0:
        raise SchemaError(f"prior_weight must be >= 0, got {prior_weight!r}")
    needed = ("user_idx", "item_idx", "label", *(("rating",) if ratings else ()))
    _require(train, needed, "train")
    _require(item_profiles, ("item_idx", *shares), "item_profiles")
    joined, columns = _counted(train, user_index, "user", ratings, prior_weight)
    used = train.select(
        "user_idx",
        "item_idx",
        "label",
        F.max(F.when(F.col("label") == 1, 1).otherwise(0))
        .over(Window.partitionBy("user_idx"))
        .alias("_has_pos"),
    ).where((F.col("label") == 1) | (F.col("_has_pos") == 0))
    for feature, size in shares.items():
        if int(size) < 1:
            raise SchemaError(f"the cardinality of {feature!r} must be >= 1, got {size!r}")
        share_col = f"user_{feature}_share"
        weighted = used.join(item_profiles.select("item_idx", feature), "item_idx", "left").select(
            "user_idx",
            F.explode(
                F.when(F.size(feature) > 0, F.col(feature)).otherwise(F.array(F.lit(0)))
            ).alias("_value"),
            (F.lit(1.0) / F.greatest(F.coalesce(F.size(feature), F.lit(1)), F.lit(1))).alias("_w"),
        )
        per_value = weighted.groupBy("user_idx", "_value").agg(F.sum("_w").alias("_w"))
        mass = per_value.groupBy("user_idx").agg(
            F.map_from_entries(F.collect_list(F.struct("_value", "_w"))).alias(f"_mass{feature}"),
            F.sum("_w").alias(f"_total{feature}"),
        )
        joined = joined.join(mass, "user_idx", "left")
        total = F.col(f"_total{feature}")
        share = F.transform(
            F.sequence(F.lit(0), F.lit(int(size) - 1)), _share_of(F.col(f"_mass{feature}"), total)
        )
        columns.append(
            F.when(total > 0, share)
            .otherwise(F.array_repeat(F.lit(0.0), int(size)))
            .cast("array<float>")
            .alias(share_col)
        )
    return joined.select(*columns)


def item_statistics(
    train: DataFrame, item_index: DataFrame, *, ratings: bool, prior_weight: float = 10.0
) -> DataFrame:
    """Per-item statistics from the train split only, one row per item of ``item_index``.

    Returns:
        ``item_idx: long, item_log_popularity: float`` (``log1p`` of the item's train rows;
        0 if absent) and, with ``ratings``, ``item_mean_rating: float``: the Bayesian mean
        ``(sum + w * m) / (n + w)`` with ``m`` the global train mean (``m`` if absent).
    """
    if prior_weight < 0:
        raise SchemaError(f"prior_weight must be >= 0, got {prior_weight!r}")
    _require(train, ("item_idx", *(("rating",) if ratings else ())), "train")
    joined, columns = _counted(train, item_index, "item", ratings, prior_weight)
    return joined.select(*columns)


# --------------------------------------------------------------------------- ranker rows


def ranker_rows(
    candidates: DataFrame,
    user_profiles: DataFrame,
    item_profiles: DataFrame,
    user_stats: DataFrame,
    item_stats: DataFrame,
    layout: FeatureLayout,
) -> DataFrame:
    """Attach the ranker's sparse and dense features (``layout``) to retrieval candidates.

    Args:
        candidates: ``user_idx, item_idx`` plus whatever the caller carries; every column
            is kept, in order.
        user_profiles, item_profiles: :func:`side_profiles`' outputs.
        user_stats, item_stats: :func:`user_statistics` / :func:`item_statistics`.
        layout: :func:`feature_layout` of the same schema.

    Returns:
        The candidates' columns, then ``layout.user_columns`` without the share arrays, then
        ``layout.item_columns``, then each affinity: the sum, over the item's values of the
        feature, of the user's share at that value (0 past the array). One row per
        candidate, no nulls.

    Raises:
        SchemaError: a column is missing or already present; a candidate's id has no row in
            a profile or statistics frame (build them from the same index); the joins changed
            the row count (a frame repeats a key). Checking costs a count of ``candidates``
            and one aggregate over the result.
    """
    shares = [share for share, _, _ in layout.affinities]
    sides = {
        "user_profiles": (user_profiles, "user_idx", [*layout.user_sparse, *layout.user_dense]),
        "item_profiles": (item_profiles, "item_idx", [*layout.item_sparse, *layout.item_dense]),
        "user_stats": (user_stats, "user_idx", [*layout.user_statistics, *shares]),
        "item_stats": (item_stats, "item_idx", list(layout.item_statistics)),
    }
    _require(candidates, ("user_idx", "item_idx"), "candidates")
    for name, (frame, key, cols) in sides.items():
        _require(frame, (key, *cols), name)
    added = [c for _, _, cols in sides.values() for c in cols]
    added += [out for _, _, out in layout.affinities]
    clashes = [c for c in candidates.columns if c in added or c.startswith("_rr_")]
    if clashes:
        raise SchemaError(
            f"candidates already has column(s) {clashes} that ranker_rows adds: drop or rename "
            "them before attaching features."
        )

    joined = candidates
    for name, (frame, key, cols) in sides.items():
        right = frame.select(
            F.col(key).alias(f"_rr_{name}_key"), *cols, F.lit(True).alias(f"_rr_{name}")
        )
        joined = joined.join(right, F.col(key) == F.col(f"_rr_{name}_key"), "left")

    affinity = []
    for share_col, feature, out_name in layout.affinities:
        total = F.aggregate(F.col(feature), F.lit(0.0).cast("double"), _add_share(share_col))
        affinity.append(F.coalesce(total, F.lit(0.0)).cast("float").alias(out_name))
    keep = [c for c in layout.user_columns if c not in shares] + list(layout.item_columns)
    out = joined.select(
        *[F.col(c) for c in candidates.columns],
        *[F.col(c) for c in keep],
        *affinity,
        *[F.col(f"_rr_{name}") for name in sides],
    )

    n_in = candidates.count()
    missing_count = {
        name: F.sum(F.when(F.col(f"_rr_{name}").isNull(), 1).otherwise(0)).alias(name)
        for name in sides
    }
    check = out.agg(F.count("*").alias("_n"), *missing_count.values()).first()
    missing = {name: int(check[name] or 0) for name in sides}
    if any(missing.values()):
        raise SchemaError(
            "candidate rows whose key has no row in "
            + ", ".join(f"{name} ({n} rows)" for name, n in missing.items() if n)
            + ": build the profiles and statistics from the same user/item index as the "
            "candidates (each returns a row per index entry)."
        )
    if int(check["_n"]) != n_in:
        dupes = [
            name
            for name, (frame, key, _) in sides.items()
            if frame.groupBy(key).count().where(F.col("count") > 1).limit(1).count()
        ]
        raise SchemaError(
            f"joining features turned {n_in} candidate rows into {check['_n']}: {dupes or 'a'} "
            "frame(s) repeat a key. Build each with its function here (one row per index entry) "
            "or deduplicate it."
        )
    return out.drop(*[f"_rr_{name}" for name in sides])
