"""Recommendations for every user, computed in Spark with the servable model.

The model travels to the executors as a broadcast variable: each Python worker
deserialises it once and builds its FAISS index and ranker once (the model caches them),
then serves every partition of users it is given (``mapInPandas``). The same code runs
for a thousand users on a laptop and for millions on a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from recsys_kedro.serving.recommender import FunnelRecommender

SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("score", T.FloatType(), False),
    ]
)


def recommend_all(users: DataFrame, model: FunnelRecommender, batch_users: int = 1024) -> DataFrame:
    """``user_id, item_id, rank, score`` for every ``user_id`` of ``users`` (Spark).

    Args:
        users: a frame with a ``user_id`` column (original ids; other columns ignored).
        model: the servable model (``mlflow.pyfunc.load_model(...).unwrap_python_model()``).
        batch_users: users per call of the model inside a partition (bounds memory).
    """
    if "user_id" not in users.columns:
        raise ValueError(f"users needs a 'user_id' column, it has {users.columns}")
    if batch_users < 1:
        raise ValueError(f"batch_users must be >= 1, got {batch_users}")
    shared = users.sparkSession.sparkContext.broadcast(model)

    def serve(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        recommender = shared.value  # once per Python worker; its index and ranker too
        for part in parts:
            ids = part["user_id"].astype(str)
            for start in range(0, len(ids), batch_users):
                chunk = pd.DataFrame({"user_id": ids.iloc[start : start + batch_users]})
                out = recommender.predict(None, chunk)
                yield out.astype({"rank": "int32", "score": "float32"})

    return users.select(users["user_id"].cast("string")).mapInPandas(serve, SCHEMA)
