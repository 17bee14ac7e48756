"""DeLong's paired AUC interval: the spread a paired bootstrap over rows measures, in one pass."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_kedro.evaluation.ranking import paired_auc_interval
from recsys_kedro.evaluation.retrieval import auc


def _scorings(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(np.int64)
    a = labels * 0.8 + rng.normal(0, 1, n)
    b = a + rng.normal(0, 0.7, n)  # a noisier copy: correlated with a, as two models are
    return labels, a, b


def test_the_interval_matches_a_paired_bootstrap_over_rows():
    labels, a, b = _scorings(3000, seed=0)
    low, high = paired_auc_interval(labels, a, b)
    diff = auc(labels, a) - auc(labels, b)
    assert low < diff < high and (low + high) / 2 == pytest.approx(diff)
    rng = np.random.default_rng(1)
    boot = []
    for _ in range(400):
        rows = rng.integers(0, labels.size, labels.size)
        boot.append(auc(labels[rows], a[rows]) - auc(labels[rows], b[rows]))
    # the normal interval's half-width is 1.96 standard deviations of the bootstrap's
    assert (high - low) / 2 / 1.96 == pytest.approx(np.std(boot), rel=0.15)
    # pairing matters: treating the scorings as independent samples would be much wider
    assert (high - low) / 2 / 1.96 < 0.6 * np.hypot(*(_sd(labels, s, rng) for s in (a, b)))


def _sd(labels, scores, rng):
    boot = [
        auc(labels[r], scores[r])
        for r in (rng.integers(0, labels.size, labels.size) for _ in range(200))
    ]
    return np.std(boot)


def test_identical_scorings_differ_by_nothing_and_bad_input_is_named():
    labels, a, _ = _scorings(500, seed=2)
    assert paired_auc_interval(labels, a, a) == pytest.approx((0.0, 0.0))
    with pytest.raises(ValueError, match="positive and negative"):
        paired_auc_interval(np.ones(5), np.arange(5.0), np.arange(5.0))
    with pytest.raises(ValueError, match="one length"):
        paired_auc_interval(labels, a, a[:10])
