"""The whole funnel as one MLflow pyfunc model: user ids in, top K items with scores out.

:class:`FunnelRecommender` holds everything it needs in memory (the two-tower's user
embeddings, the FAISS item index as bytes, the ranker's checkpoint, the side-feature
tables, each user's already-seen items and the popularity fallback), so
``mlflow.pyfunc.load_model(path)`` serves it in any process with this package installed,
no Kedro session, no Spark. The features it builds for a candidate are the ones the
``recommend`` pipeline builds in Spark (:mod:`recsys_kedro.data.side_features`), and a test
checks they agree.

Input: a pandas DataFrame with a ``user_id`` column (original ids). Output: ``user_id,
item_id, rank, score``; ``score`` is the ranker's probability, or for a user the model does
not know (the popularity fallback) the item's share of the train positives.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from recsys_kedro.data.feature_schema import FeatureLayout

OUTPUT_COLUMNS = ("user_id", "item_id", "rank", "score")


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series(dtype=str),
            "item_id": pd.Series(dtype=str),
            "rank": pd.Series(dtype=np.int32),
            "score": pd.Series(dtype=np.float32),
        }
    )


def candidate_features(
    users: np.ndarray,
    items: np.ndarray,
    scores: np.ndarray,
    ranks: np.ndarray,
    user_features: pd.DataFrame,
    item_features: pd.DataFrame,
    layout: FeatureLayout,
) -> pd.DataFrame:
    """The ranker's input for candidate rows ``(users[i], items[i])`` with their retrieval
    ``scores`` and ``ranks``: the columns :func:`side_features.ranker_rows` builds in Spark.

    ``user_features`` / ``item_features`` are indexed by ``user_idx`` / ``item_idx``
    (positions ``0..n-1``) with ``layout.user_columns`` / ``layout.item_columns``.
    """
    u = user_features.iloc[users]
    i = item_features.iloc[items]
    frame = pd.DataFrame(
        {
            "user_idx": users.astype(np.int64),
            "item_idx": items.astype(np.int64),
            "retrieval_score": scores.astype(np.float32),
            "retrieval_rank": ranks.astype(np.int32),
            "retrieval_log_rank": np.log1p(ranks.astype(np.float64)).astype(np.float32),
        }
    )
    shares = {share for share, _, _ in layout.affinities}
    for column in layout.user_columns:
        if column not in shares:
            frame[column] = u[column].to_numpy()
    for column in layout.item_columns:
        frame[column] = i[column].to_numpy()
    # The user's share of each value of the item's multi-hot feature, summed (0 past the end).
    for share_column, feature, out in layout.affinities:
        share = u[share_column].to_numpy()
        values = frame[feature].to_numpy()
        frame[out] = np.fromiter(
            (
                float(np.asarray(s, dtype=np.float32)[g[g < len(s)]].sum())
                for s, g in zip(share, (np.asarray(x, dtype=np.int64) for x in values), strict=True)
            ),
            dtype=np.float32,
            count=len(frame),
        )
    return frame


class FunnelRecommender(mlflow.pyfunc.PythonModel):
    """Two-tower retrieval -> ranker -> top K, for a table of user ids (see the module).

    Args:
        user_ids, item_ids: original ids, position = index (``user_idx`` / ``item_idx``).
        user_embeddings: ``(n_users, D)`` float32 query embeddings.
        index_bytes: the serialised FAISS index over the item embeddings.
        ranker: the ranker's checkpoint (config + state dict).
        user_features, item_features: one row per index position (see
            :func:`candidate_features`).
        seen_users, seen_items: pairs never recommended (the train and validation items).
        item_popularity: per item index, its train positives (the fallback's order).
        n_candidates, top_k: list length of retrieval, and recommendations per user.
        layout: :meth:`FeatureLayout.to_dict` of the ranker's features (the feature summary's).
    """

    def __init__(
        self,
        *,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        user_embeddings: np.ndarray,
        index_bytes: bytes,
        ranker: dict[str, Any],
        user_features: pd.DataFrame,
        item_features: pd.DataFrame,
        seen_users: np.ndarray,
        seen_items: np.ndarray,
        item_popularity: np.ndarray,
        n_candidates: int,
        top_k: int,
        layout: dict[str, Any],
    ) -> None:
        n_users, n_items = len(user_ids), len(item_ids)
        assert user_embeddings.shape[0] == n_users, "one embedding per user id"
        assert len(user_features) == n_users and len(item_features) == n_items
        assert len(item_popularity) == n_items, "one popularity count per item id"
        assert 1 <= top_k <= n_candidates, "top_k must be in [1, n_candidates]"
        self.user_ids = np.asarray(user_ids).astype(str)
        self.item_ids = np.asarray(item_ids).astype(str)
        self.user_embeddings = np.asarray(user_embeddings, dtype=np.float32)
        self.index_bytes = bytes(index_bytes)
        self.ranker_checkpoint = ranker
        self.user_features = user_features.reset_index(drop=True)
        self.item_features = item_features.reset_index(drop=True)
        self.seen_users = np.asarray(seen_users, dtype=np.int64)
        self.seen_items = np.asarray(seen_items, dtype=np.int64)
        popularity = np.asarray(item_popularity, dtype=np.float64)
        self.fallback_items = np.lexsort((np.arange(n_items), -popularity))[:top_k]
        self.fallback_scores = (popularity / max(popularity.sum(), 1.0))[self.fallback_items]
        self.layout = dict(layout)
        parsed = FeatureLayout.from_dict(self.layout)
        absent = [c for c in parsed.user_columns if c not in self.user_features.columns]
        absent += [c for c in parsed.item_columns if c not in self.item_features.columns]
        assert not absent, f"the feature tables lack the layout's columns {absent}"
        self.n_candidates = int(n_candidates)
        self.top_k = int(top_k)
        self._loaded: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_loaded"] = None  # the FAISS index and torch model are rebuilt on load
        return state

    def load_context(self, context: Any) -> None:
        self._load()

    def _load(self) -> dict[str, Any]:
        if self._loaded is None:
            from recsys_kedro.models.ranking import model_from_file
            from recsys_kedro.retrieval import deserialize_index

            self._loaded = {
                "index": deserialize_index(self.index_bytes),
                "ranker": model_from_file(self.ranker_checkpoint),
                "user_index": {u: i for i, u in enumerate(self.user_ids)},
                "layout": FeatureLayout.from_dict(self.layout),
            }
        return self._loaded

    def candidates(self, users: np.ndarray) -> pd.DataFrame:
        """Retrieval candidates of known user indexes, with the ranker's features."""
        from recsys_kedro.retrieval.candidates import candidate_lists

        lists = candidate_lists(
            self._load()["index"],
            self.user_embeddings,
            users,
            self.n_candidates,
            self.seen_users,
            self.seen_items,
        )
        return candidate_features(
            lists["user_idx"].to_numpy(),
            lists["item_idx"].to_numpy(),
            lists["retrieval_score"].to_numpy(),
            lists["retrieval_rank"].to_numpy(),
            self.user_features,
            self.item_features,
            self._load()["layout"],
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Top K per distinct user id of ``model_input["user_id"]``, in input order."""
        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(
                f"the recommender takes a pandas DataFrame with a 'user_id' column, got "
                f"{type(model_input).__name__}"
            )
        if "user_id" not in model_input.columns:
            raise ValueError(
                f"the input needs a 'user_id' column (original user ids); it has "
                f"{list(model_input.columns)}"
            )
        wanted = pd.unique(model_input["user_id"].astype(str))
        if len(wanted) == 0:
            return _empty()
        from recsys_kedro.evaluation.lists import rank_lists
        from recsys_kedro.models.ranking import score_frame

        loaded = self._load()
        known = np.array([loaded["user_index"].get(u, -1) for u in wanted], dtype=np.int64)
        parts = []
        if (known >= 0).any():
            rows = self.candidates(known[known >= 0])
            rows["score"] = score_frame(loaded["ranker"], rows)
            rank = rank_lists(rows["user_idx"], rows["item_idx"], rows["score"])
            top = rows.loc[rank <= self.top_k, ["user_idx", "item_idx", "score"]]
            top = top.assign(rank=rank[rank <= self.top_k].astype(np.int32))
            parts.append(
                pd.DataFrame(
                    {
                        "user_id": self.user_ids[top["user_idx"].to_numpy()],
                        "item_id": self.item_ids[top["item_idx"].to_numpy()],
                        "rank": top["rank"].to_numpy(),
                        "score": top["score"].to_numpy(np.float32),
                    }
                )
            )
        unknown = wanted[known < 0]
        if len(unknown):
            k = len(self.fallback_items)
            parts.append(
                pd.DataFrame(
                    {
                        "user_id": np.repeat(unknown, k),
                        "item_id": np.tile(self.item_ids[self.fallback_items], len(unknown)),
                        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(unknown)),
                        "score": np.tile(self.fallback_scores.astype(np.float32), len(unknown)),
                    }
                )
            )
        out = pd.concat(parts, ignore_index=True)
        order = {u: i for i, u in enumerate(wanted)}
        out = out.assign(_order=out["user_id"].map(order)).sort_values(["_order", "rank"])
        return out.drop(columns="_order").reset_index(drop=True)[list(OUTPUT_COLUMNS)]
