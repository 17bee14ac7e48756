"""Tests for recsys_kedro.evaluation.plots."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from recsys_kedro.evaluation.plots import metrics_at_k_figure, training_curves_figure

KS = (10, 20, 100)
MODEL = {
    "recall@10": 0.1,
    "ndcg@10": 0.05,
    "recall@20": 0.2,
    "ndcg@20": 0.07,
    "recall@100": 0.5,
    "ndcg@100": 0.12,
    "n_eval_users": 42,
}
BASELINE = {
    "recall@10": 0.05,
    "ndcg@10": 0.02,
    "recall@20": 0.08,
    "ndcg@20": 0.03,
    "recall@100": 0.3,
    "ndcg@100": 0.06,
    "n_eval_users": 42,
}


def _png_ok(fig: Figure, path) -> None:
    fig.savefig(path)
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_at_k_figure(tmp_path):
    fig = metrics_at_k_figure(MODEL, BASELINE, KS, model_name="tt", baseline_name="pop")
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert len(axes) == 2
    for ax, metric in zip(axes, ("recall", "ndcg"), strict=True):
        lines = ax.get_lines()
        assert len(lines) == 2
        assert [line.get_label() for line in lines] == ["tt", "pop"]
        assert all(line.get_marker() not in (None, "None", "") for line in lines)
        np.testing.assert_array_equal(lines[0].get_xdata(), KS)
        np.testing.assert_allclose(lines[0].get_ydata(), [MODEL[f"{metric}@{k}"] for k in KS])
        np.testing.assert_allclose(lines[1].get_ydata(), [BASELINE[f"{metric}@{k}"] for k in KS])
        assert ax.get_xlabel() == "K"
        assert ax.get_ylabel()
        assert ax.get_title()
        assert ax.get_legend() is not None
    assert "Recall" in axes[0].get_title()
    assert "NDCG" in axes[1].get_title()
    assert fig.get_suptitle()
    _png_ok(fig, tmp_path / "metrics.png")


ALS = {k: v * 1.5 for k, v in BASELINE.items()}


def test_metrics_at_k_figure_draws_every_baseline(tmp_path):
    fig = metrics_at_k_figure(
        MODEL, BASELINE, KS, model_name="tt", baseline_name="pop", more_baselines={"als": ALS}
    )
    for ax, metric in zip(fig.get_axes(), ("recall", "ndcg"), strict=True):
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["tt", "pop", "als"]
        assert len({line.get_marker() for line in lines}) == 3
        assert [line.get_linestyle() for line in lines] == ["-", "--", "--"]
        np.testing.assert_allclose(lines[2].get_ydata(), [ALS[f"{metric}@{k}"] for k in KS])
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["tt", "pop", "als"]
    assert "als" in fig.get_suptitle()
    _png_ok(fig, tmp_path / "three.png")


def test_metrics_at_k_figure_needs_distinct_names():
    with pytest.raises(ValueError, match="own name"):
        metrics_at_k_figure(MODEL, BASELINE, KS, more_baselines={"most popular": ALS})
    with pytest.raises(ValueError, match=r"als metrics lack \['recall@20', 'recall@100'\]"):
        metrics_at_k_figure(
            MODEL, BASELINE, KS, more_baselines={"als": {"recall@10": 0.1, "ndcg@10": 0.1}}
        )


def test_metrics_at_k_figure_missing_key():
    with pytest.raises(ValueError, match=r"ndcg@100"):
        metrics_at_k_figure(MODEL, {k: v for k, v in BASELINE.items() if k != "ndcg@100"}, KS)


def test_training_curves_figure(tmp_path):
    history = {
        "train_loss": [0.9, 0.6, 0.5],
        "val_loss": [1.0, 0.7, 0.65],
        "val_auc": [0.6, 0.7, 0.72],
    }
    fig = training_curves_figure(history)
    axes = fig.get_axes()
    assert len(axes) == 2
    loss_ax, auc_ax = axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "val"]
    assert [line.get_label() for line in auc_ax.get_lines()] == ["val"]
    np.testing.assert_array_equal(loss_ax.get_lines()[0].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(loss_ax.get_lines()[1].get_ydata(), history["val_loss"])
    np.testing.assert_allclose(auc_ax.get_lines()[0].get_ydata(), history["val_auc"])
    assert loss_ax.get_ylabel() == "loss"
    assert auc_ax.get_ylabel() == "auc"
    assert loss_ax.get_xlabel() == "epoch"
    _png_ok(fig, tmp_path / "curves.png")


def test_training_curves_single_and_unprefixed_metrics(tmp_path):
    fig = training_curves_figure({"train_loss": [1.0], "lr": [0.1, 0.05]})
    axes = fig.get_axes()
    assert len(axes) == 2
    assert [len(ax.get_lines()) for ax in axes] == [1, 1]
    np.testing.assert_array_equal(axes[1].get_lines()[0].get_xdata(), [1, 2])
    _png_ok(fig, tmp_path / "single.png")


def test_training_curves_empty_history():
    with pytest.raises(ValueError, match="empty"):
        training_curves_figure({})
