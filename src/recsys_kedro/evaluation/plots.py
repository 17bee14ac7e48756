"""Figures for evaluation reports: top-K metrics against K, and training curves.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no global figure registry, no GUI backend, safe in worker processes and tests.
Save them with ``fig.savefig(path)`` (or a Kedro ``matplotlib.MatplotlibWriter`` dataset).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

__all__ = ["metrics_at_k_figure", "training_curves_figure"]

_SPLIT_PREFIXES = ("train", "val", "valid", "validation", "test")


def _metric_curve(metrics: Mapping[str, float], name: str, ks: Sequence[int], who: str):
    missing = [f"{name}@{k}" for k in ks if f"{name}@{k}" not in metrics]
    if missing:
        raise ValueError(f"{who} metrics lack {missing}; available keys: {sorted(metrics)}")
    return [float(metrics[f"{name}@{k}"]) for k in ks]


_BASELINE_MARKERS = ("s", "^", "D", "v", "P", "X")


def metrics_at_k_figure(
    model: Mapping[str, float],
    baseline: Mapping[str, float],
    ks: Sequence[int],
    model_name: str = "two-tower",
    baseline_name: str = "most popular",
    *,
    more_baselines: Mapping[str, Mapping[str, float]] | None = None,
) -> Figure:
    """Two panels, Recall@K and NDCG@K against K: the model and its baselines, one line each.

    ``model``, ``baseline`` and every value of ``more_baselines`` (name -> metrics, drawn in
    its order after ``baseline``) are dictionaries as returned by
    :func:`recsys_kedro.evaluation.retrieval.full_catalogue_topk_metrics` and must hold
    ``recall@K`` and ``ndcg@K`` for every K in ``ks``. The model is the solid line, the
    baselines are dashed.
    """
    ks = sorted({int(k) for k in ks})
    if not ks:
        raise ValueError("ks must hold at least one cut-off K")
    baselines = {baseline_name: baseline, **(more_baselines or {})}
    if model_name in baselines or len(baselines) != 1 + len(more_baselines or {}):
        raise ValueError(
            f"every line needs its own name, got {[model_name, baseline_name]} and "
            f"{list(more_baselines or {})}"
        )
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (metric, label) in zip(axes, (("recall", "Recall"), ("ndcg", "NDCG")), strict=True):
        ax.plot(ks, _metric_curve(model, metric, ks, model_name), marker="o", label=model_name)
        for i, (name, metrics) in enumerate(baselines.items()):
            ax.plot(
                ks,
                _metric_curve(metrics, metric, ks, name),
                marker=_BASELINE_MARKERS[i % len(_BASELINE_MARKERS)],
                linestyle="--",
                label=name,
            )
        ax.set_xticks(ks)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{label}@K")
        ax.set_title(f"{label}@K")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"Full-catalogue retrieval: {model_name} vs {', '.join(baselines)}")
    return fig


def _split_key(key: str) -> tuple[str, str]:
    """``"val_loss" -> ("loss", "val")``; keys without a split prefix are their own metric."""
    prefix, sep, rest = key.partition("_")
    if sep and rest and prefix.lower() in _SPLIT_PREFIXES:
        return rest, prefix
    return key, key


def training_curves_figure(
    history: Mapping[str, Sequence[float]],
    *,
    best_epoch: int | None = None,
    references: Mapping[str, tuple[str, float]] | None = None,
    title: str = "Training curves",
) -> Figure:
    """One panel per base metric, one line per split, against the 1-based epoch.

    ``history`` maps names such as ``train_loss``, ``val_loss``, ``val_auc`` to per-epoch
    values. Names are split on their ``train_`` / ``val_`` / ``test_`` prefix, so
    ``train_loss`` and ``val_loss`` share a "loss" panel while ``val_auc`` gets its own;
    other names (e.g. ``lr``) get a panel each. Panels follow the order of first appearance;
    series may have different lengths (each is plotted over its own epochs).

    ``best_epoch`` draws a vertical line at the epoch that was kept; ``references`` maps a
    panel (base metric, e.g. ``"auc"``) to a labelled horizontal line (e.g. the AUC of the
    true probabilities: ``{"auc": ("oracle", 0.81)}``).
    """
    panels: dict[str, list[tuple[str, list[float]]]] = {}
    for key, values in history.items():
        metric, split = _split_key(str(key))
        panels.setdefault(metric, []).append((split, [float(v) for v in values]))
    if not panels:
        raise ValueError("history is empty: nothing to plot")

    fig = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, series) in zip(axes, panels.items(), strict=True):
        for split, values in series:
            epochs = list(range(1, len(values) + 1))
            ax.plot(epochs, values, marker="o", label=split)
        if references and metric in references:
            name, value = references[metric]
            ax.axhline(float(value), color="black", linestyle="--", label=name)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"kept (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    fig.suptitle(title)
    return fig
