"""An Optuna study over nested parameter dictionaries: ``run_study(objective, space, ...)``.

The objective receives the trial's values as ``{"training.temperature": 0.07, ...}`` (dotted
paths into a parameters dictionary, see :func:`apply_overrides`) and returns a dictionary of
metrics, one of which is the study's objective. A trial that raises is recorded as failed
(its error kept) and the study goes on; the study stops after ``n_trials`` or when the time
budget is spent (a running trial finishes first).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

_KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class SearchSpace:
    """``{dotted name: {"type": float|int|categorical, "low", "high", "log", "choices"}}``."""

    dimensions: dict[str, dict[str, Any]]

    def __post_init__(self) -> None:
        if not self.dimensions:
            raise ValueError("the search space is empty: give at least one dimension")
        for name, dim in self.dimensions.items():
            kind = dim.get("type")
            if kind not in _KINDS:
                raise ValueError(f"{name}: type must be one of {_KINDS}, got {kind!r}")
            if kind == "categorical":
                if not dim.get("choices"):
                    raise ValueError(f"{name}: a categorical dimension needs 'choices'")
                continue
            if "low" not in dim or "high" not in dim:
                raise ValueError(f"{name}: a {kind} dimension needs 'low' and 'high'")
            if not dim["low"] < dim["high"]:
                raise ValueError(f"{name}: low must be < high, got {dim['low']}, {dim['high']}")
            if dim.get("log") and not dim["low"] > 0:
                raise ValueError(f"{name}: a log-scaled dimension needs low > 0")

    def suggest(self, trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, dim in self.dimensions.items():
            kind = dim["type"]
            if kind == "float":
                values[name] = trial.suggest_float(
                    name, float(dim["low"]), float(dim["high"]), log=bool(dim.get("log"))
                )
            elif kind == "int":
                values[name] = trial.suggest_int(
                    name, int(dim["low"]), int(dim["high"]), log=bool(dim.get("log"))
                )
            else:
                values[name] = trial.suggest_categorical(name, list(dim["choices"]))
        return values


@dataclass
class TrialRecord:
    """One trial: ``state`` is ``COMPLETE`` or ``FAIL``."""

    number: int
    state: str
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    value: float | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class StudyResult:
    objective: str
    direction: str
    trials: list[TrialRecord]
    best_params: dict[str, Any] | None
    best_value: float | None
    best_trial: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "direction": self.direction,
            "best_trial": self.best_trial,
            "best_value": self.best_value,
            "best_params": self.best_params,
            "trials": [vars(t) for t in self.trials],
        }


def nest_dotted(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` -> ``{"a": {"b": 1, "c": 2}}`` (a parameters file's shape)."""
    out: dict[str, Any] = {}
    for path, value in values.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def apply_overrides(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``{"a.b": v}`` written at ``base["a"]["b"]``.

    Raises:
        KeyError: if a path does not exist in ``base`` (a typo would otherwise tune nothing).
    """
    out = copy.deepcopy(dict(base))
    for path, value in values.items():
        node = out
        parts = path.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise KeyError(f"{path!r}: no section {part!r} to set it in")
            node = node[part]
        if parts[-1] not in node:
            raise KeyError(f"{path!r}: no parameter {parts[-1]!r} there (known: {sorted(node)})")
        node[parts[-1]] = value
    return out


def run_study(
    objective: Callable[[dict[str, Any]], Mapping[str, float]],
    space: SearchSpace,
    *,
    metric: str,
    direction: str = "maximize",
    n_trials: int = 20,
    timeout_s: float | None = None,
    seed: int = 0,
) -> StudyResult:
    """Run a seeded TPE study; return every trial and the best one.

    Raises:
        RuntimeError: if every trial failed (the first error is quoted).
    """
    import optuna

    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if int(n_trials) < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    records: list[TrialRecord] = []

    def wrapped(trial) -> float:
        values = space.suggest(trial)
        start = time.perf_counter()
        record = TrialRecord(number=trial.number, state="FAIL", params=values)
        records.append(record)
        try:
            metrics = {k: float(v) for k, v in objective(values).items()}
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            record.seconds = time.perf_counter() - start
            logger.warning("trial %d failed: %s", trial.number, record.error)
            raise
        record.seconds = time.perf_counter() - start
        record.metrics = metrics
        if metric not in metrics:
            record.error = f"the objective returned no {metric!r} (got {sorted(metrics)})"
            raise KeyError(record.error)
        value = metrics[metric]
        if not math.isfinite(value):
            record.error = f"{metric} is {value}"
            raise ValueError(record.error)
        record.state, record.value = "COMPLETE", value
        logger.info("trial %d: %s=%.4f %s (%.0f s)", trial.number, metric, value, values,
                    record.seconds)  # fmt: skip
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    study = optuna.create_study(
        direction=direction, sampler=optuna.samplers.TPESampler(seed=int(seed))
    )
    study.optimize(wrapped, n_trials=int(n_trials), timeout=timeout_s, catch=(Exception,))
    done = [r for r in records if r.state == "COMPLETE"]
    if not done:
        first = records[0].error if records else "no trial ran"
        raise RuntimeError(f"every trial failed; the first: {first}")
    best = max(done, key=lambda r: r.value if direction == "maximize" else -r.value)
    return StudyResult(
        objective=metric,
        direction=direction,
        trials=records,
        best_params=dict(best.params),
        best_value=best.value,
        best_trial=best.number,
    )


def history_figure(result: StudyResult) -> Figure:
    """Each trial's objective (failed trials marked at the bottom) and the best so far."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    done = [t for t in result.trials if t.state == "COMPLETE"]
    failed = [t for t in result.trials if t.state != "COMPLETE"]
    ax.plot([t.number for t in done], [t.value for t in done], "o", label="trial")
    best, line = None, []
    for t in done:
        if best is None or (t.value > best if result.direction == "maximize" else t.value < best):
            best = t.value
        line.append(best)
    ax.step([t.number for t in done], line, where="post", label="best so far")
    if failed:
        bottom = min((t.value for t in done), default=0.0)
        ax.plot([t.number for t in failed], [bottom] * len(failed), "x", color="red",
                label="failed")  # fmt: skip
    ax.set_xlabel("trial")
    ax.set_ylabel(result.objective)
    ax.set_title(f"Optuna study: {result.objective} ({result.direction})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig
