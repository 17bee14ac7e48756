"""recsys_kedro.data.click_logs: planted-model click logs are valid, reproducible and learnable."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from recsys_kedro.data.click_logs import (
    CALIBRATION_ROWS,
    ClickLogSpec,
    generate_click_logs,
    planted_intercept,
    planted_probabilities,
    split_click_logs,
)

# Small but complete: 3 dense, 5 sparse of which 2 multi-hot (one as dense as it gets: 3 ids
# out of 3), a 2000-id power-law feature.
SMALL = ClickLogSpec(
    rows=3000,
    num_dense=3,
    num_sparse=5,
    cardinalities=(3, 50, 2000, 200, 10),
    multi_hot=(3, 1, 1, 4, 1),
    seed=7,
)


def sorted_table(df) -> pa.Table:
    return df.toArrow().sort_by("row_id")


def test_schema_columns_and_row_ids(spark):
    df = generate_click_logs(spark, SMALL, num_partitions=3)
    expected = (
        [("row_id", "bigint")]
        + [(f"dense_{i}", "float") for i in range(3)]
        + [
            ("sparse_0", "array<bigint>"),
            ("sparse_1", "bigint"),
            ("sparse_2", "bigint"),
            ("sparse_3", "array<bigint>"),
            ("sparse_4", "bigint"),
        ]
        + [("label", "int"), ("p_true", "double")]
    )
    assert df.dtypes == expected
    assert SMALL.dense_columns == ("dense_0", "dense_1", "dense_2")
    assert SMALL.sparse_columns == tuple(f"sparse_{j}" for j in range(5))
    assert SMALL.jagged_columns == ("sparse_0", "sparse_3")

    table = sorted_table(df)
    np.testing.assert_array_equal(table["row_id"].to_numpy(), np.arange(SMALL.rows))
    assert set(np.unique(table["label"].to_numpy())) == {0, 1}
    p = table["p_true"].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    for name, card in zip(SMALL.sparse_columns, SMALL.cardinalities, strict=True):
        if name not in SMALL.jagged_columns:
            ids = table[name].to_numpy()
            assert ids.min() >= 0 and ids.max() < card

    # The Spark path is the numpy core, row for row.
    core = planted_probabilities(SMALL, np.array([0, 1234, 2999]))
    rows = table.take([0, 1234, 2999])
    np.testing.assert_array_equal(rows["p_true"].to_numpy(), core["p_true"])
    np.testing.assert_array_equal(rows["label"].to_numpy(), core["label"])
    np.testing.assert_array_equal(rows["sparse_2"].to_numpy(), core["sparse_2"])
    np.testing.assert_array_equal(
        np.concatenate(rows["sparse_3"].to_pylist()).astype(np.int64), core["sparse_3"]
    )
    dense = np.stack([rows[c].to_numpy() for c in SMALL.dense_columns], axis=1)
    np.testing.assert_array_equal(dense, core["dense"])


def test_same_seed_same_data_whatever_the_partitioning(spark):
    one = sorted_table(generate_click_logs(spark, SMALL, num_partitions=1))
    three = sorted_table(generate_click_logs(spark, SMALL, num_partitions=3))
    assert one.equals(three)

    # A smaller dataset is the first rows of a larger one (the model does not depend on rows).
    prefix = sorted_table(generate_click_logs(spark, replace(SMALL, rows=500), 2))
    assert prefix.equals(one.slice(0, 500))

    other = sorted_table(generate_click_logs(spark, replace(SMALL, seed=8), 3))
    assert other.num_rows == one.num_rows
    for column in ("dense_0", "sparse_2", "p_true"):
        same = (other[column].to_numpy() == one[column].to_numpy()).mean()
        assert same < 0.5, column  # sparse_2 has 2000 power-law ids: some rows coincide
    assert not other["sparse_0"].equals(one["sparse_0"])


def test_positive_rate_and_oracle_auc_at_the_defaults(spark):
    spec = ClickLogSpec(rows=20_000)
    table = generate_click_logs(spark, spec, num_partitions=2).select("label", "p_true").toArrow()
    label, p_true = table["label"].to_numpy(), table["p_true"].to_numpy()
    assert abs(label.mean() - spec.positive_rate) < 0.02
    assert abs(p_true.mean() - spec.positive_rate) < 0.01
    assert roc_auc_score(label, p_true) > 0.75  # about 0.80 at the defaults


def test_intercept_is_calibrated_on_a_fixed_sample_and_generalises():
    spec = ClickLogSpec(positive_rate=0.1, seed=3)
    b = planted_intercept(spec)
    assert planted_intercept(ClickLogSpec(positive_rate=0.1, seed=3, rows=10)) == b
    calib = planted_probabilities(spec, np.arange(CALIBRATION_ROWS), intercept=b)
    assert abs(calib["p_true"].mean() - 0.1) < 1e-6
    fresh = planted_probabilities(spec, np.arange(10**6, 10**6 + 40_000))
    assert abs(fresh["p_true"].mean() - 0.1) < 0.01
    assert abs(fresh["label"].mean() - 0.1) < 0.01


def test_both_parts_of_the_planted_logit_carry_signal():
    out = planted_probabilities(ClickLogSpec(rows=40_000), np.arange(40_000))
    # Scaled to about unit variance each (see the module docstring).
    assert 0.9 < out["dense_logit"].std() < 1.1
    assert 0.6 < out["interaction_logit"].std() < 1.2
    # The pairwise part alone predicts the labels: a model must learn the embeddings.
    assert roc_auc_score(out["label"], out["interaction_logit"]) > 0.62
    assert roc_auc_score(out["label"], out["dense_logit"]) > 0.62

    # The pair sum identity against the explicit O(F^2) sum, on a one-hot spec.
    spec = ClickLogSpec(num_dense=1, num_sparse=4, cardinalities=(5, 7, 9, 11), multi_hot=1)
    from recsys_kedro.data.click_logs import _planted_parameters

    _, tables = _planted_parameters(spec.seed, 1, spec.cardinalities, spec.latent_dim)
    out = planted_probabilities(spec, np.arange(50))
    vecs = [tables[j][out[f"sparse_{j}"]] for j in range(4)]
    explicit = sum(
        (vecs[f] * vecs[g]).sum(axis=1) for f in range(4) for g in range(f + 1, 4)
    ) / math.sqrt(6)
    np.testing.assert_allclose(out["interaction_logit"], explicit, rtol=1e-10, atol=1e-12)


def test_jagged_features_are_valid(spark):
    table = generate_click_logs(spark, SMALL, num_partitions=2).toArrow()
    for name in SMALL.jagged_columns:
        j = SMALL.sparse_columns.index(name)
        m, card = SMALL.multi_hot[j], SMALL.cardinalities[j]
        lists = table[name].to_pylist()
        lengths = np.array([len(ids) for ids in lists])
        assert lengths.min() >= 1 and lengths.max() <= m
        assert all(len(set(ids)) == len(ids) for ids in lists), name
        flat = np.concatenate([np.asarray(ids) for ids in lists])
        assert flat.min() >= 0 and flat.max() < card
    # Lengths are spread over 1..m (here 1..4 for 200 ids: redraws make nearly all distinct).
    lengths = np.bincount([len(ids) for ids in table["sparse_3"].to_pylist()], minlength=5)
    assert (lengths[1:] > 0.2 * SMALL.rows).all()


def test_multi_hot_as_wide_as_the_cardinality_stays_distinct():
    spec = ClickLogSpec(num_dense=0, num_sparse=2, cardinalities=(2, 3), multi_hot=(2, 3))
    out = planted_probabilities(spec, np.arange(5000))
    for name, card, m in (("sparse_0", 2, 2), ("sparse_1", 3, 3)):
        lengths = out[f"{name}_lengths"]
        assert lengths.min() >= 1 and lengths.max() <= m and lengths.sum() == out[name].size
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        rows = [out[name][offsets[i] : offsets[i + 1]] for i in range(len(lengths))]
        assert all(len(set(r.tolist())) == len(r) for r in rows)
        assert out[name].min() >= 0 and out[name].max() < card
        assert (lengths == m).mean() > 0.25  # full rows do occur


@pytest.mark.parametrize("exponent", [1.1, 1.0, 0.0])
def test_ids_follow_the_power_law(exponent):
    card, n = 1000, 200_000
    spec = ClickLogSpec(num_dense=1, num_sparse=1, cardinalities=card, zipf_exponent=exponent)
    counts = np.bincount(planted_probabilities(spec, np.arange(n))["sparse_0"], minlength=card)
    # P(k) of the floored continuous power law on [1, card + 1).
    x = np.arange(1, card + 2, dtype=float)
    cdf = np.log(x) if exponent == 1.0 else (x ** (1 - exponent) if exponent else x)
    expected = np.diff(cdf) / (cdf[-1] - cdf[0])
    for k in (0, 1, 5, 50):
        sd = math.sqrt(n * expected[k])
        assert abs(counts[k] - n * expected[k]) < 5 * sd + 1, k
    if exponent > 0:
        assert counts[0] > 50 * counts[900:].mean()  # id 0 is far more frequent than a tail id
    else:
        assert counts.min() > 0.7 * n / card


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"rows": 0}, "rows must be >= 1, got 0"),
        ({"num_dense": -1}, "num_dense must be >= 0"),
        ({"num_sparse": 0}, "num_sparse must be >= 1"),
        (
            {"num_dense": 0, "num_sparse": 1, "cardinalities": 5, "multi_hot": 1},
            "num_dense + num_sparse must be >= 2",
        ),
        ({"cardinalities": [10, 10, 10, 0] + [10] * 22}, "cardinalities[3] must be >= 1, got 0"),
        ({"cardinalities": [10] * 25}, "cardinalities must have one entry per sparse feature"),
        ({"multi_hot": [1] * 27}, "multi_hot must have one entry per sparse feature"),
        ({"multi_hot": 0}, "multi_hot[0] must be >= 1"),
        (
            {"cardinalities": 10, "multi_hot": [1, 1, 50] + [1] * 23},
            "multi_hot[2] = 50 asks for more distinct ids per row than cardinalities[2] = 10",
        ),
        ({"positive_rate": 0.0}, "positive_rate must be in (0, 1)"),
        ({"positive_rate": 1.0}, "positive_rate must be in (0, 1)"),
        ({"latent_dim": 0}, "latent_dim must be >= 1"),
        ({"zipf_exponent": -0.5}, "zipf_exponent must be >= 0"),
        ({"dense_signal": -1}, "dense_signal must be >= 0"),
        ({"interaction_signal": -1}, "interaction_signal must be >= 0"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"rows": 2.5}, "rows must be an integer"),
        ({"cardinalities": 10**7}, "sum(cardinalities) * latent_dim"),
        (
            {"rows": 10, "latent_dims": 4, "sed": 1},
            "unknown click-log parameter(s): latent_dims, sed",
        ),
    ],
)
def test_bad_parameters_name_the_parameter(params, fragment):
    with pytest.raises(ValueError) as excinfo:
        ClickLogSpec.from_params(params)
    assert fragment in str(excinfo.value)
    if "unknown" not in fragment:  # the constructor validates the same way
        with pytest.raises(ValueError, match=r"\w"):
            ClickLogSpec(**params)


def test_from_params_expands_ints_and_lists():
    spec = ClickLogSpec.from_params(
        {"rows": 100, "num_sparse": 3, "cardinalities": [4, 5, 6], "multi_hot": 2}
    )
    assert spec.cardinalities == (4, 5, 6) and spec.multi_hot == (2, 2, 2)
    assert spec.jagged_columns == ("sparse_0", "sparse_1", "sparse_2")
    default = ClickLogSpec.from_params({})
    assert default == ClickLogSpec()
    assert len(default.cardinalities) == len(default.multi_hot) == 26
    assert len(default.jagged_columns) == 4
    # A different num_sparse resizes the default mix instead of failing.
    assert len(ClickLogSpec.from_params({"num_sparse": 8}).cardinalities) == 8


def test_split_is_exact_deterministic_and_partition_independent(spark):
    rows = 20_000
    df = spark.range(rows, numPartitions=3).withColumnRenamed("id", "row_id")
    fractions = (0.7, 0.2, 0.1)
    parts = [
        np.sort(np.asarray(p.toArrow()["row_id"].to_numpy()))
        for p in split_click_logs(df, fractions, seed=1)
    ]
    for part, fraction in zip(parts, fractions, strict=True):
        assert abs(part.size / rows - fraction) < 0.015
    everything = np.concatenate(parts)
    assert everything.size == rows  # nothing lost, nothing twice
    np.testing.assert_array_equal(np.sort(everything), np.arange(rows))

    again = [
        np.sort(p.toArrow()["row_id"].to_numpy())
        for p in split_click_logs(df.repartition(5), fractions, seed=1)
    ]
    for a, b in zip(parts, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = np.sort(split_click_logs(df, fractions, seed=2)[0].toArrow()["row_id"].to_numpy())
    assert not np.array_equal(other, parts[0])


@pytest.mark.parametrize("fractions", [(0.5, 0.3, 0.3), (0.8, 0.2), (1.2, -0.1, -0.1)])
def test_split_rejects_bad_fractions(spark, fractions):
    df = spark.range(10).withColumnRenamed("id", "row_id")
    with pytest.raises(ValueError, match="fractions"):
        split_click_logs(df, fractions, seed=0)


def test_num_partitions_must_be_positive(spark):
    with pytest.raises(ValueError, match="num_partitions must be >= 1"):
        generate_click_logs(spark, SMALL, num_partitions=0)
