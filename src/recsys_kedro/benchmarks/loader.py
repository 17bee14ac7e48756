"""Training input throughput: one-row-per-sample MDS vs the block-columnar layout.

Run: ``python -m recsys_kedro.benchmarks.loader [--rows 1000000]``. On one generated dataset
(user, item, label; written once in each layout from Spark) it measures, in this process:

  (a) one-row-per-sample MDS through ``StreamingDataset`` + ``DataLoader(batch_size)``;
  (b) (a) plus the Databricks notebook's per-row Python conversion to ``KeyedJaggedTensor``;
  (c) the block layout through ``BlockBatchLoader`` up to ready TorchRec batches;
  (d) the two-tower training step alone, on batches already in memory;
  (e) the two-tower training loop fed by (c);

then the ratios and peak memory. The last line is one JSON object. (a) and (b) are slow by
design; each measurement stops after ``--max-seconds`` and reports rows/s over what it read.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

COLUMNS = {"user_idx": "int64", "item_idx": "int64", "label": "int32"}


def _rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(batches: Iterable[Any], rows_of: Callable[[Any], int], max_seconds: float) -> dict:
    """Rows/s over ``batches`` (stopping after ``max_seconds``) and the RSS it added at most."""
    rss0, peak, rows = _rss_mb(), 0.0, 0
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        rows += rows_of(batch)
        if i % 16 == 0:
            peak = max(peak, _rss_mb() - rss0)
            if time.perf_counter() - start > max_seconds:
                break
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "rss_delta_mb": peak}


def _write_dataset(workdir: Path, rows: int, n_users: int, n_items: int, block_rows: int):
    """Generate the data in Spark and write it in both layouts (timed)."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from recsys_kedro.mds import write_mds
    from recsys_kedro.mds.block_writer import write_mds_blocks
    from recsys_kedro.spark import build_spark_session

    owned = SparkSession.getActiveSession() is None  # stopped at the end only if made here
    spark = build_spark_session(
        {
            "spark.master": "local[2]",
            "spark.driver.memory": "4g",
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
        },
        app_name="recsys-kedro-benchmark",
    )
    df = (
        spark.range(rows, numPartitions=2)
        .select(
            (F.abs(F.xxhash64("id", F.lit(1))) % n_users).alias("user_idx"),
            (F.abs(F.xxhash64("id", F.lit(2))) % n_items).alias("item_idx"),
            (F.abs(F.xxhash64("id", F.lit(3))) % 2).cast("int").alias("label"),
        )
        .cache()
    )
    df.count()
    timings = {}
    start = time.perf_counter()
    row_folder = write_mds(df, path=str(workdir / "row"), columns=COLUMNS, compression=None)
    timings["write_row_s"] = time.perf_counter() - start
    start = time.perf_counter()
    block_folder = write_mds_blocks(
        df, path=str(workdir / "block"), columns=COLUMNS, block_rows=block_rows
    )
    timings["write_block_s"] = time.perf_counter() - start
    df.unpersist()
    if owned:
        spark.stop()
    return row_folder, block_folder, timings


def _notebook_kjt(batch: dict[str, torch.Tensor]):
    """The reference notebook's conversion: a Python loop over the rows of each feature."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    keys = ["user_idx", "item_idx"]
    values, lengths = [], []
    for key in keys:
        for value in batch[key]:
            values.append(int(value))
            lengths.append(1)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=torch.tensor(values), lengths=torch.tensor(lengths, dtype=torch.int32)
    )
    return kjt, batch["label"].float()


def _row_loader(folder, batch_size: int, cache: Path):
    from torch.utils.data import DataLoader

    from recsys_kedro.mds import make_streaming_dataset

    dataset = make_streaming_dataset(
        folder, batch_size=batch_size, shuffle=True, seed=0, local_cache_dir=str(cache)
    )
    return DataLoader(dataset, batch_size=batch_size, num_workers=0)


def _block_batches(folder, batch_size: int, cache: Path):
    from recsys_kedro.mds.block_loader import BlockBatchLoader
    from recsys_kedro.models.two_tower import BATCH_LAYOUT

    loader = BlockBatchLoader(
        folder,
        batch_size=batch_size,
        shuffle=True,
        seed=0,
        drop_last=True,
        local_cache_dir=str(cache),
        columns=list(COLUMNS),
    )
    return (BATCH_LAYOUT.to_batch(columns) for columns in loader)


def _rows(batch) -> int:
    return int(batch.labels.shape[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(block_folder, n_users: int, n_items: int, batch_size: int, workdir: Path):
    """The pipeline's sharded two-tower (DMP, fused optimizers) on a 1-process gloo group."""
    from recsys_kedro.models.two_tower import TwoTowerConfig
    from recsys_kedro.training.config import TrainConfig
    from recsys_kedro.training.distributed import init_distributed
    from recsys_kedro.training.sharding import build_sharded_model
    from recsys_kedro.training.two_tower import TwoTowerSpec

    os.environ.update(
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
    )
    ctx = init_distributed(use_gpu=False)
    spec = TwoTowerSpec(
        model=TwoTowerConfig(n_users, n_items, embedding_dim=64, layer_sizes=(128, 64))
    )
    config = TrainConfig(
        train=block_folder,
        validation=block_folder,
        model_path=str(workdir / "unused.pt"),
        batch_size=batch_size,
    )
    model, optimizer, _ = build_sharded_model(spec, config, ctx)
    return model, optimizer


