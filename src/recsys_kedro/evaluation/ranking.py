"""Pointwise ranking metrics (AUC and log loss of predicted probabilities) and a floor."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys_kedro.evaluation.retrieval import auc

logger = logging.getLogger(__name__)

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


def _delong_components(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components: ``v10`` ``(m,)`` per positive (the share of
    negatives it outscores, ties half) and ``v01`` ``(n,)`` per negative (the share of
    positives that outscore it), from mid-ranks (Sun & Xu's fast algorithm, 2014)."""
    from scipy.stats import rankdata

    pos = labels == 1
    m, n = int(pos.sum()), int((~pos).sum())
    ranks_all = rankdata(scores)
    ranks_pos, ranks_neg = rankdata(scores[pos]), rankdata(scores[~pos])
    v10 = (ranks_all[pos] - ranks_pos) / n
    v01 = 1.0 - (ranks_all[~pos] - ranks_neg) / m
    return float(v10.mean()), v10, v01


def paired_auc_interval(
    labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """DeLong's interval of ``AUC(a) - AUC(b)`` for two scorings of the same rows ``(N,)``.

    The rows are paired, so what the two scorings share (the same hard examples) cancels:
    the variance of the difference uses the covariance of their structural components
    (DeLong, DeLong & Clarke-Pearson, 1988). A normal interval; exact ties are counted
    half, as :func:`recsys_kedro.evaluation.retrieval.auc` does.
    """
    from scipy.stats import norm

    y = np.asarray(labels)
    a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    if not (y.shape == a.shape == b.shape) or y.ndim != 1:
        raise ValueError(
            f"labels and both scorings must be 1-D arrays of one length, got {y.shape}, "
            f"{a.shape}, {b.shape}"
        )
    pos = y == 1
    if pos.all() or not pos.any():
        raise ValueError("an AUC interval needs both positive and negative rows")
    auc_a, v10_a, v01_a = _delong_components(y, a)
    auc_b, v10_b, v01_b = _delong_components(y, b)
    s10 = np.cov(np.stack([v10_a, v10_b]))
    s01 = np.cov(np.stack([v01_a, v01_b]))
    cov = s10 / v10_a.size + s01 / v01_a.size
    sd = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    half = float(norm.ppf(0.5 + level / 2)) * sd
    diff = auc_a - auc_b
    return diff - half, diff + half


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


#: Hash buckets of the categorical one-hot features of :func:`logistic_regression_floor`.
FLOOR_BUCKETS = 1 << 18
#: Inverse regularisation strengths it tries, each scored on validation.
FLOOR_C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0)


def _design(
    frame: Any,
    dense: Sequence[str],
    sparse: Sequence[str],
    mean: np.ndarray,
    std: np.ndarray,
    buckets: int,
) -> Any:
    """``(N, len(dense) + buckets)`` CSR: standardised dense values, then a one in the hashed
    bucket of every categorical id (each id of a multi-hot feature)."""
    from scipy import sparse as sp

    n = len(frame)
    values = (frame[list(dense)].to_numpy(np.float64) - mean) / std
    rows = [np.repeat(np.arange(n), len(dense))]
    cols = [np.tile(np.arange(len(dense)), n)]
    data = [values.ravel()]
    for j, name in enumerate(sparse):
        column = frame[name].to_numpy()
        if column.dtype == object:  # multi-hot: an array of ids per row
            lengths = np.fromiter((len(v) for v in column), np.int64, n)
            ids = np.concatenate([np.asarray(v, np.int64) for v in column]) if n else column
        else:
            lengths, ids = np.ones(n, np.int64), column.astype(np.int64)
        hashed = (np.int64(j) * 1_000_003 + ids) % buckets
        rows.append(np.repeat(np.arange(n), lengths))
        cols.append(len(dense) + hashed)
        data.append(np.ones(len(hashed)))
    shape = (n, len(dense) + buckets)
    rows_, cols_ = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.concatenate(data), (rows_, cols_)), shape=shape)


def logistic_regression_floor(
    train: Any,
    validation: Any,
    test: Any,
    dense: Sequence[str],
    sparse: Sequence[str],
    seed: int = 0,
    buckets: int = FLOOR_BUCKETS,
    c_grid: Sequence[float] = FLOOR_C_GRID,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The floor a ranker must clear: a logistic regression on the dense features
    (standardised) *and* the categorical ones (hashed one-hot), its regularisation chosen on
    validation AUC, as hard as the ranker's own settings are tuned. Pandas frames in.

    Returns:
        Its probabilities on ``test``, and what was chosen: ``C`` and the validation AUC of
        every ``C`` tried.
    """
    from sklearn.linear_model import LogisticRegression

    labels = train["label"].to_numpy()
    if np.unique(labels).size < 2:
        raise ValueError(
            f"the logistic regression needs both labels in its training rows, got only "
            f"{np.unique(labels).tolist()}"
        )
    values = train[list(dense)].to_numpy(np.float64)
    mean, std = values.mean(axis=0), values.std(axis=0)
    std[std == 0] = 1.0
    x_train, x_val, x_test = (
        _design(frame, dense, sparse, mean, std, buckets) for frame in (train, validation, test)
    )
    val_labels = validation["label"].to_numpy()
    scored = {}
    models = {}
    for c in c_grid:
        model = LogisticRegression(C=float(c), max_iter=1000, random_state=seed)
        model.fit(x_train, labels)
        scored[float(c)] = auc(val_labels, model.predict_proba(x_val)[:, 1])
        models[float(c)] = model
    best = max(scored, key=lambda c: (scored[c], -c))  # ties: the stronger regularisation
    if best in (min(scored), max(scored)) and len(scored) > 1:
        logger.warning(
            "the logistic regression's C=%g is at the edge of the grid %s: widen it",
            best,
            sorted(scored),
        )
    chosen = {"C": best, "validation_auc_by_C": {str(c): v for c, v in scored.items()}}
    return models[best].predict_proba(x_test)[:, 1], chosen
