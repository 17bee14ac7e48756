"""BlockBatchLoader / BlockStreamingDataset over block-layout MDS folders written with MDSWriter."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from streaming import MDSWriter

from recsys_kedro.mds import MDSFolder
from recsys_kedro.mds.block_format import block_mds_columns
from recsys_kedro.mds.block_loader import BlockBatchLoader, drop_repeated_samples

from ..training.spawn import run_on_ranks

SCALARS = {"row_id": "int64", "user": "int64", "item": "int32", "label": "float32"}
JAGGED = {"history": "int64"}
# 9 blocks (odd: Mosaic pads a 2-rank partition), full ones and partial ones.
BLOCK_SIZES = (40, 40, 17, 40, 5, 40, 40, 23, 1)


def write_blocks(
    path: Path,
    block_sizes=BLOCK_SIZES,
    *,
    jagged: bool = True,
    seed: int = 0,
    size_limit: int = 4096,
):
    """A block-layout folder written directly with MDSWriter; returns (folder, written rows)."""
    rng = np.random.default_rng(seed)
    n = sum(block_sizes)
    rows = {
        "row_id": np.arange(n, dtype=np.int64),
        "user": rng.integers(0, 20, n).astype(np.int64),
        "item": rng.integers(0, 30, n).astype(np.int32),
        "label": (rng.random(n) < 0.4).astype(np.float32),
    }
    lengths = rng.integers(0, 4, n).astype(np.int32)
    lengths[np.cumsum(block_sizes) - 1] = 1  # MDS cannot encode an empty ndarray: no empty block
    values = rng.integers(0, 1000, int(lengths.sum())).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    columns = block_mds_columns(SCALARS, JAGGED if jagged else None)
    # A small shard size limit: several shards, blocks of one epoch spread over them. (It must
    # exceed the largest block: MDSWriter starts with an empty shard otherwise.)
    with MDSWriter(
        out=str(path), columns=columns, compression=None, size_limit=size_limit
    ) as writer:
        start = 0
        for block_id, size in enumerate(block_sizes):
            stop = start + size
            sample = {name: rows[name][start:stop] for name in SCALARS}
            if jagged:
                sample["history__values"] = values[offsets[start] : offsets[stop]]
                sample["history__lengths"] = lengths[start:stop]
            sample["_block_id"] = np.int64(block_id)
            sample["_n_rows"] = np.int32(size)
            writer.write(sample)
            start = stop
    if jagged:
        rows["history"] = [values[offsets[i] : offsets[i + 1]] for i in range(n)]
    folder = MDSFolder(
        remote=None,
        local=str(path),
        num_samples=len(block_sizes),
        columns=columns,
        layout="block",
        num_rows=n,
        jagged=tuple(JAGGED) if jagged else (),
    )
    return folder, rows


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_blocks(tmp_path_factory.mktemp("blocks") / "mds")


_caches = iter(range(1_000_000))


def make_loader(folder, tmp_path, **kwargs) -> BlockBatchLoader:
    """A loader with its own local cache directory (Mosaic needs one per live dataset)."""
    params = {"batch_size": 32, "shuffle": True, "seed": 7, "drop_last": False}
    params.update(kwargs)
    cache = tmp_path / f"cache{next(_caches)}"
    return BlockBatchLoader(folder, local_cache_dir=str(cache), **params)


def cat(batches, name="row_id") -> np.ndarray:
    if not batches:
        return np.empty(0, np.int64)
    return torch.cat([b[name] for b in batches]).numpy()


def triples(batches) -> Counter:
    users, items, labels = (cat(batches, c) for c in ("user", "item", "label"))
    return Counter(zip(users.tolist(), items.tolist(), labels.tolist(), strict=True))


def written_triples(rows, row_ids=None) -> Counter:
    ids = rows["row_id"] if row_ids is None else row_ids
    cols = (rows[c][ids].tolist() for c in ("user", "item", "label"))
    return Counter(zip(*cols, strict=True))


# ---------------------------------------------------------------- one rank


@pytest.mark.parametrize("batch_size", [1, 7, 32, 100, 1000])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_row_once_per_epoch_in_batches_of_batch_size(
    written, tmp_path, batch_size, drop_last
):
    folder, rows = written
    n = folder.num_rows
    loader = make_loader(folder, tmp_path, batch_size=batch_size, drop_last=drop_last)
    batches = list(loader)

    sizes = [len(b["row_id"]) for b in batches]
    full, rest = divmod(n, batch_size)
    assert sizes == [batch_size] * full + ([rest] if rest and not drop_last else [])
    assert all(set(b) == {"row_id", "user", "item", "label", "history__values",
                          "history__lengths"} for b in batches)  # fmt: skip
    ids = cat(batches)
    assert len(np.unique(ids)) == len(ids)
    if drop_last:
        assert len(ids) == full * batch_size
        assert triples(batches) == written_triples(rows, ids)
    else:
        np.testing.assert_array_equal(np.sort(ids), rows["row_id"])
        assert triples(batches) == written_triples(rows)  # the multiset written
    # Columns stay aligned row by row.
    for name in ("user", "item", "label"):
        np.testing.assert_array_equal(cat(batches, name), rows[name][ids])
    for name, dtype in (("user", torch.int64), ("item", torch.int32), ("label", torch.float32)):
        assert all(b[name].dtype == dtype for b in batches)


def test_same_seed_same_order_other_seed_other_order(written, tmp_path):
    folder, _ = written
    first = cat(list(make_loader(folder, tmp_path, seed=3)))
    again = cat(list(make_loader(folder, tmp_path, seed=3)))
    other = cat(list(make_loader(folder, tmp_path, seed=4)))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_each_epoch_is_complete_and_in_a_new_order(written, tmp_path):
    folder, rows = written
    loader = make_loader(folder, tmp_path)
    epoch0, epoch1 = cat(list(loader)), cat(list(loader))
    for ids in (epoch0, epoch1):
        np.testing.assert_array_equal(np.sort(ids), rows["row_id"])
    assert not np.array_equal(epoch0, epoch1)
    # Rows are shuffled within blocks too, not only blocks: a 40-row block does not come out
    # as one run of consecutive row ids.
    assert np.mean(np.diff(epoch0) == 1) < 0.5
    # The second epoch of a new loader equals the second epoch here (deterministic per epoch).
    other = make_loader(folder, tmp_path)
    list(other)
    np.testing.assert_array_equal(cat(list(other)), epoch1)


def test_rows_are_permuted_within_each_block_by_seed_epoch_and_block_id(written, tmp_path):
    folder, _ = written
    starts = np.concatenate([[0], np.cumsum(BLOCK_SIZES)])
    loader = make_loader(folder, tmp_path, seed=11, batch_size=29)
    orders = []
    for epoch in range(2):
        ids = cat(list(loader))
        block_of = np.searchsorted(starts, ids, side="right") - 1
        # Each block's rows come out contiguously, in the order of its documented permutation.
        runs = np.flatnonzero(np.diff(block_of)) + 1
        blocks = [int(b[0]) for b in np.split(block_of, runs)]
        assert sorted(blocks) == list(range(len(BLOCK_SIZES)))
        for block, rows in zip(blocks, np.split(ids, runs), strict=True):
            perm = np.random.default_rng([11, epoch, block]).permutation(BLOCK_SIZES[block])
            np.testing.assert_array_equal(rows, starts[block] + perm)
        orders.append(blocks)
    assert orders[0] != orders[1]  # Mosaic's block order changes with the epoch too


def test_no_shuffle_keeps_the_written_order(written, tmp_path):
    folder, rows = written
    loader = make_loader(folder, tmp_path, shuffle=False, batch_size=13)
    for _ in range(2):
        np.testing.assert_array_equal(cat(list(loader)), rows["row_id"])


def test_jagged_column_round_trip_after_the_shuffle(written, tmp_path):
    folder, rows = written
    loader = make_loader(folder, tmp_path, batch_size=13, columns=["row_id", "history"])
    batches = list(loader)
    assert set(batches[0]) == {"row_id", "history__values", "history__lengths"}
    seen = 0
    for batch in batches:
        lengths = batch["history__lengths"]
        values = batch["history__values"]
        assert lengths.dtype == torch.int32
        assert values.dtype == torch.int64
        assert len(lengths) == len(batch["row_id"])
        assert int(lengths.sum()) == len(values)
        for row_id, row_values in zip(
            batch["row_id"].tolist(), torch.split(values, lengths.tolist()), strict=True
        ):
            np.testing.assert_array_equal(row_values.numpy(), rows["history"][row_id])
            seen += 1
    assert seen == folder.num_rows
    assert not np.array_equal(cat(batches), rows["row_id"])  # it was shuffled


def test_column_selection_and_validation(written, tmp_path):
    folder, _ = written
    loader = make_loader(folder, tmp_path, columns=["label", "user"])
    batch = next(iter(loader))
    assert list(batch) == ["label", "user"]
    with pytest.raises(ValueError, match="unknown column"):
        make_loader(folder, tmp_path, columns=["nope"])
    with pytest.raises(ValueError, match="unknown column"):
        make_loader(folder, tmp_path, columns=["_block_id"])
    with pytest.raises(ValueError, match="block-layout"):
        BlockBatchLoader(
            MDSFolder(remote=None, local=folder.local, num_samples=1, columns={"a": "int64"}),
            batch_size=2,
            shuffle=False,
            seed=0,
            drop_last=False,
        )


def test_peak_memory_does_not_grow_with_the_dataset(tmp_path):
    import tracemalloc

    peaks = []
    for blocks in (8, 64):
        folder, _ = write_blocks(
            tmp_path / f"mds{blocks}", (512,) * blocks, jagged=False, size_limit=1 << 16
        )
        loader = make_loader(folder, tmp_path, batch_size=100)
        tracemalloc.start()
        rows = sum(len(batch["row_id"]) for batch in loader)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert rows == 512 * blocks
    block_bytes = 512 * (8 + 8 + 4 + 4)
    assert peaks[1] < 1.5 * peaks[0] + block_bytes  # 8x the data, about the same peak
    assert peaks[1] < 20 * block_bytes


# ---------------------------------------------------------------- resumption


def _batches_and_states(loader, epochs=1):
    out = []
    for _ in range(epochs):
        for batch in loader:
            out.append((batch, loader.state_dict()))
    return out


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("epoch", [0, 1])
def test_resume_at_a_block_boundary_and_inside_a_block(written, tmp_path, drop_last, epoch):
    folder, _ = written
    kwargs = {"batch_size": 20, "drop_last": drop_last}
    reference = make_loader(folder, tmp_path, **kwargs)
    if epoch:
        list(reference)
    whole = _batches_and_states(reference)
    whole_ids = cat([b for b, _ in whole])
    states = [s for _, s in whole]
    assert all(s["epoch"] == epoch for s in states[:-1])
    assert states[-1]["epoch"] == epoch + 1
    boundary = next(k for k, s in enumerate(states[:-1], 1) if s["row_offset"] == 0)
    inside = next(k for k, s in enumerate(states[:-1], 1) if s["row_offset"] > 0)
    next_epoch = cat(list(reference))

    for k in (boundary, inside):
        first = make_loader(folder, tmp_path, **kwargs)
        if epoch:
            list(first)
        it = iter(first)
        head = [next(it) for _ in range(k)]
        state = first.state_dict()
        assert state == states[k - 1]  # the same position as in the uninterrupted run
        del it, first

        resumed = make_loader(folder, tmp_path, **kwargs)
        resumed.load_state_dict(state)
        assert resumed.state_dict()["positions"] == state["positions"]
        tail = list(resumed)
        np.testing.assert_array_equal(cat(head + tail), whole_ids)
        np.testing.assert_array_equal(cat(head + tail, "user"), cat([b for b, _ in whole], "user"))
        # ... and it goes on with the next epoch, in the order of an uninterrupted run.
        np.testing.assert_array_equal(cat(list(resumed)), next_epoch)


def test_resume_with_a_jagged_column_inside_a_block(written, tmp_path):
    folder, rows = written
    reference = make_loader(folder, tmp_path, batch_size=9)
    whole = _batches_and_states(reference)
    k = next(k for k, (_, s) in enumerate(whole, 1) if s["row_offset"] > 0 and k > 3)
    first = make_loader(folder, tmp_path, batch_size=9)
    it = iter(first)
    head = [next(it) for _ in range(k)]
    resumed = make_loader(folder, tmp_path, batch_size=9)
    resumed.load_state_dict(first.state_dict())
    batches = head + list(resumed)
    for name in ("row_id", "history__values", "history__lengths"):
        np.testing.assert_array_equal(cat(batches, name), cat([b for b, _ in whole], name))


def test_state_at_the_end_of_an_epoch_starts_the_next_one(written, tmp_path):
    folder, _ = written
    reference = make_loader(folder, tmp_path)
    list(reference)
    state = reference.state_dict()
    assert (state["epoch"], state["positions"], state["row_offset"]) == (1, 0, 0)
    resumed = make_loader(folder, tmp_path)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(cat(list(resumed)), cat(list(reference)))


def test_a_state_of_other_settings_is_refused(written, tmp_path):
    folder, _ = written
    state = make_loader(folder, tmp_path).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(folder, tmp_path, batch_size=5).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        make_loader(folder, tmp_path, seed=1).load_state_dict(state)


# ---------------------------------------------------------------- several ranks


def test_drop_repeated_samples_keeps_first_in_traversal_order():
    # (nodes, ranks per node, workers per rank, batches per worker, batch size) = (1, 2, 1, 3, 1)
    ids = np.array([0, 2, 4, 1, 3, 3], dtype=np.int64).reshape(1, 2, 1, 3, 1)
    ids[0, 0, 0, 2, 0] = 3  # rank 0's 3rd sample repeats rank 1's 2nd: later in traversal
    assert drop_repeated_samples(ids) == 2
    # Traversal: 0,1 | 2,3 | 3,3 -> both 3s of the third step are repeats.
    np.testing.assert_array_equal(ids.reshape(2, 3), [[0, 2, -1], [1, 3, -1]])
    padded = np.array([5, -1, 5, -1], dtype=np.int64).reshape(1, 2, 1, 2, 1)
    assert drop_repeated_samples(padded) == 1
    np.testing.assert_array_equal(padded.reshape(2, 2), [[5, -1], [-1, -1]])


def _rank_run(config: dict) -> dict:
    """One rank: two epochs, then k batches + state on a second loader, resumed on a third."""
    folder, root, k = config["folder"], config["root"], config["k"]
    params = {"batch_size": 16, "shuffle": True, "seed": 5, "drop_last": False}

    def loader(name):
        return BlockBatchLoader(folder, local_cache_dir=f"{root}/{name}", **params)

    full = loader("full")
    epochs = [cat(list(full)) for _ in range(2)]
    part = loader("part")
    it = iter(part)
    head = [next(it) for _ in range(k)]
    state = part.state_dict()
    rest = loader("rest")
    rest.load_state_dict(state)
    tail = list(rest)
    # One block for two ranks: Mosaic gives both ranks the same block; one of them gets none.
    single = BlockBatchLoader(config["single"], local_cache_dir=f"{root}/single", **params)
    return {
        "rank": int(os.environ["RANK"]),
        "epochs": epochs,
        "resumed": cat(head + tail),
        "state": state,
        "single": cat(list(single)),
        "single_state": single.state_dict(),
    }


def test_two_ranks_read_every_row_exactly_once(written, tmp_path):
    folder, rows = written
    assert folder.num_samples % 2 == 1  # Mosaic pads the partitions by repeating a block
    single, single_rows = write_blocks(tmp_path / "single", (6,))
    config = {"folder": folder, "single": single, "root": str(tmp_path), "k": 3}
    results = run_on_ranks(_rank_run, config, 2, tmp_path / "out")
    assert [r["rank"] for r in results] == [0, 1]
    for epoch in range(2):
        per_rank = [r["epochs"][epoch] for r in results]
        assert all(len(ids) for ids in per_rank)  # both ranks got work
        union = np.concatenate(per_rank)
        np.testing.assert_array_equal(np.sort(union), rows["row_id"])  # no row twice, none lost
    assert not np.array_equal(results[0]["epochs"][0], results[0]["epochs"][1])
    # Exact resumption on every rank, each from its own state.
    for r in results:
        assert r["state"]["world_size"] == 2
        assert r["state"]["rank"] == r["rank"]
        np.testing.assert_array_equal(r["resumed"], r["epochs"][0])
    # A rank without any block ends its epoch at once, with no batch.
    assert sorted(len(r["single"]) for r in results) == [0, 6]
    np.testing.assert_array_equal(
        np.sort(np.concatenate([r["single"] for r in results])), single_rows["row_id"]
    )
    assert all(r["single_state"]["epoch"] == 1 for r in results)
