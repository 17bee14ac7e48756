"""Ingestion nodes: validated raw ratings in, one clean interaction per (user, item) out."""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

logger = logging.getLogger(__name__)


def deduplicate_ratings(ratings: DataFrame, params: dict[str, Any]) -> DataFrame:
    """Keep one rating per (user, item): the latest one (ties: the highest rating).

    Args:
        ratings: validated raw ratings ``user_id, item_id, rating, timestamp``, as loaded by
            ``RatingsDataset`` (which already rejects malformed rows with a clear error).
        params: ``min_user_interactions``: users with fewer interactions are dropped
            (they cannot be split into train, validation and test).

    Returns:
        ``user_id, item_id, rating, timestamp`` with unique (user_id, item_id).
    """
    w = Window.partitionBy("user_id", "item_id").orderBy(
        F.col("timestamp").desc_nulls_last(), F.col("rating").desc()
    )
    unique = ratings.withColumn("_rank", F.row_number().over(w)).where("_rank = 1").drop("_rank")
    min_n = int(params.get("min_user_interactions", 1))
    if min_n > 1:
        counts = unique.groupBy("user_id").agg(F.count("*").alias("_n"))
        unique = unique.join(counts.where(F.col("_n") >= min_n), "user_id").drop("_n")
    return unique.select("user_id", "item_id", "rating", "timestamp")
