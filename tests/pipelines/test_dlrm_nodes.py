"""dlrm nodes: generator parameters, split statistics, the spec and the report."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from recsys_kedro.hooks import SparkHooks
from recsys_kedro.models.ranking import (
    build_ranking_model,
    make_model_file,
    model_from_file,
    score_frame,
)
from recsys_kedro.pipelines.dlrm import create_pipeline
from recsys_kedro.pipelines.dlrm.nodes import (
    click_log_spec,
    dlrm_spec,
    evaluate_ranking,
    read_click_logs,
    split_click_logs,
    summarise_click_logs,
)
from recsys_kedro.training.specs import spec_from_dict

GENERATOR = {
    "rows": 3000,
    "num_dense": 3,
    "num_sparse": 4,
    "cardinalities": [5, 20, 50, 8],
    "multi_hot": [1, 3, 1, 1],
    "positive_rate": 0.3,
    "seed": 1,
}
DATA = {"generator": GENERATOR, "num_partitions": 2, "split": {"fractions": [0.6, 0.2, 0.2]}}
MODEL = {
    "architecture": "dlrm",
    "embedding_dim": 4,
    "dense_arch_layer_sizes": [8, 4],
    "over_arch_layer_sizes": [8, 1],
}


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"rows": 0}, "rows"),
        ({"cardinalities": [5, 0, 50, 8]}, "cardinalities"),
        ({"positive_rate": 1.0}, "positive_rate"),
        ({"multi_hot": [1, 30, 1, 1]}, "multi_hot"),
    ],
)
def test_bad_generator_parameters_name_the_parameter_and_the_file(override, named):
    data = {**DATA, "generator": {**GENERATOR, **override}}
    with pytest.raises(ValueError, match=rf"dlrm\.data\.generator: .*{named}.*parameters_dlrm"):
        click_log_spec(data)


def test_bad_parameters_fail_in_the_hook_before_spark_starts(monkeypatch):
    started = []
    monkeypatch.setattr("recsys_kedro.hooks.build_spark_session", lambda *a, **k: started.append(1))
    hooks = SparkHooks()
    bad = {**DATA, "generator": {**GENERATOR, "rows": 0}}
    catalog = DataCatalog(datasets={"params:dlrm.data": MemoryDataset(bad)})
    with pytest.raises(ValueError, match="rows must be >= 1"):
        hooks.before_pipeline_run({}, create_pipeline(), catalog)
    assert not started
    catalog = DataCatalog(datasets={"params:dlrm.data": MemoryDataset(DATA)})
    hooks.before_pipeline_run({}, create_pipeline(), catalog)
    assert started == [1]


@pytest.fixture(scope="module")
def splits(spark):
    logs = read_click_logs(None, DATA)
    train, validation, test, vocabularies = split_click_logs(logs, DATA)
    assert vocabularies.count() == 0  # the generator's ids are indexes already
    return logs, train, validation, test


def _stats(train, validation, test, data=DATA):
    empty = train.sparkSession.createDataFrame([], "feature string, token string, index int")
    return summarise_click_logs(train, validation, test, empty, data)


def test_generated_logs_split_without_loss_and_summarised(splits):
    logs, train, validation, test = splits
    stats = _stats(train, validation, test)
    assert sum(stats[s]["rows"] for s in ("train", "validation", "test")) == logs.count() == 3000
    assert stats["train"]["rows"] > stats["test"]["rows"]
    assert stats["jagged_features"] == ["sparse_1"] and stats["cardinalities"] == [5, 20, 50, 8]
    for split in ("train", "validation", "test"):
        assert 0.2 < stats[split]["positive_rate"] < 0.4


def test_an_empty_split_is_refused(splits):
    _, train, validation, test = splits
    with pytest.raises(ValueError, match="the test split has 0 rows"):
        _stats(train, validation, test.limit(0))


def test_dlrm_spec_takes_features_from_the_generator(splits):
    spec = spec_from_dict(dlrm_spec(_stats(*splits[1:]), MODEL))
    assert spec.model.sparse_features == ("sparse_0", "sparse_1", "sparse_2", "sparse_3")
    assert spec.model.jagged_features == ("sparse_1",)
    assert spec.model.dense_features == ("dense_0", "dense_1", "dense_2")
    with pytest.raises(ValueError, match=r"dlrm\.model: .*parameters_dlrm"):
        dlrm_spec(_stats(*splits[1:]), {**MODEL, "dense_arch_layer_sizes": [8, 5]})


def test_evaluate_ranking_reports_model_oracle_and_floor(splits):
    _, train, validation, test = splits
    config = spec_from_dict(dlrm_spec(_stats(train, validation, test), MODEL)).model
    model = build_ranking_model(config, device="cpu")
    checkpoint = make_model_file(config, model.state_dict())
    train_pd, val_pd, test_pd = (s.toPandas() for s in (train, validation, test))
    summary = {
        "train_samples_per_s": 10.0,
        "best_epoch": 1,
        "epochs": 2,
        "world_size": 2,
        "history": {"val_auc": [0.5, 0.49], "train_loss": [0.7, 0.6], "val_loss": [0.7, 0.7]},
    }
    metrics, mlflow_metrics, tags, figure = evaluate_ranking(
        checkpoint, train_pd, val_pd, test_pd, summary, {"seed": 0, "floor_c_grid": [0.01, 1.0]}
    )
    for key in (
        "test_auc", "test_logloss", "oracle_auc", "oracle_logloss", "auc_ratio", "logreg_auc",
        "train_samples_per_s", "n_train", "architecture",
    ):  # fmt: skip
        assert key in metrics, key
    assert metrics["auc_ratio"] == pytest.approx(metrics["test_auc"] / metrics["oracle_auc"])
    assert metrics["oracle_auc"] > 0.65  # the planted probabilities know the answer
    assert metrics["oracle_auc"] > metrics["test_auc"]  # an untrained model does not
    assert metrics["logreg_dense_only_auc"] > 0.55  # the dense features carry part of the signal
    # ... and the floor, which sees the categorical features too (C chosen on validation),
    # more of it
    assert metrics["logreg_auc"] > metrics["logreg_dense_only_auc"]
    assert metrics["logreg_C"] in (0.01, 1.0) and "logreg_C" in tags
    lift = (metrics["test_auc"] - 0.5) / (metrics["oracle_auc"] - 0.5)
    assert metrics["auc_lift_ratio"] == pytest.approx(lift)
    # validation beside test: the kept epoch's AUC against the oracle on the validation rows
    assert metrics["val_auc"] == 0.5  # history val_auc[best_epoch - 1]
    assert metrics["val_oracle_auc"] == pytest.approx(
        roc_auc_score(val_pd["label"], val_pd["p_true"])
    )
    assert metrics["val_auc_ratio"] == pytest.approx(0.5 / metrics["val_oracle_auc"])
    # paired (DeLong) intervals of the test AUC differences, around the point differences
    for name, other in (("oracle", "oracle_auc"), ("logreg", "logreg_auc")):
        low, high = metrics[f"minus_{name}_auc_ci95"]
        assert low < metrics["test_auc"] - metrics[other] < high
        assert f"test_minus_{name}_auc_ci95_low" in mlflow_metrics
    assert metrics["minus_oracle_auc_ci95"][1] < 0  # an untrained model is behind the oracle
    assert "val_auc_ratio" in mlflow_metrics and "test_val_auc_ratio" not in mlflow_metrics
    assert metrics["n_test"] == len(test_pd) and metrics["architecture"] == "dlrm"
    assert "test_auc_ratio" in mlflow_metrics and "test_architecture" not in mlflow_metrics
    # counts and settings are run tags, not one-point metric charts
    assert tags["architecture"] == "dlrm" and tags["n_train"] == len(train_pd)
    assert not {"test_n_train", "test_best_epoch", "test_world_size"} & set(mlflow_metrics)
    probabilities = score_frame(model_from_file(checkpoint), test_pd.iloc[:10])
    assert probabilities.shape == (10,) and np.all((probabilities > 0) & (probabilities < 1))
    # The model and the oracle are scored on the same rows: the test split's, every one.
    scores = score_frame(model_from_file(checkpoint), test_pd)
    assert metrics["test_auc"] == pytest.approx(roc_auc_score(test_pd["label"], scores))
    assert metrics["oracle_auc"] == pytest.approx(
        roc_auc_score(test_pd["label"], test_pd["p_true"])
    )
    assert metrics["oracle_auc"] != pytest.approx(
        roc_auc_score(val_pd["label"], val_pd["p_true"]), abs=1e-9
    )  # (so the check above can tell the splits apart)
    assert len(figure.axes) == 2  # AUC against the oracle line, losses


CRITEO = {
    "source": "criteo",
    "criteo": {"num_dense": 2, "num_sparse": 3, "min_frequency": 2, "fractions": [0.6, 0.2, 0.2]},
}


def _criteo_lines(spark, tmp_path, n: int = 400):
    """Criteo-layout lines: the click depends on a count and on the first token."""
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(n):
        count, token = int(rng.integers(0, 50)), int(rng.integers(0, 8))
        p = 1 / (1 + np.exp(-(0.06 * count - 1.5 + (1.5 if token < 3 else -1.0))))
        label = int(rng.random() < p)
        dense_1 = "" if rng.random() < 0.1 else str(int(rng.integers(0, 5)))
        lines.append(f"{label}\t{count}\t{dense_1}\tt{token:x}\t{'' if token == 7 else 'u'}\tz")
    (tmp_path / "day_0.tsv").write_text("\n".join(lines) + "\n")
    from pyspark.sql import functions as F

    return spark.read.text(str(tmp_path)).withColumn("_file", F.input_file_name())


def test_criteo_logs_are_read_split_in_time_encoded_and_summarised(spark, tmp_path):
    logs = read_click_logs(_criteo_lines(spark, tmp_path), CRITEO)
    train, validation, test, vocabularies = split_click_logs(logs, CRITEO)
    stats = summarise_click_logs(train, validation, test, vocabularies, CRITEO)
    assert [stats[s]["rows"] for s in ("train", "validation", "test")] == [240, 80, 80]
    assert "mean_p_true" not in stats["train"] and stats["source"] == "criteo"
    assert stats["dense_features"] == ["dense_0", "dense_1"] and stats["jagged_features"] == []
    assert stats["cardinalities"] == [9, 2, 2]  # 8 tokens + unknown; "u" + unknown; "z"
    assert test.agg(F.min("row_id")).first()[0] == 320  # the last rows are the test
    spec = spec_from_dict(dlrm_spec(stats, MODEL))
    assert spec.model.cardinalities == (9, 2, 2)


def test_criteo_source_without_logs_and_bad_settings_say_what_to_fix(spark):
    with pytest.raises(ValueError, match="dlrm.raw_click_logs finds no files.*conf/local"):
        read_click_logs(None, CRITEO)
    with pytest.raises(ValueError, match=r"dlrm\.data\.criteo: .*min_frequency.*parameters_dlrm"):
        read_click_logs(None, {**CRITEO, "criteo": {"min_frequency": 0}})
    with pytest.raises(ValueError, match=r"dlrm\.data\.source: 'kaggle' is not one of"):
        read_click_logs(None, {"source": "kaggle"})


def test_evaluate_ranking_without_a_planted_probability_reports_the_floors(splits):
    _, train, validation, test = splits
    train_pd, val_pd, test_pd = (s.drop("p_true").toPandas() for s in (train, validation, test))
    config = spec_from_dict(dlrm_spec(_stats(train, validation, test), MODEL)).model
    checkpoint = make_model_file(config, build_ranking_model(config, device="cpu").state_dict())
    summary = {
        "train_samples_per_s": 10.0,
        "best_epoch": 1,
        "epochs": 1,
        "world_size": 2,
        "history": {"val_auc": [0.5], "train_loss": [0.7], "val_loss": [0.7]},
    }
    metrics, _, _, figure = evaluate_ranking(checkpoint, train_pd, val_pd, test_pd, summary, {})
    assert not any("oracle" in key for key in metrics)
    low, high = metrics["minus_logreg_dense_only_auc_ci95"]
    assert low < metrics["test_auc"] - metrics["logreg_dense_only_auc"] < high
    assert len(figure.axes) == 2
