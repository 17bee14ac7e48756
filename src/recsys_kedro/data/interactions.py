"""Interactions in Spark, Kedro-free: labels by a declared rule, one interaction per (user,
item), id indexes, the train/validation/test split and its statistics.

Nothing here collects rows to the driver; only aggregates (counts) come back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


LABEL_RULES = ("rating_threshold", "all_positive", "events")
#: What an event type may map to: a label, or ``drop`` (the row is removed, and counted).
DROP = "drop"


class LabelRuleError(ValueError):
    """A label rule that is malformed, or that the interactions cannot satisfy."""


@dataclass(frozen=True)
class LabelRule:
    """Which interactions are positive (label 1), negative (label 0) or dropped.

    * ``rating_threshold`` (explicit ratings): ``label = rating >= threshold``; every
      interaction needs a rating.
    * ``all_positive`` (implicit feedback: clicks, plays, purchases): every interaction is
      positive.
    * ``events`` (an event log): ``events`` maps each event type to ``1``, ``0`` or
      ``drop``, or to ``{label: 1 or 0, weight: w}``; a type the mapping does not name is an
      error, never silently dropped. ``weights`` (event type -> ``w > 0``, 1 by default)
      weigh the kept rows in the training loss (a ``weight`` column, see
      :func:`label_interactions`).

    Of several interactions of one (user, item) pair, the latest is kept under the first two
    rules; under ``events`` the one with the highest label is (then the latest of those), so
    a purchase after a view is a positive of the purchase's time.
    """

    rule: str = "rating_threshold"
    threshold: float = 4.0
    events: tuple[tuple[str, int | None], ...] = ()
    weights: tuple[tuple[str, float], ...] = ()

    @property
    def weighted(self) -> bool:
        """Whether any event type weighs other than 1 (then rows carry a ``weight``)."""
        return any(w != 1.0 for _, w in self.weights)

    def __post_init__(self) -> None:
        named = {e for e, _ in self.events}
        bad_weights = [(e, w) for e, w in self.weights if e not in named or not 0 < w < 1e6]
        if bad_weights:
            raise LabelRuleError(
                f"event weights must be numbers in (0, 1e6) of event types the `events:` "
                f"mapping names; got {bad_weights}"
            )
        if self.rule not in LABEL_RULES:
            raise LabelRuleError(f"label rule must be one of {LABEL_RULES}, got {self.rule!r}")
        if self.rule == "events":
            if not self.events:
                raise LabelRuleError(
                    "the `events` label rule needs `events:`, a mapping from each event type "
                    "to 1 (positive), 0 (negative) or drop"
                )
            bad = [(e, v) for e, v in self.events if v not in (0, 1, None)]
            if bad:
                raise LabelRuleError(f"`events:` maps each event type to 1, 0 or {DROP}; got {bad}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> LabelRule:
        """From ``{rule, threshold, events}`` (``events``: type -> 1 / 0 / ``drop``)."""
        unknown = sorted(set(params) - {"rule", "threshold", "events"})
        if unknown:
            raise LabelRuleError(
                f"unknown key(s) {unknown} in the label rule; the keys are rule, threshold, events"
            )
        events, weights = [], []
        for event, given in dict(params.get("events") or {}).items():
            value = given
            if isinstance(given, Mapping):
                extra = sorted(set(given) - {"label", "weight"})
                if extra or "label" not in given:
                    raise LabelRuleError(
                        f"`events:` {event}: a mapping takes `label` (1 or 0) and `weight`; "
                        f"got {dict(given)!r}"
                    )
                try:
                    weights.append((str(event), float(given.get("weight", 1.0))))
                except (TypeError, ValueError):
                    raise LabelRuleError(
                        f"`events:` {event}: weight must be a number, got {given['weight']!r}"
                    ) from None
                value = given["label"]
            if value == DROP or value is None:
                events.append((str(event), None))
            elif isinstance(value, bool) or value not in (0, 1):
                raise LabelRuleError(
                    f"`events:` maps each event type to 1, 0 or {DROP}; got {event}: {value!r}"
                )
            else:
                events.append((str(event), int(value)))
        try:
            threshold = float(params.get("threshold", 4.0))
        except (TypeError, ValueError):
            raise LabelRuleError(
                f"`threshold:` must be a number, got {params.get('threshold')!r}"
            ) from None
        return cls(
            rule=str(params.get("rule", "rating_threshold")),
            threshold=threshold,
            events=tuple(events),
            weights=tuple(weights),
        )


def label_interactions(interactions: DataFrame, rule: LabelRule) -> DataFrame:
    """Label each raw interaction by ``rule``, with one aggregating query that checks the
    data can take it.

    Args:
        interactions: validated raw interactions ``user_id, item_id, rating, event,
            timestamp`` (``InteractionsDataset``).
        rule: the label rule.

    Returns:
        The rows ``rule`` keeps, with ``label: int`` and ``_priority`` (what
        :func:`deduplicate_interactions` keeps first of a pair); with a weighted rule
        (:attr:`LabelRule.weighted`) also ``weight: float`` (1 for unweighted types).

    Raises:
        LabelRuleError: ``rating_threshold`` on rows without a rating, ``events`` on rows
            without an event type or with a type the mapping does not name.
    """
    if rule.rule == "rating_threshold":
        label = (F.col("rating") >= F.lit(rule.threshold)).cast("int")
        bad = F.col("rating").isNull()
        problem = (
            "have no rating, so the `rating_threshold` rule cannot label them: for implicit "
            "data use `rule: all_positive`, or `rule: events` with an event column"
        )
    elif rule.rule == "all_positive":
        label, bad, problem = F.lit(1), F.lit(False), ""
    else:
        mapping = dict(rule.events)
        label = F.lit(None).cast("int")
        for event, value in mapping.items():
            if value is not None:
                label = F.when(F.col("event") == event, F.lit(value)).otherwise(label)
        bad = F.col("event").isNull() | ~F.col("event").isin(list(mapping))
        problem = (
            f"have an event type the `events:` mapping ({sorted(mapping)}) does not name (or "
            f"none): map every type to 1, 0 or {DROP}"
        )
    dropped = [e for e, v in rule.events if v is None] if rule.rule == "events" else []
    check = interactions.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_if(bad).alias("bad"),
        F.count_if(F.col("event").isin(dropped) if dropped else F.lit(False)).alias("dropped"),
        F.collect_set(F.when(bad, F.coalesce(F.col("event"), F.lit("<none>")))).alias("kinds"),
        F.first(F.when(bad, F.concat_ws(" ", "user_id", "item_id")), ignorenulls=True).alias("ex"),
    ).first()
    if check["bad"]:
        kinds = sorted(check["kinds"])[:10] if rule.rule == "events" else []
        raise LabelRuleError(
            f"{check['bad']} of {check['rows']} interactions {problem}"
            + (f"; the unnamed types: {kinds}" if kinds else "")
            + f" (e.g. user, item: {check['ex']})"
        )
    labelled = interactions.withColumn("label", label)
    if rule.rule == "events":
        if dropped:
            logger.info(
                "label rule: %d of %d interactions dropped (event types %s)",
                check["dropped"],
                check["rows"],
                dropped,
            )
            labelled = labelled.where(~F.col("event").isin(dropped))
        if rule.weighted:
            weight = F.lit(1.0)
            for event, value in rule.weights:
                weight = F.when(F.col("event") == event, F.lit(value)).otherwise(weight)
            labelled = labelled.withColumn("weight", weight.cast("float"))
        return labelled.withColumn("_priority", F.col("label"))
    return labelled.withColumn("_priority", F.lit(0))


def deduplicate_interactions(labelled: DataFrame, params: Mapping[str, Any]) -> DataFrame:
    """Keep one interaction per (user, item): the highest ``_priority``, then the highest
    ``weight`` (if the rows have one), then the latest (ties: the highest rating); drop users
    with too few.

    Args:
        labelled: :func:`label_interactions`'s output.
        params: ``min_user_interactions``: users with fewer interactions are dropped
            (they cannot be split into train, validation and test).

    Returns:
        ``user_id, item_id, rating, event, timestamp, label`` (and ``weight`` if the rows
        have one) with unique (user_id, item_id).
    """
    weighted = "weight" in labelled.columns
    w = Window.partitionBy("user_id", "item_id").orderBy(
        F.col("_priority").desc(),
        *([F.col("weight").desc()] if weighted else []),
        F.col("timestamp").desc_nulls_last(),
        F.col("rating").desc_nulls_last(),
    )
    unique = labelled.withColumn("_rank", F.row_number().over(w)).where("_rank = 1").drop("_rank")
    min_n = int(params.get("min_user_interactions", 1))
    if min_n > 1:
        counts = unique.groupBy("user_id").agg(F.count("*").alias("_n"))
        unique = unique.join(counts.where(F.col("_n") >= min_n), "user_id").drop("_n")
    return unique.select(
        "user_id",
        "item_id",
        "rating",
        "event",
        "timestamp",
        F.col("label").cast("int"),
        *(["weight"] if weighted else []),
    )


def build_id_index(ratings: DataFrame, id_column: str, index_column: str) -> DataFrame:
    """Map every distinct id of ``id_column`` to a contiguous index ``0..n-1``.

    Ids are numbered in sorted order with ``RDD.zipWithIndex`` (distributed; no global
    window on one partition), so the same data always gives the same index.

    Returns:
        ``<id_column>: string, <index_column>: long``; the mapping that translates model
        indexes back to the original ids.
    """
    ids = ratings.select(id_column).distinct().orderBy(id_column)
    schema = T.StructType(
        [
            T.StructField(id_column, T.StringType(), False),
            T.StructField(index_column, T.LongType(), False),
        ]
    )
    indexed = ids.rdd.zipWithIndex().map(lambda row_idx: (row_idx[0][0], row_idx[1]))
    return ids.sparkSession.createDataFrame(indexed, schema)


def index_users(ratings: DataFrame) -> DataFrame:
    """``user_id -> user_idx`` (see :func:`build_id_index`)."""
    return build_id_index(ratings, "user_id", "user_idx")


def index_items(ratings: DataFrame) -> DataFrame:
    """``item_id -> item_idx`` (see :func:`build_id_index`)."""
    return build_id_index(ratings, "item_id", "item_idx")


def index_interactions(
    interactions: DataFrame, user_index: DataFrame, item_index: DataFrame
) -> DataFrame:
    """Attach ``user_idx``/``item_idx`` to the labelled interactions.

    Raises:
        ValueError: if an id has no index (the index was built from other data).
    """
    joined = interactions.join(user_index, "user_id", "left").join(item_index, "item_id", "left")
    missing = joined.where(F.col("user_idx").isNull() | F.col("item_idx").isNull()).limit(3)
    examples = missing.select("user_id", "item_id").collect()
    if examples:
        raise ValueError(
            f"ids without an index, e.g. {[tuple(r) for r in examples]}: the user/item index "
            "datasets are stale; re-run the features stage from `int_interactions`."
        )
    return joined.select(
        "user_idx",
        "item_idx",
        F.col("rating").cast("float").alias("rating"),
        "timestamp",
        F.col("label").cast("int").alias("label"),
        *([F.col("weight").cast("float")] if "weight" in joined.columns else []),
    )


def _per_user_size(size: float | int, n: Any) -> Any:
    """A per-user count: an int is that many rows, a float in (0, 1) that share (rounded up)."""
    if isinstance(size, bool) or size < 0:
        raise ValueError(f"split sizes must be >= 0, got {size!r}")
    if isinstance(size, int) or float(size).is_integer() and size >= 1:
        return F.lit(int(size))
    if not 0 < size < 1:
        raise ValueError(f"a fractional split size must be in (0, 1), got {size!r}")
    return F.ceil(n * F.lit(float(size))).cast("int")


def split_interactions(
    interactions: DataFrame, params: dict[str, Any]
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Split interactions into train, validation and test.

    ``strategy: temporal`` (default): per user, the latest ``test_size`` interactions go to
    test and the ``validation_size`` before them to validation (ties in time broken by item
    index); users with fewer than ``min_train_interactions`` left for training keep all
    their interactions in train. ``strategy: random``: a seeded random split by row with
    ``random_fractions`` (train, validation, test).
    """
    strategy = params.get("strategy", "temporal")
    if strategy == "random":
        fractions = [float(x) for x in params.get("random_fractions", (0.8, 0.1, 0.1))]
        if len(fractions) != 3 or min(fractions) <= 0:
            raise ValueError(f"random_fractions must be 3 positive numbers, got {fractions}")
        train, validation, test = interactions.randomSplit(fractions, seed=int(params["seed"]))
        return train, validation, test
    if strategy != "temporal":
        raise ValueError(f"split.strategy must be 'temporal' or 'random', got {strategy!r}")
    no_time = interactions.where(F.col("timestamp").isNull()).limit(1).count()
    if no_time:
        raise ValueError(
            "the temporal split needs timestamps, but this data has rows without one: set "
            "two_tower.features.split.strategy: random in conf/base/parameters_two_tower.yml "
            "(or use a source format with timestamps)"
        )
    by_user = Window.partitionBy("user_idx")
    latest_first = by_user.orderBy(F.col("timestamp").desc(), F.col("item_idx").desc())
    n = F.count("*").over(by_user)
    n_test = _per_user_size(params["test_size"], n)
    n_val = _per_user_size(params["validation_size"], n)
    min_train = int(params.get("min_train_interactions", 1))
    ranked = (
        interactions.withColumn("_pos", F.row_number().over(latest_first))
        .withColumn("_n", n)
        .withColumn("_n_test", n_test)
        .withColumn("_n_val", n_val)
    )
    splittable = F.col("_n") - F.col("_n_test") - F.col("_n_val") >= F.lit(min_train)
    split = (
        F.when(~splittable, "train")
        .when(F.col("_pos") <= F.col("_n_test"), "test")
        .when(F.col("_pos") <= F.col("_n_test") + F.col("_n_val"), "validation")
        .otherwise("train")
    )
    labelled = ranked.withColumn("_split", split).drop("_pos", "_n", "_n_test", "_n_val")
    out = [labelled.where(F.col("_split") == s).drop("_split") for s in SPLITS]
    return out[0], out[1], out[2]


