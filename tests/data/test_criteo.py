"""Click logs in the Criteo layout: reading, time order, checks, split and encoding."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import functions as F

from recsys_kedro.data import criteo
from recsys_kedro.data.criteo import ClickLogError, CriteoLayout

LAYOUT = CriteoLayout(num_dense=2, num_sparse=2, min_frequency=2, fractions=(0.5, 0.25, 0.25))


def _line(label, dense, tokens) -> str:
    return "\t".join([str(label), *map(str, dense), *tokens])


def _lines(spark, tmp_path, files: dict[str, list[str]]):
    for name, lines in files.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    return spark.read.text(str(tmp_path / "*.tsv")).withColumn("_file", F.input_file_name())


def _read(spark, tmp_path, files, layout=LAYOUT):
    fields = criteo.split_lines(_lines(spark, tmp_path, files), layout, "the test logs")
    return criteo.parse_values(criteo.ordered_row_ids(fields), layout, "the test logs")


def test_rows_keep_the_order_of_files_by_name_and_of_lines_even_across_splits(spark, tmp_path):
    # Files named by day (day_2 before day_10), each split into several Spark partitions.
    files = {
        f"day_{d}.tsv": [_line(i % 2, [i, d], [f"d{d}", f"{d}_{i:04}"]) for i in range(300)]
        for d in (10, 1, 2)
    }
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "1500")
    try:
        rows = _read(spark, tmp_path, files).select("row_id", "sparse_1").collect()
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    got = [r["sparse_1"] for r in sorted(rows, key=lambda r: r["row_id"])]
    assert sorted(r["row_id"] for r in rows) == list(range(900))  # 0..n-1, each once
    assert got == [f"{d}_{i:04}" for d in (1, 2, 10) for i in range(300)]


def test_a_line_with_another_number_of_fields_names_its_file(spark, tmp_path):
    files = {"day_0.tsv": [_line(1, [1, 2], ["a", "b"]), "1\t2\t3\ta"]}
    with pytest.raises(ClickLogError, match=r"1 line\(s\) do not have 5 .*day_0\.tsv.*num_dense"):
        _read(spark, tmp_path, files)


@pytest.mark.parametrize(
    ("bad_line", "column"),
    [(_line(2, [1, 2], ["a", "b"]), "label"), (_line(0, ["x7", 2], ["a", "b"]), "dense_0")],
)
def test_a_label_or_count_that_is_not_one_names_the_column(spark, tmp_path, bad_line, column):
    files = {"day_0.tsv": [_line(1, [1, 2], ["a", "b"]), bad_line]}
    with pytest.raises(ClickLogError, match=rf"1 row\(s\) of column '{column}'"):
        _read(spark, tmp_path, files)


def _encoded(spark, tmp_path, layout):
    lines = [  # 8 rows: 4 train, 2 validation, 2 test (in this order)
        _line(1, [3, ""], ["a", "x"]),
        _line(0, [-5, 1], ["a", ""]),
        _line(1, [0, 1], ["b", "x"]),
        _line(0, [0, 1], ["a", "y"]),
        _line(1, [1, 1], ["b", "x"]),
        _line(0, [1, 1], ["c", "x"]),
        _line(1, [1, 1], ["new", "x"]),
        _line(0, [1, 1], ["a", "y"]),
    ]
    logs = _read(spark, tmp_path, {"day_0.tsv": lines}, layout)
    train, validation, test = criteo.time_split(logs, layout)
    vocab = criteo.build_vocabularies(train, layout)
    parts = [
        criteo.encode(p, vocab, layout).orderBy("row_id").collect()
        for p in (train, validation, test)
    ]
    return parts, vocab


def test_vocabularies_come_from_the_train_rows_and_the_rest_is_unknown(spark, tmp_path):
    (train, validation, test), vocab = _encoded(spark, tmp_path, LAYOUT)
    assert [len(p) for p in (train, validation, test)] == [4, 2, 2]
    assert [r["row_id"] for r in test] == [6, 7]  # the last rows are the test
    # sparse_0 in train: a x3, b x1 -> only "a" reaches min_frequency 2; sparse_1: x x2, y x1
    assert {(r["feature"], r["token"], r["index"]) for r in vocab.collect()} == {
        ("sparse_0", "a", 1), ("sparse_1", "x", 1),
    }  # fmt: skip
    assert [r["sparse_0"] for r in train] == [1, 1, 0, 1]  # b is rare
    assert [r["sparse_1"] for r in train] == [1, 0, 1, 0]  # missing -> 0, y is rare
    assert [r["sparse_0"] for r in validation + test] == [0, 0, 0, 1]  # b, c, unseen, a
    # counts: missing -> 0, negative -> 0, then log(1 + x)
    assert [r["dense_0"] for r in train] == pytest.approx([math.log(4), 0.0, 0.0, 0.0])
    assert train[0]["dense_1"] == 0.0 and train[1]["dense_1"] == pytest.approx(math.log(2))
    assert criteo.cardinalities(vocab, LAYOUT) == (2, 2)


def test_hashed_tokens_fall_in_the_declared_buckets(spark, tmp_path):
    layout = CriteoLayout(num_dense=2, num_sparse=2, hash_buckets=3, fractions=(0.5, 0.25, 0.25))
    (train, validation, test), vocab = _encoded(spark, tmp_path, layout)
    assert vocab.count() == 0
    rows = train + validation + test
    assert all(1 <= r["sparse_0"] <= 3 for r in rows)  # every token hashed, none missing
    assert rows[1]["sparse_1"] == 0 and all(
        1 <= r["sparse_1"] <= 3 for r in rows if r["row_id"] != 1
    )
    assert len({r["sparse_0"] for r in rows if r["row_id"] in (0, 1, 3, 7)}) == 1  # "a" alike
    assert criteo.cardinalities(vocab, layout) == (4, 4)


def test_a_frame_needs_the_columns_and_a_table_needs_an_order(spark):
    layout = CriteoLayout(num_dense=1, num_sparse=1, fractions=(0.5, 0.5, 0.0))
    frame = spark.createDataFrame(
        [(1, 5, "a", 20), (0, 6, "b", 10)], "label int, dense_0 int, sparse_0 string, day int"
    )
    with pytest.raises(ClickLogError, match=r"no column\(s\) \['sparse_0'\]"):
        criteo.select_columns(frame.drop("sparse_0"), layout, "t")
    table = frame.withColumn("_file", F.lit(None).cast("string"))
    with pytest.raises(ClickLogError, match="declare the column that orders them"):
        criteo.ordered_row_ids(criteo.select_columns(table, layout, "t"))
    ordered = CriteoLayout(num_dense=1, num_sparse=1, fractions=(0.5, 0.5, 0.0), order_by="day")
    rows = criteo.ordered_row_ids(criteo.select_columns(table, ordered, "t"), "day").collect()
    assert {r["sparse_0"]: r["row_id"] for r in rows} == {"b": 0, "a": 1}


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"num_sparse": 0}, "num_sparse"),
        ({"min_frequency": 0}, "min_frequency"),
        ({"fractions": [0.5, 0.6, -0.1]}, "fractions"),
        ({"hash_bucket": 10}, "unknown setting"),
    ],
)
def test_bad_settings_are_named(settings, named):
    with pytest.raises(ClickLogError, match=named):
        CriteoLayout.from_params(settings)


def test_a_feature_empty_in_every_row_is_named(spark, tmp_path):
    files = {"day_0.tsv": [_line(1, [1, ""], ["a", "b"]), _line(0, [2, ""], ["c", "d"])]}
    with pytest.raises(ClickLogError, match=r"\['dense_1'\] are empty in every row"):
        _read(spark, tmp_path, files)


def test_split_days_keep_whole_files_for_validation_and_test(spark, tmp_path):
    layout = CriteoLayout(num_dense=2, num_sparse=2, split_days=(1, 1))
    files = {
        f"day_{d}.tsv": [_line(i % 2, [i, d], [f"d{d}", "t"]) for i in range(5 + d)]
        for d in (0, 1, 2, 10)
    }
    logs = _read(spark, tmp_path, files, layout)
    train, validation, test = criteo.time_split(logs, layout)
    assert {r["sparse_0"] for r in test.collect()} == {"d10"}  # the last file (day 10)
    assert {r["sparse_0"] for r in validation.collect()} == {"d2"}
    assert train.count() == 5 + 6
    too_many = CriteoLayout(num_dense=2, num_sparse=2, split_days=(2, 2))
    with pytest.raises(ClickLogError, match=r"needs more than 4 files \(days\); .* have 4"):
        criteo.time_split(logs, too_many)
