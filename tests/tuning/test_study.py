"""The Optuna study wrapper: seeded search, failed trials recorded, overrides checked."""

from __future__ import annotations

import pytest

from recsys_kedro.tuning import (
    SearchSpace,
    apply_overrides,
    history_figure,
    nest_dotted,
    run_study,
)

SPACE = SearchSpace(
    {
        "training.lr": {"type": "float", "low": 0.001, "high": 1.0, "log": True},
        "model.dim": {"type": "categorical", "choices": [8, 16, 32]},
    }
)


def _objective(values):
    # best at lr = 0.1, dim = 16
    import math

    return {
        "score": -((math.log10(values["training.lr"]) + 1) ** 2) - abs(values["model.dim"] - 16)
    }


def test_the_study_finds_a_good_point_and_is_seeded():
    first = run_study(_objective, SPACE, metric="score", n_trials=25, seed=3)
    again = run_study(_objective, SPACE, metric="score", n_trials=25, seed=3)
    assert first.best_params == again.best_params  # same seed, same search
    assert first.best_params["model.dim"] == 16
    assert 0.03 < first.best_params["training.lr"] < 0.3
    done = [t.value for t in first.trials if t.state == "COMPLETE"]
    assert first.best_value == max(done) and len(first.trials) == 25


def test_failed_trials_are_recorded_and_the_study_goes_on():
    calls = []

    def flaky(values):
        calls.append(values)
        if len(calls) % 2 == 0:
            raise RuntimeError("rank 1 died")
        return {"score": values["training.lr"]}

    result = run_study(flaky, SPACE, metric="score", n_trials=4, seed=0)
    states = [t.state for t in result.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "FAIL"]
    assert "rank 1 died" in result.trials[1].error
    assert result.best_trial in (0, 2)
    figure = history_figure(result)
    assert figure.axes[0].get_ylabel() == "score"


def test_a_study_where_every_trial_fails_says_why():
    def broken(values):
        raise ValueError("lr too high")

    with pytest.raises(RuntimeError, match="every trial failed.*lr too high"):
        run_study(broken, SPACE, metric="score", n_trials=2)


def test_a_missing_objective_metric_fails_the_trial():
    with pytest.raises(RuntimeError, match="no 'score'"):
        run_study(lambda v: {"other": 1.0}, SPACE, metric="score", n_trials=1)


def test_apply_overrides_writes_nested_values_and_refuses_typos():
    base = {"training": {"lr": 0.1, "epochs": 3}, "model": {"dim": 8}}
    out = apply_overrides(base, {"training.lr": 0.5, "model.dim": 32})
    assert out == {"training": {"lr": 0.5, "epochs": 3}, "model": {"dim": 32}}
    assert base["training"]["lr"] == 0.1  # a copy
    with pytest.raises(KeyError, match="no parameter 'lrr'"):
        apply_overrides(base, {"training.lrr": 1})
    with pytest.raises(KeyError, match="no section 'optim'"):
        apply_overrides(base, {"optim.lr": 1})


@pytest.mark.parametrize(
    ("dimension", "match"),
    [
        ({"type": "normal"}, "type must be"),
        ({"type": "float", "low": 1.0}, "needs 'low' and 'high'"),
        ({"type": "float", "low": 2.0, "high": 1.0}, "low must be < high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "low > 0"),
        ({"type": "categorical", "choices": []}, "needs 'choices'"),
    ],
)
def test_bad_search_spaces_are_refused(dimension, match):
    with pytest.raises(ValueError, match=match):
        SearchSpace({"x": dimension})


def test_dotted_names_nest_into_a_parameters_shape():
    nested = nest_dotted({"training.lr": 0.1, "training.epochs": 3, "model.dim": 8, "seed": 1})
    assert nested == {"training": {"lr": 0.1, "epochs": 3}, "model": {"dim": 8}, "seed": 1}