def item_popularity(train: DataFrame, item_index: DataFrame) -> DataFrame:
    """Training interactions per item index: ``n_positive`` (liked) and ``n_rated`` (every
    train row), 0 for items absent from train.

    ``n_positive`` feeds the popularity baseline; either count can feed the log-q correction
    of the sampled softmax (``n_rated`` describes the in-batch candidates: every train row,
    liked or not, serves as one).
    """
    counts = train.groupBy("item_idx").agg(
        F.sum(F.when(F.col("label") == 1, 1).otherwise(0)).cast("long").alias("n_positive"),
        F.count("*").cast("long").alias("n_rated"),
    )
    return (
        item_index.select("item_idx")
        .join(counts, "item_idx", "left")
        .select(
            "item_idx",
            F.coalesce("n_positive", F.lit(0)).cast("long").alias("n_positive"),
            F.coalesce("n_rated", F.lit(0)).cast("long").alias("n_rated"),
        )
        .orderBy("item_idx")
    )


def summarise_splits(
    train: DataFrame,
    validation: DataFrame,
    test: DataFrame,
    user_index: DataFrame,
    item_index: DataFrame,
) -> dict[str, Any]:
    """Users, items, interactions and positive rate per split, plus the index sizes.

    Raises:
        ValueError: if a split is empty (with the parameters to change).
    """
    stats: dict[str, Any] = {
        "n_users": user_index.count(),
        "n_items": item_index.count(),
    }
    for name, df in zip(SPLITS, (train, validation, test), strict=True):
        row = df.agg(
            F.count("*").alias("interactions"),
            F.countDistinct("user_idx").alias("users"),
            F.countDistinct("item_idx").alias("items"),
            F.avg("label").alias("positive_rate"),
        ).first()
        if row["interactions"] == 0:
            raise ValueError(
                f"the {name} split is empty: check two_tower.features.split "
                "(validation_size, test_size, min_train_interactions or random_fractions)"
            )
        stats[name] = {
            "interactions": int(row["interactions"]),
            "users": int(row["users"]),
            "items": int(row["items"]),
            "positive_rate": float(row["positive_rate"]),
        }
    logger.info(
        "splits: %s",
        ", ".join(
            f"{s}={stats[s]['interactions']} rows/{stats[s]['users']} users "
            f"({stats[s]['positive_rate']:.1%} positive)"
            for s in SPLITS
        ),
    )
    return stats
