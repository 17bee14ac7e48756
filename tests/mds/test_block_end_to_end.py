"""Spark -> block-layout MDS -> BlockBatchLoader on 2 ranks: every row exactly once.

The two halves are tested on their own in test_block_writer.py and test_block_loader.py;
this checks them together, through the same functions the pipeline uses.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from recsys_kedro.mds import write_mds_blocks

from ..training.spawn import run_on_ranks

COLUMNS = {"user_idx": "int64", "item_idx": "int64", "label": "int32"}


def _read_two_epochs(args):
    """On one rank: the (user, item, label) rows of epochs 1 and 2, in order."""
    from recsys_kedro.mds.block_loader import BlockBatchLoader

    folder, cache = args
    loader = BlockBatchLoader(
        folder,
        batch_size=13,
        shuffle=True,
        seed=5,
        drop_last=False,
        local_cache_dir=cache,  # one cache per node, shared by its ranks (Mosaic's contract)
    )
    epochs = []
    for _ in range(2):
        rows = [
            np.stack([b["user_idx"].numpy(), b["item_idx"].numpy(), b["label"].numpy()], axis=1)
            for b in loader
        ]
        epochs.append([tuple(r) for r in np.concatenate(rows).tolist()])
    return epochs


def test_spark_rows_read_exactly_once_over_two_ranks(spark, tmp_path):
    rng = np.random.default_rng(0)
    rows = [(int(u), int(i), int(u + i) % 2) for u, i in rng.integers(0, 50, (301, 2))]
    df = spark.createDataFrame(rows, "user_idx long, item_idx long, label int").repartition(3)
    folder = write_mds_blocks(df, path=str(tmp_path / "mds"), columns=COLUMNS, block_rows=16)
    assert folder.num_rows == 301 and folder.layout == "block"

    (r0, r1) = run_on_ranks(
        _read_two_epochs, (folder, str(tmp_path / "cache")), world_size=2, out_dir=tmp_path / "o"
    )
    for epoch in (0, 1):
        assert Counter(r0[epoch] + r1[epoch]) == Counter(rows), f"epoch {epoch}"
        assert r0[epoch] and r1[epoch]  # both ranks got a share
    assert r0[0] != r0[1]  # reshuffled in the second epoch