def _stage(name: str, row_folder, block_folder, args: argparse.Namespace, workdir: str) -> dict:
    """One measurement, in its own process (see :func:`run`)."""
    bs, cache = args.batch_size, Path(workdir) / f"cache_{name}"
    if name == "a":
        batches = _row_loader(row_folder, bs, cache)
        res = _measure(batches, lambda b: len(b["label"]), args.max_seconds)
    elif name == "b":
        batches = (_notebook_kjt(b) for b in _row_loader(row_folder, bs, cache))
        res = _measure(batches, lambda b: len(b[1]), args.max_seconds)
    elif name == "c":
        res = _measure(_block_batches(block_folder, bs, cache), _rows, 1e9)
    else:  # "de": the model alone, then fed by (c), on the same sharded model
        from recsys_kedro.training.distributed import destroy_distributed
        from recsys_kedro.training.steps import train_step

        model, optimizer = _model(block_folder, args.users, args.items, bs, Path(workdir))
        in_memory = []
        for batch in _block_batches(block_folder, bs, Path(workdir) / "cache_d"):
            in_memory.append(batch)
            if len(in_memory) == args.memory_batches:
                break
        for batch in in_memory[:5]:  # warm-up
            train_step(model, optimizer, batch)

        def fed(batches):
            for batch in batches:
                train_step(model, optimizer, batch)
                yield batch

        def cycle():
            while True:
                yield from in_memory

        d = _measure(fed(cycle()), _rows, args.train_seconds)
        batches = _block_batches(block_folder, bs, Path(workdir) / "cache_e")
        e = _measure(fed(batches), _rows, args.train_seconds)
        destroy_distributed()
        return {"d": d, "e": e, "peak_rss_mb": _peak_rss_mb()}
    res["peak_rss_mb"] = _peak_rss_mb()
    return {name: res}


LABELS = {
    "a": "row MDS, StreamingDataset + DataLoader",
    "b": "(a) + per-row Python KeyedJaggedTensor (notebook)",
    "c": "block MDS -> ready TorchRec batches (BlockBatchLoader)",
    "d": "two-tower training step on in-memory batches",
    "e": "two-tower training loop fed by (c)",
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Write the data once, then measure each figure in a fresh process.

    A Mosaic loader abandoned mid-epoch keeps downloading and decoding in its background
    threads, which would slow every later figure in the same process; separate processes
    also give each reader its own peak memory. Each is forked from a server that imported
    the stack once (imports start no thread), so no figure pays for the imports.
    """
    import multiprocessing as mp

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="recsys-kedro-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"writing {args.rows:,} rows in both layouts to {workdir} ...", flush=True)
    row_folder, block_folder, timings = _write_dataset(
        workdir, args.rows, args.users, args.items, args.block_rows
    )
    print(
        f"  row layout {timings['write_row_s']:.1f} s, block layout "
        f"{timings['write_block_s']:.1f} s ({block_folder.num_samples} blocks)",
        flush=True,
    )
    results: dict[str, dict] = {}
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torchrec", "streaming", __name__])
    for stage in ("a", "b", "c", "de"):
        with ctx.Pool(1) as pool:
            out = pool.apply(_stage, (stage, row_folder, block_folder, args, str(workdir)))
        for key in stage:
            res = out[key]
            res.setdefault("peak_rss_mb", out.get("peak_rss_mb"))
            results[key] = res
            print(
                f"({key}) {LABELS[key]:<56} {res['rows_per_s']:>12,.0f} rows/s "
                f"({res['rows']:,} rows in {res['seconds']:.1f} s)",
                flush=True,
            )
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    rate = {k: v["rows_per_s"] for k, v in results.items()}
    summary = {
        "rows": args.rows,
        "block_rows": args.block_rows,
        "batch_size": args.batch_size,
        **{f"rows_per_s_{k}": round(v, 1) for k, v in rate.items()},
        "ratio_c_a": round(rate["c"] / rate["a"], 2),
        "ratio_c_b": round(rate["c"] / rate["b"], 2),
        "ratio_e_d": round(rate["e"] / rate["d"], 3),
        "reader_rss_delta_mb": round(results["c"]["rss_delta_mb"], 1),
        "reader_peak_rss_mb": round(results["c"]["peak_rss_mb"], 1),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results.values()), 1),
        **{k: round(v, 1) for k, v in timings.items()},
    }
    print(
        f"(c)/(a) = {summary['ratio_c_a']:.1f}x   (c)/(b) = {summary['ratio_c_b']:.1f}x   "
        f"(e)/(d) = {summary['ratio_e_d']:.2f}   reader: +{summary['reader_rss_delta_mb']} MB "
        f"while reading, peak {summary['reader_peak_rss_mb']} MB   "
        f"peak of all stages {summary['peak_rss_mb']} MB"
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="dataset size")
    parser.add_argument("--block-rows", type=int, default=4096, help="rows per MDS block")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap per loader figure")
    parser.add_argument("--train-seconds", type=float, default=30.0, help="cap for (d), (e)")
    parser.add_argument("--memory-batches", type=int, default=64, help="batches held for (d)")
    parser.add_argument("--workdir", default=None, help="keep the data here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    summary = run(parser.parse_args(argv))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
