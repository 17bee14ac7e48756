"""Click logs in the Criteo layout: read, checked, put in time order, split and encoded the way
DLRM implementations expect.

The layout (Criteo's Kaggle and Terabyte logs, and what torchrec's and NVIDIA's DLRM read): one
row per impression, a ``label`` (0/1), ``num_dense`` integer counts and ``num_sparse``
categorical tokens (hashed strings), tab-separated with no header, an empty field where a value
is missing. Parquet files or a table with the same columns (``label``, ``dense_0`` ..,
``sparse_0`` ..) are read as they are.

Preprocessing, as in the reference DLRM implementations:

* dense counts: missing -> 0, clipped at 0, then ``log(1 + x)``;
* categorical tokens: indexed by a vocabulary built from the **train period only** (tokens
  seen at least ``min_frequency`` times, most frequent first, index 1..V), or hashed into a
  declared number of buckets (1..B); 0 = missing, rare or unseen in train;
* a time-ordered split: the logs are in time order (files sorted by name, numbers compared as
  numbers so ``day_2`` comes before ``day_10``, lines in file order, or a declared ``order_by``
  column); the first rows train, the next validation, the last test.

The output has the generator's column names (``row_id``, ``dense_*``, ``sparse_*``,
``label``), so export, training and evaluation read either source the same way. Plain
framework code: nothing here knows how it is wired into a project.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys_kedro.data.click_logs import dense_column_names, sparse_column_names

LABEL = "label"
UNKNOWN = 0  # index of a missing, rare or unseen token


class ClickLogError(ValueError):
    """Click logs that do not match their declared layout."""


@dataclass(frozen=True)
class CriteoLayout:
    """What the click logs hold and how they are encoded.

    Attributes:
        num_dense: integer (count) features per row (Criteo: 13).
        num_sparse: categorical features per row (Criteo: 26).
        min_frequency: a token needs this many train rows to get its own index.
        hash_buckets: if set, tokens are hashed into this many buckets per feature instead
            of indexed by a vocabulary (for features with millions of tokens).
        fractions: (train, validation, test) shares of the rows, in time order.
        split_days: ``(validation, test)`` numbers of files (days, in file order) instead of
            ``fractions``: the last ``test`` files are the test, the ``validation`` before
            them validate (Criteo's day files: train on 0-22, test on 23).
        order_by: a column that orders the rows in time (a table, or parquet without
            meaningful file order); ``None``: file and line order.
    """

    num_dense: int = 13
    num_sparse: int = 26
    min_frequency: int = 1
    hash_buckets: int | None = None
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_days: tuple[int, int] | None = None
    order_by: str | None = None

    def __post_init__(self) -> None:
        if self.num_dense < 0 or self.num_sparse < 1:
            raise ClickLogError(
                f"num_dense must be >= 0 and num_sparse >= 1, got {self.num_dense} and "
                f"{self.num_sparse}"
            )
        if self.min_frequency < 1:
            raise ClickLogError(f"min_frequency must be >= 1, got {self.min_frequency}")
        if self.hash_buckets is not None and self.hash_buckets < 1:
            raise ClickLogError(f"hash_buckets must be >= 1 or null, got {self.hash_buckets}")
        fracs = tuple(float(f) for f in self.fractions)
        if len(fracs) != 3 or min(fracs) < 0 or abs(sum(fracs) - 1) > 1e-6 or fracs[0] == 0:
            raise ClickLogError(
                f"fractions must be 3 shares (train > 0, validation, test) summing to 1, got "
                f"{list(self.fractions)}"
            )
        if self.split_days is not None:
            days = tuple(int(d) for d in self.split_days)
            if len(days) != 2 or min(days) < 0 or days[1] < 1:
                raise ClickLogError(
                    "split_days must be [validation files, test files] with test >= 1, got "
                    f"{list(self.split_days)}"
                )
            if self.order_by is not None:
                raise ClickLogError("split_days needs file order: declare it or order_by")
            object.__setattr__(self, "split_days", days)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> CriteoLayout:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ClickLogError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        values = dict(params)
        for name in ("fractions", "split_days"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    @property
    def dense_columns(self) -> tuple[str, ...]:
        return dense_column_names(self.num_dense)

    @property
    def sparse_columns(self) -> tuple[str, ...]:
        return sparse_column_names(self.num_sparse)

    @property
    def columns(self) -> tuple[str, ...]:
        return (LABEL, *self.dense_columns, *self.sparse_columns)


# --------------------------------------------------------------------------- reading


def split_lines(lines: DataFrame, layout: CriteoLayout, source: str) -> DataFrame:
    """Tab-separated lines (``value``, and ``_file``: the file each came from) into the
    layout's columns (strings, empty = missing), with ``_pos`` ordering each file's lines.

    Raises:
        ClickLogError: a line with another number of fields (names the file and how many).
    """
    n_fields = len(layout.columns)
    lines = lines.select("value", "_file", _position())
    fields = F.split(F.col("value"), "\t", -1)
    bad = lines.filter(F.size(fields) != n_fields)
    example = bad.select("_file", F.size(fields).alias("n"), "value").limit(1).collect()
    if example:
        row = example[0]
        raise ClickLogError(
            f"{source}: {bad.count():,} line(s) do not have {n_fields} tab-separated fields "
            f"(label, {layout.num_dense} dense, {layout.num_sparse} categorical), e.g. one "
            f"with {row['n']} in {row['_file']}: {row['value'][:120]!r}. Declare num_dense / "
            "num_sparse to match the files, or fix them"
        )
    return lines.select(
        *[fields[k].alias(name) for k, name in enumerate(layout.columns)], "_file", "_pos"
    )


def select_columns(frame: DataFrame, layout: CriteoLayout, source: str) -> DataFrame:
    """Parquet files or a table with the layout's columns (any types castable to it), and
    ``_file`` (the file each row came from; empty for a table).

    Raises:
        ClickLogError: a missing column (named, with the columns there are).
    """
    missing = [c for c in layout.columns if c not in frame.columns]
    if layout.order_by is not None and layout.order_by not in frame.columns:
        missing.append(layout.order_by)
    if missing:
        raise ClickLogError(
            f"{source} has no column(s) {missing}; it has {frame.columns}. Click logs need "
            f"{LABEL!r}, dense_0..dense_{layout.num_dense - 1} and "
            f"sparse_0..sparse_{layout.num_sparse - 1} (rename them in the source)"
        )
    extra = [layout.order_by] if layout.order_by else []
    file = F.col("_file") if "_file" in frame.columns else F.input_file_name()
    return frame.select(
        *[F.col(c).cast("string").alias(c) for c in layout.columns],
        *extra,
        file.alias("_file"),
        _position(),
    )


def _position() -> F.Column:
    # Within a file, Spark reads its splits in offset order, and each split's lines in order:
    # (partition, position in partition) orders a file's lines (see ordered_row_ids).
    return F.struct(
        F.spark_partition_id().alias("part"), F.monotonically_increasing_id().alias("id")
    ).alias("_pos")


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def ordered_row_ids(frame: DataFrame, order_by: str | None = None) -> DataFrame:
    """``row_id``: 0, 1, ... in time order, exact and without a single-partition sort.

    File order (files sorted by name, numbers as numbers; lines in file order): the rows of
    each (file, Spark partition) group are consecutive, so a row's index is its group's
    offset (a small aggregate) plus its place in the group. With ``order_by``, rows are
    ranked by that column (ties by file order).
    """
    spark = frame.sparkSession
    if order_by is not None:
        window = Window.orderBy(F.col(order_by), F.col("_file"), F.col("_pos"))
        return (
            frame.withColumn("row_id", F.row_number().over(window) - 1)
            .withColumn("day", F.lit(None).cast("int"))
            .drop("_pos", "_file")
        )
    groups = (
        frame.groupBy("_file", F.col("_pos.part").alias("part"))
        .agg(F.count("*").alias("n"), F.min("_pos.id").alias("first"))
        .collect()
    )
    if any(g["_file"] is None for g in groups):
        raise ClickLogError(
            "the click logs come from a table, whose rows have no file order: declare the "
            "column that orders them in time (order_by)"
        )
    groups.sort(key=lambda g: (_natural_key(g["_file"]), g["part"]))
    files = sorted({g["_file"] for g in groups}, key=_natural_key)
    day_of = {file: day for day, file in enumerate(files)}
    shifts, offset = [], 0
    for g in groups:
        shifts.append((g["_file"], int(g["part"]), offset - int(g["first"]), day_of[g["_file"]]))
        offset += int(g["n"])
    table = spark.createDataFrame(shifts, "_file string, part int, shift long, day int")
    return (
        frame.join(
            F.broadcast(table),
            (frame["_file"] == table["_file"]) & (frame["_pos.part"] == table["part"]),
        )
        .withColumn("row_id", F.col("_pos.id") + F.col("shift"))
        .drop("_pos", "part", "shift", "_file")
    )


# --------------------------------------------------------------------------- checking


def parse_values(frame: DataFrame, layout: CriteoLayout, source: str) -> DataFrame:
    """Labels as 0/1 ints and dense counts as doubles (empty -> null), checked in one Spark
    job: a label that is not 0 or 1, a dense value that is not a number, or a feature that is
    empty in every row (a layout that does not match the files) is an error naming the
    column."""
    label = F.col(LABEL).cast("string")
    dense = {c: F.nullif(F.trim(F.col(c).cast("string")), F.lit("")) for c in layout.dense_columns}
    sparse = {
        c: F.nullif(F.trim(F.col(c).cast("string")), F.lit("")) for c in layout.sparse_columns
    }
    checks = [
        F.sum((~label.isin("0", "1") | label.isNull()).cast("long")).alias(LABEL),
        *[
            F.sum((expr.isNotNull() & expr.try_cast("double").isNull()).cast("long")).alias(c)
            for c, expr in dense.items()
        ],
        *[F.count(expr).alias(f"present:{c}") for c, expr in {**dense, **sparse}.items()],
    ]
    counts = frame.agg(*checks).first().asDict()
    empty = [c.split(":", 1)[1] for c, n in counts.items() if c.startswith("present:") and not n]
    if empty:
        raise ClickLogError(
            f"{source}: column(s) {empty} are empty in every row; check num_dense / "
            "num_sparse against the files (a shifted layout), or drop the feature at the source"
        )
    bad = {c: int(n) for c, n in counts.items() if n and not c.startswith("present:")}
    if bad:
        column, n = next(iter(bad.items()))
        what = "0 or 1" if column == LABEL else "a number or empty"
        raise ClickLogError(
            f"{source}: {n:,} row(s) of column {column!r} are not {what} (columns with bad "
            f"values: {bad}); check that the files are in the Criteo layout (label first)"
        )
    return frame.select(
        "row_id",
        "day",
        F.col(LABEL).cast("int").alias(LABEL),
        *[expr.cast("double").alias(c) for c, expr in dense.items()],
        *[expr.alias(c) for c, expr in sparse.items()],
    )


# --------------------------------------------------------------------------- split, encode


def time_split(frame: DataFrame, layout: CriteoLayout) -> tuple[DataFrame, DataFrame, DataFrame]:
    """In time order: the first ``f0`` of the rows (by ``row_id``) for train, the next ``f1``
    for validation, the rest for test; or, with ``split_days``, whole files (days).

    Raises:
        ClickLogError: fewer files than ``split_days`` needs (one train day at least).
    """
    if layout.split_days is not None:
        n_days = int(frame.agg(F.max("day")).first()[0]) + 1
        n_val, n_test = layout.split_days
        if n_days <= n_val + n_test:
            raise ClickLogError(
                f"split_days {list(layout.split_days)} needs more than {n_val + n_test} "
                f"files (days); the click logs have {n_days}"
            )
        cut1, cut2, column = n_days - n_val - n_test, n_days - n_test, F.col("day")
    else:
        n = frame.count()
        cut1 = int(round(n * layout.fractions[0]))
        cut2 = int(round(n * (layout.fractions[0] + layout.fractions[1])))
        column = F.col("row_id")
    return (
        frame.filter(column < cut1),
        frame.filter((column >= cut1) & (column < cut2)),
        frame.filter(column >= cut2),
    )


def build_vocabularies(train: DataFrame, layout: CriteoLayout) -> DataFrame:
    """``feature, token, index, count``: per feature, the train tokens seen at least
    ``min_frequency`` times, index 1.. by descending count (ties by token). Empty when the
    layout hashes."""
    if layout.hash_buckets is not None:
        return empty_vocabularies(train.sparkSession)
    pairs = train.select(
        F.explode(
            F.array(
                *[
                    F.struct(F.lit(c).alias("feature"), F.col(c).alias("token"))
                    for c in layout.sparse_columns
                ]
            )
        ).alias("p")
    ).select("p.feature", "p.token")
    counts = (
        pairs.filter(F.col("token").isNotNull())
        .groupBy("feature", "token")
        .count()
        .filter(F.col("count") >= layout.min_frequency)
    )
    order = Window.partitionBy("feature").orderBy(F.col("count").desc(), F.col("token"))
    return counts.withColumn("index", F.row_number().over(order).cast("int")).select(
        "feature", "token", "index", "count"
    )


VOCABULARY_SCHEMA = "feature string, token string, index int, count long"


def empty_vocabularies(spark: SparkSession) -> DataFrame:
    """No vocabulary (hashed tokens, or ids that are indexes already)."""
    return spark.createDataFrame([], VOCABULARY_SCHEMA)


def encode(frame: DataFrame, vocabularies: DataFrame, layout: CriteoLayout) -> DataFrame:
    """Dense: ``log(1 + max(x, 0))``, missing -> 0, as float. Tokens: their vocabulary index
    (or hash bucket + 1); missing, rare or unseen -> 0, as long."""
    dense = [
        F.log1p(F.greatest(F.coalesce(F.col(c), F.lit(0.0)), F.lit(0.0))).cast("float").alias(c)
        for c in layout.dense_columns
    ]
    if layout.hash_buckets is not None:
        buckets = F.lit(layout.hash_buckets).cast("long")
        sparse = [
            F.when(F.col(c).isNull(), F.lit(UNKNOWN).cast("long"))
            .otherwise(F.pmod(F.xxhash64(F.lit(c), F.col(c)), buckets) + 1)
            .alias(c)
            for c in layout.sparse_columns
        ]
        return frame.select("row_id", *dense, *sparse, LABEL)
    out = frame.select("row_id", *dense, *layout.sparse_columns, LABEL)
    for c in layout.sparse_columns:
        vocab = vocabularies.filter(F.col("feature") == c).select(
            F.col("token").alias(c), F.col("index").alias(f"_{c}")
        )
        out = out.join(vocab, on=c, how="left").withColumn(
            c, F.coalesce(F.col(f"_{c}").cast("long"), F.lit(UNKNOWN).cast("long"))
        )
        out = out.drop(f"_{c}")
    return out.select("row_id", *layout.dense_columns, *layout.sparse_columns, LABEL)


def cardinalities(vocabularies: DataFrame, layout: CriteoLayout) -> tuple[int, ...]:
    """Per sparse feature, the embedding rows it needs (index 0 for unknown included)."""
    if layout.hash_buckets is not None:
        return tuple(layout.hash_buckets + 1 for _ in layout.sparse_columns)
    sizes = {
        r["feature"]: int(r["n"])
        for r in vocabularies.groupBy("feature").agg(F.max("index").alias("n")).collect()
    }
    return tuple(sizes.get(c, 0) + 1 for c in layout.sparse_columns)


__all__ = [
    "ClickLogError",
    "CriteoLayout",
    "build_vocabularies",
    "cardinalities",
    "empty_vocabularies",
    "encode",
    "ordered_row_ids",
    "parse_values",
    "select_columns",
    "split_lines",
    "time_split",
]
