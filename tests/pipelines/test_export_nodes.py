from __future__ import annotations

from recsys_kedro.pipelines.export.nodes import MDS_COLUMNS, to_mds_frame


def test_to_mds_frame_selects_casts_and_repartitions(spark):
    df = spark.createDataFrame(
        [(1, 2, 4.5, 99, 1), (3, 4, 1.0, 98, 0)],
        "user_idx int, item_idx int, rating double, timestamp long, label long",
    )
    out = to_mds_frame(df, num_partitions=3)
    assert out.columns == list(MDS_COLUMNS)
    assert dict(out.dtypes) == {
        "user_idx": "bigint",
        "item_idx": "bigint",
        "label": "int",
        "rating": "float",
    }
    assert out.rdd.getNumPartitions() == 3
    assert sorted(tuple(r) for r in out.collect()) == [(1, 2, 1, 4.5), (3, 4, 0, 1.0)]
