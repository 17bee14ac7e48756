"""Hyperparameter search with Optuna, independent of Kedro and of any model (see study.py)."""

from recsys_kedro.tuning.study import (
    SearchSpace,
    StudyResult,
    TrialRecord,
    apply_overrides,
    history_figure,
    nest_dotted,
    run_study,
)

__all__ = [
    "SearchSpace",
    "StudyResult",
    "TrialRecord",
    "apply_overrides",
    "history_figure",
    "nest_dotted",
    "run_study",
]
