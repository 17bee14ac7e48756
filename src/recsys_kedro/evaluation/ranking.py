"""Pointwise ranking metrics (AUC and log loss of predicted probabilities) and a floor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys_kedro.evaluation.retrieval import auc

#: Probabilities are clipped to [EPS, 1 - EPS] so one confident mistake cannot make the log
#: loss infinite (the same convention as scikit-learn's).
EPS = 1e-7


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy of ``probabilities`` ``(N,)`` against 0/1 ``labels`` ``(N,)``."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(
            f"labels and probabilities must be non-empty 1-D arrays of one length, got "
            f"{y.shape} and {p.shape}"
        )
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be finite and within [0, 1]")
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def ranking_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """``{"auc", "logloss"}`` of click probabilities against 0/1 labels."""
    return {"auc": auc(labels, probabilities), "logloss": log_loss(labels, probabilities)}


def logistic_regression_scores(
    train: Any, test: Any, features: Sequence[str], seed: int = 0
) -> np.ndarray:
    """A floor for a ranker: probabilities on ``test`` of a logistic regression fitted on
    ``train``'s ``features`` (standardised) against its ``label`` (pandas frames)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    columns = list(features)
    labels = train["label"].to_numpy()
    if np.unique(labels).size < 2:
        raise ValueError(
            f"the logistic regression needs both labels in its training rows, got only "
            f"{np.unique(labels).tolist()}"
        )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(train[columns].to_numpy(np.float32), labels)
    return model.predict_proba(test[columns].to_numpy(np.float32))[:, 1]
