"""Scale: the two-tower pipeline's stages on synthetic ratings of any size, timed, with memory.

Run: ``python -m recsys_kedro.benchmarks.scale [--interactions 20000000] [--users 1000000]
[--items 100000]``. Synthetic ratings (:mod:`recsys_kedro.data.synthetic_ratings`, generated in
Spark) go through the project's own code for every stage, the functions the Kedro nodes call,
each stage's outputs written to a work folder as the catalog would write them:

  generate    the raw ratings as parquet (exactly ``--interactions`` distinct pairs, plus
              ~1 % earlier re-ratings that ingestion removes)
  ingestion   ``read_ratings_table`` (one validating pass) -> ``label_interactions``
              (the configured rule) -> ``deduplicate_interactions``
  features    ``index_users`` / ``index_items`` -> ``index_interactions`` ->
              ``split_interactions`` -> ``item_popularity``, ``summarise_splits``
  export      ``to_mds_frame`` -> ``MDSDataset`` (the catalog's block layout), every split
  train       ``two_tower_spec`` -> ``train_model``: ``TorchDistributor`` local mode, the
              default model and training parameters (``conf/base/parameters_two_tower.yml``)
              except ``epochs: 1``; per-epoch validation on a seeded sample of users
  evaluate    the test split: a seeded sample of ``--eval-users`` users with a positive test
              item, scored against the whole catalogue (``--eval-scorer full``: the
              evaluation's ``full_catalogue_topk_metrics``; ``faiss``: an exact FAISS index)

Per stage it prints the wall time and the peak resident memory, sampled every
``--sample-interval`` seconds from ``/proc``: of this process (``driver``: the Python
driver) and of its whole process tree (``tree``: the driver, Spark's JVM and its Python
workers, the torch ranks; a sum of RSS, so pages shared between processes count twice).
The last line is one JSON object (``interactions``, ``wall_s``, ``peak_rss_mb`` per stage,
the row counts of every stage and the evaluation's figures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("generate", "ingestion", "features", "export", "train", "evaluate")
SPLITS = ("train", "validation", "test")
PROJECT_CONF = Path(__file__).resolve().parents[3] / "conf" / "base"
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MB = 1024 * 1024


# ---------------------------------------------------------------------------- memory


def _rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (from ``/proc/<pid>/stat``)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            children[int(fields[1])].append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


class RssSampler:
    """Peak RSS of this process and of its process tree, sampled by a daemon thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._peak = (0, 0)
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> tuple[int, int]:
        """(driver, tree) RSS in bytes now; the peaks are raised to them."""
        pid = os.getpid()
        driver = _rss_bytes(pid)
        tree = driver + sum(_rss_bytes(p) for p in process_tree(pid) if p != pid)
        with self._lock:
            self._peak = (max(self._peak[0], driver), max(self._peak[1], tree))
        return driver, tree

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def reset(self) -> None:
        """Start a new peak from the current values."""
        with self._lock:
            self._peak = (0, 0)
        self.sample()

    def peak_mb(self) -> dict[str, float]:
        self.sample()
        with self._lock:
            driver, tree = self._peak
        return {"driver": round(driver / _MB, 1), "tree": round(tree / _MB, 1)}

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------- configuration


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.exists():
        raise SystemExit(f"no {path.name} at {path}: pass --conf-dir (the project's conf/base)")
    return yaml.safe_load(path.read_text()) or {}


def _spark_conf(conf_dir: Path, driver_memory: str | None) -> dict[str, Any]:
    """``spark.yml``'s values; the log4j file made absolute (it is relative to the root)."""
    conf = dict(_read_yaml(conf_dir / "spark.yml"))
    root = conf_dir.parents[1]
    opts = conf.get("spark.driver.extraJavaOptions")
    if isinstance(opts, str):
        conf["spark.driver.extraJavaOptions"] = opts.replace("=conf/", f"={root}/conf/")
    conf["spark.app.name"] = "recsys-kedro-scale"
    if driver_memory:
        conf["spark.driver.memory"] = driver_memory
    return conf


def _params(conf_dir: Path, work: Path, eval_users: int) -> dict[str, Any]:
    """The two_tower parameters, as the pipeline gets them, with the benchmark's overrides:
    one epoch, the model staged in the work folder, no resume checkpoints, and per-epoch
    validation on a seeded sample of ``eval_users`` users (``validation.max_users``, the knob
    for large data) unless the conf already caps it. ``launch``: the environment's launch
    settings (``parameters.yml``)."""
    params = _read_yaml(conf_dir / "parameters_two_tower.yml")["two_tower"]
    training = dict(params["training"])
    validation = dict(training.get("validation") or {})
    if validation.get("max_users") is None:
        validation["max_users"] = int(eval_users)
    training.update(epochs=1, validation=validation)
    params["training"] = training
    launch = dict(_read_yaml(conf_dir / "parameters.yml")["launch"])
    launch.update(staging_dir=str(work / "06_models" / "staging"), checkpoints=None)
    params["launch"] = launch
    return params


def _mds_entry(conf_dir: Path) -> dict[str, Any]:
    """Layout and block size of the catalog's ``{namespace}.{split}_mds`` entry."""
    entry = _read_yaml(conf_dir / "catalog.yml").get("{namespace}.{split}_mds") or {}
    keys = ("layout", "block_rows", "columns", "jagged", "compression", "num_partitions")
    return {k: entry[k] for k in keys if k in entry}


# ---------------------------------------------------------------------------- stages


class Paths:
    """Where each stage writes (the catalog's layers, under the work folder)."""

    def __init__(self, work: Path) -> None:
        self.raw = work / "01_raw" / "ratings"
        self.int_interactions = work / "02_intermediate" / "interactions"
        self.user_index = work / "03_primary" / "user_index"
        self.item_index = work / "03_primary" / "item_index"
        self.interactions = work / "04_feature" / "interactions"
        self.splits = {s: work / "05_model_input" / "splits" / s for s in SPLITS}
        self.item_popularity = work / "05_model_input" / "item_popularity"
        self.mds = {s: work / "05_model_input" / "mds" / s for s in SPLITS}
        self.model = work / "06_models" / "two_tower.pt"


def _write(df: Any, path: Path) -> Any:
    """Save as the catalog's ``spark.SparkDatasetV2`` does (parquet, overwrite) and load it
    back, so the next step reads the file, not the lineage."""
    df.write.mode("overwrite").parquet(str(path))
    return df.sparkSession.read.parquet(str(path))


def _rows(spark: Any, path: Path) -> int:
    return spark.read.parquet(str(path)).count()


def stage_generate(spark: Any, spec: Any, paths: Paths) -> dict[str, Any]:
    from recsys_kedro.data.synthetic_ratings import generate_ratings

    generate_ratings(spark, spec).write.mode("overwrite").parquet(str(paths.raw))
    return {"raw_rows": _rows(spark, paths.raw)}


def stage_ingestion(spark: Any, paths: Paths, params: dict[str, Any]) -> dict[str, Any]:
    from recsys_kedro.data.interactions import (
        LabelRule,
        deduplicate_interactions,
        label_interactions,
    )
    from recsys_kedro.data.ratings import read_ratings_table
    from recsys_kedro.data.synthetic_ratings import RATING_RANGE

    # The raw parquet as a table: InteractionsDataset(table=...) reads it with this function.
    spark.read.parquet(str(paths.raw)).createOrReplaceTempView("scale_raw_ratings")
    ratings = read_ratings_table(
        spark, "scale_raw_ratings", rating_range=RATING_RANGE, timestamp_unit="s"
    )
    labelled = label_interactions(ratings, LabelRule.from_params(params["ingestion"]["label"]))
    _write(deduplicate_interactions(labelled, params["ingestion"]), paths.int_interactions)
    return {"ingested_rows": _rows(spark, paths.int_interactions)}


def stage_features(spark: Any, paths: Paths, params: dict[str, Any]) -> dict[str, Any]:
    from recsys_kedro.data.interactions import (
        index_interactions,
        index_items,
        index_users,
        item_popularity,
        split_interactions,
        summarise_splits,
    )

    ratings = spark.read.parquet(str(paths.int_interactions))
    user_index = _write(index_users(ratings), paths.user_index)
    item_index = _write(index_items(ratings), paths.item_index)
    interactions = _write(index_interactions(ratings, user_index, item_index), paths.interactions)
    parts = split_interactions(interactions, params["features"]["split"])
    train, validation, test = (
        _write(df, paths.splits[s]) for s, df in zip(SPLITS, parts, strict=True)
    )
    _write(item_popularity(train, item_index), paths.item_popularity)
    stats = summarise_splits(train, validation, test, user_index, item_index)
    return {"interactions_rows": _rows(spark, paths.interactions), "split_statistics": stats}


def stage_export(spark: Any, paths: Paths, params: dict[str, Any], entry: dict) -> dict[str, Any]:
    from recsys_kedro.data.export import to_mds_frame
    from recsys_kedro.datasets.mds_dataset import MDSDataset

    folders = {}
    for split in SPLITS:
        dataset = MDSDataset(filepath=str(paths.mds[split]), **entry)
        dataset.save(to_mds_frame(spark.read.parquet(str(paths.splits[split])), params["export"]))
        folders[split] = dataset.load()
    return {"folders": folders, "exported_rows": {s: f.num_rows for s, f in folders.items()}}


def stage_train(
    paths: Paths, params: dict[str, Any], stats: dict[str, Any], folders: dict[str, Any]
) -> dict[str, Any]:
    import pandas as pd

    from recsys_kedro.models.model_file import save_model_file
    from recsys_kedro.training.run import TrainSettings, train
    from recsys_kedro.training.specs import spec_to_dict
    from recsys_kedro.training.two_tower import two_tower_spec_from_params

    popularity = pd.read_parquet(paths.item_popularity)  # the catalog's @pandas dataset
    # The generated interactions have no side tables: the towers read ids only.
    model = {**params["model"], "side_features": False}
    spec = two_tower_spec_from_params(stats, popularity, model, params["training"])
    del popularity
    settings = TrainSettings.from_params(params["training"], params["launch"])
    result = train(spec, spec_to_dict(spec), folders["train"], folders["validation"], settings)
    save_model_file(result.model, str(paths.model))  # the catalog's TorchModelDataset
    summary = result.summary
    del result, spec
    keys = ("n_train_rows_seen", "train_samples_per_s", "world_size", "global_batch_size")
    out = {k: summary[k] for k in keys}
    out["validation"] = {k: v[-1] for k, v in summary["history"].items() if k.startswith("val_")}
    return out


def _relevant(
    test_users: np.ndarray, test_items: np.ndarray, excl_users: np.ndarray, excl_items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct test pairs that are not excluded (the evaluation's relevance rule)."""
    width = int(max(test_items.max(initial=0), excl_items.max(initial=0))) + 1
    test_keys = np.unique(test_users * width + test_items)
    keys = np.setdiff1d(test_keys, excl_users * width + excl_items, assume_unique=False)
    return keys // width, keys % width


def score_sample(
    user_emb: np.ndarray,
    item_emb: np.ndarray,
    test_users: np.ndarray,
    test_items: np.ndarray,
    exclude_users: np.ndarray,
    exclude_items: np.ndarray,
    ks: list[int],
    batch_size: int = 1024,
    scorer: str = "full",
) -> dict[str, float]:
    """Recall@K / NDCG@K of dot-product scores over the whole catalogue, for the users of
    ``user_emb`` (rows = local user indexes ``0..S-1``, as in the pair arrays).

    ``full``: :func:`~recsys_kedro.evaluation.retrieval.full_catalogue_topk_metrics` (every
    item scored, chunked over users); ``faiss``: an exact inner-product FAISS index
    searched for the top ``max(ks)`` with the exclusions, then
    :func:`~recsys_kedro.evaluation.lists.list_metrics`; the same ranking rules, so the same
    numbers (up to float rounding of near-equal scores).
    """
    from recsys_kedro.evaluation.retrieval import embedding_score_fn, full_catalogue_topk_metrics

    n_items = item_emb.shape[0]
    if scorer == "full":
        return full_catalogue_topk_metrics(
            embedding_score_fn(user_emb, item_emb),
            n_items=n_items,
            test_users=test_users,
            test_items=test_items,
            exclude_users=exclude_users,
            exclude_items=exclude_items,
            ks=ks,
            batch_size=batch_size,
        )
    if scorer != "faiss":
        raise ValueError(f"scorer must be 'full' or 'faiss', got {scorer!r}")
    from recsys_kedro.evaluation.lists import list_metrics
    from recsys_kedro.retrieval import IndexConfig, build_index, search

    rel_users, rel_items = _relevant(test_users, test_items, exclude_users, exclude_items)
    users = np.unique(rel_users)
    order = np.argsort(exclude_users, kind="stable")
    sorted_users, sorted_items = exclude_users[order], exclude_items[order]
    bounds = np.searchsorted(sorted_users, np.stack([users, users + 1]))
    exclude = [sorted_items[lo:hi] for lo, hi in bounds.T]
    index = build_index(item_emb, IndexConfig(kind="exact"))
    scores, items = search(index, user_emb[users], max(ks), exclude, batch_size=batch_size)
    found = items >= 0
    rows = np.repeat(users, items.shape[1]).reshape(items.shape)
    metrics = list_metrics(rows[found], items[found], scores[found], rel_users, rel_items, ks)
    n_users = int(metrics.pop("n_users"))
    return {**metrics, "n_eval_users": n_users}


def stage_evaluate(
    spark: Any, paths: Paths, params: dict[str, Any], n_items: int, args: argparse.Namespace
) -> dict[str, Any]:
    """A seeded sample of the test users with a positive item, scored against the catalogue.

    Only the sampled users' rows reach the driver (a broadcast join in Spark), and only
    their query embeddings are computed; the item embeddings are the whole catalogue.
    """
    import pandas as pd
    import torch
    from pyspark.sql import functions as F

    from recsys_kedro.evaluation.retrieval import auc
    from recsys_kedro.models.model_file import load_model_file
    from recsys_kedro.models.two_tower import model_from_file

    evaluation = params["evaluation"]
    ks = [int(k) for k in evaluation["ks"]]
    test = spark.read.parquet(str(paths.splits["test"]))
    positives = test.where(F.col("label") == 1).select("user_idx").distinct()
    n_candidates = positives.count()
    sample = positives.orderBy(F.xxhash64(F.lit(args.eval_seed), "user_idx"), "user_idx")
    users = np.sort(sample.limit(args.eval_users).toPandas()["user_idx"].to_numpy(np.int64))
    keep = F.broadcast(spark.createDataFrame(pd.DataFrame({"user_idx": users})))

    def rows(split: str, columns: list[str]) -> pd.DataFrame:
        frame = spark.read.parquet(str(paths.splits[split])).join(keep, "user_idx")
        return frame.select(*columns).toPandas()

    seen = [rows("train", ["user_idx", "item_idx"])]
    if evaluation.get("exclude_validation_items", True):
        seen.append(rows("validation", ["user_idx", "item_idx"]))
    seen_pairs = pd.concat(seen, ignore_index=True)
    test_rows = rows("test", ["user_idx", "item_idx", "label"])

    def local(values: pd.Series) -> np.ndarray:  # user index -> row of the sample
        return np.searchsorted(users, values.to_numpy(np.int64))

    model = model_from_file(load_model_file(str(paths.model)))
    with torch.no_grad():
        user_emb = model.encode_users(torch.as_tensor(users)).numpy()
        item_emb = torch.cat(
            [model.encode_items(c) for c in torch.arange(n_items).split(65536)]
        ).numpy()
    del model
    positive = test_rows[test_rows["label"] == 1]
    common = {
        "test_users": local(positive["user_idx"]),
        "test_items": positive["item_idx"].to_numpy(np.int64),
        "exclude_users": local(seen_pairs["user_idx"]),
        "exclude_items": seen_pairs["item_idx"].to_numpy(np.int64),
        "ks": ks,
        "batch_size": int(evaluation.get("batch_size", 1024)),
    }
    metrics = score_sample(user_emb, item_emb, scorer=args.eval_scorer, **common)
    # Most popular (positives per item in train), by the same rules: always full catalogue.
    counts = pd.read_parquet(paths.item_popularity).sort_values("item_idx")["n_positive"]
    counts_t = torch.as_tensor(counts.to_numpy(np.float64))
    from recsys_kedro.evaluation.retrieval import full_catalogue_topk_metrics

    popularity = full_catalogue_topk_metrics(
        lambda u: counts_t.unsqueeze(0).expand(len(u), n_items), n_items=n_items, **common
    )
    scores = np.einsum(
        "ij,ij->i",
        user_emb[local(test_rows["user_idx"])],
        item_emb[test_rows["item_idx"].to_numpy(np.int64)],
    )
    labels = test_rows["label"].to_numpy()
    out: dict[str, Any] = {
        "method": (
            f"a seeded sample of {len(users):,} of the {n_candidates:,} test users with a "
            "positive item, every item of the catalogue scored "
            + (
                "(full_catalogue_topk_metrics)"
                if args.eval_scorer == "full"
                else "(exact FAISS inner-product index)"
            )
        ),
        "scorer": args.eval_scorer,
        "sampled_users": len(users),
        "candidate_users": n_candidates,
        "test_auc": auc(labels, scores) if 0 < labels.sum() < labels.size else float("nan"),
        "driver_rows": len(seen_pairs) + len(test_rows),
    }
    for k in ks:
        for name in ("recall", "ndcg"):
            out[f"{name}@{k}"] = metrics[f"{name}@{k}"]
            out[f"popularity_{name}@{k}"] = popularity[f"{name}@{k}"]
    out["n_eval_users"] = int(metrics["n_eval_users"])
    return out


# ---------------------------------------------------------------------------- driver


def _import_stage_modules() -> None:
    """Import what the stages use (torch, TorchRec, Mosaic, FAISS: ~0.7 GB of RSS) up front."""
    import importlib

    for name in (
        "streaming.base.converters.dataframe_to_mds",
        "recsys_kedro.datasets.mds_dataset",
        "recsys_kedro.evaluation.lists",
        "recsys_kedro.models.two_tower",
        "recsys_kedro.training.run",
        "recsys_kedro.training.two_tower",
        "recsys_kedro.retrieval",
    ):
        importlib.import_module(name)


@contextlib.contextmanager
def _work_dir(args: argparse.Namespace) -> Iterator[Path]:
    if args.work_dir is None:
        work = Path(tempfile.mkdtemp(prefix="recsys-kedro-scale-"))
        remove = not args.keep
    else:
        work = Path(args.work_dir)
        if work.exists() and (not work.is_dir() or any(work.iterdir())):
            raise SystemExit(
                f"--work-dir {work} exists and is not an empty folder: the benchmark writes "
                "every stage's output there; give a new or empty folder"
            )
        work.mkdir(parents=True, exist_ok=True)
        remove = False
    try:
        yield work
    finally:
        if remove:
            shutil.rmtree(work, ignore_errors=True)


def _print_row(name: str, wall: float, peak: dict[str, float], note: str) -> None:
    print(
        f"{name:<10} {wall:>9.1f} {peak['driver']:>11,.0f} {peak['tree']:>11,.0f}  {note}",
        flush=True,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every stage in order, each timed and with its peak memory; returns the summary."""
    from recsys_kedro.data.synthetic_ratings import SyntheticRatingsSpec

    spec = SyntheticRatingsSpec(
        interactions=args.interactions,
        users=args.users,
        items=args.items,
        seed=args.seed,
        duplicate_share=args.duplicate_share,
    )
    conf_dir = Path(args.conf_dir)
    wall: dict[str, float] = {}
    peaks: dict[str, dict[str, float]] = {}
    counts: dict[str, Any] = {"interactions": spec.interactions}
    results: dict[str, Any] = {}
    with _work_dir(args) as work, RssSampler(args.sample_interval) as sampler:
        paths = Paths(work)
        params = _params(conf_dir, work, args.eval_users)
        entry = _mds_entry(conf_dir)
        print(
            f"{spec.interactions:,} interactions, {spec.users:,} users, {spec.items:,} items "
            f"(seed {spec.seed}) in {work}",
            flush=True,
        )
        print(f"{'stage':<10} {'wall s':>9} {'driver MB':>11} {'tree MB':>11}  rows", flush=True)
        from pyspark.sql import SparkSession

        from recsys_kedro.spark import build_spark_session

        sampler.reset()
        start = time.perf_counter()
        owned = SparkSession.getActiveSession() is None  # stopped at the end only if made here
        spark = build_spark_session(_spark_conf(conf_dir, args.driver_memory), "recsys-kedro-scale")
        _import_stage_modules()  # so that no stage's peak is an import's
        wall["startup"] = round(time.perf_counter() - start, 2)
        peaks["startup"] = sampler.peak_mb()
        _print_row("startup", wall["startup"], peaks["startup"], "JVM start, imports")
        try:

            def timed(name: str, fn: Callable[[], dict[str, Any]], note: Callable) -> None:
                sampler.reset()
                t0 = time.perf_counter()
                results[name] = fn()
                wall[name] = round(time.perf_counter() - t0, 2)
                peaks[name] = sampler.peak_mb()
                _print_row(name, wall[name], peaks[name], note(results[name]))

            timed(
                "generate",
                lambda: stage_generate(spark, spec, paths),
                lambda r: f"raw {r['raw_rows']:,}",
            )
            timed(
                "ingestion",
                lambda: stage_ingestion(spark, paths, params),
                lambda r: f"deduplicated {r['ingested_rows']:,}",
            )
            timed(
                "features",
                lambda: stage_features(spark, paths, params),
                lambda r: (
                    "split "
                    + " / ".join(f"{r['split_statistics'][s]['interactions']:,}" for s in SPLITS)
                ),
            )
            stats = results["features"]["split_statistics"]
            timed(
                "export",
                lambda: stage_export(spark, paths, params, entry),
                lambda r: "MDS " + " / ".join(f"{r['exported_rows'][s]:,}" for s in SPLITS),
            )
            folders = results["export"].pop("folders")
            timed(
                "train",
                lambda: stage_train(paths, params, stats, folders),
                lambda r: (
                    f"{r['n_train_rows_seen']:,} rows seen, {r['train_samples_per_s']:,.0f} rows/s"
                ),
            )
            timed(
                "evaluate",
                lambda: stage_evaluate(spark, paths, params, stats["n_items"], args),
                lambda r: (
                    f"{r['n_eval_users']:,} users ({r['scorer']}), "
                    f"recall@10 {r.get('recall@10', float('nan')):.4f} "
                    f"(popularity {r.get('popularity_recall@10', float('nan')):.4f})"
                ),
            )
        finally:
            if owned:
                spark.stop()
    counts.update(
        raw_rows=results["generate"]["raw_rows"],
        ingested_rows=results["ingestion"]["ingested_rows"],
        interactions_rows=results["features"]["interactions_rows"],
        split_rows={s: stats[s]["interactions"] for s in SPLITS},
        exported_rows=results["export"]["exported_rows"],
        train_rows_seen=results["train"]["n_train_rows_seen"],
        n_users=stats["n_users"],
        n_items=stats["n_items"],
    )
    total = round(sum(wall.values()), 1)
    driver_max = max(p["driver"] for p in peaks.values())
    tree_max = max(p["tree"] for p in peaks.values())
    print(f"{'total':<10} {total:>9.1f} {driver_max:>11,.0f} {tree_max:>11,.0f}")
    print(f"evaluation: {results['evaluate']['method']}")
    return {
        "interactions": spec.interactions,
        "users": spec.users,
        "items": spec.items,
        "wall_s": wall,
        "peak_rss_mb": peaks,
        "total_wall_s": total,
        "spark_driver_memory": _spark_conf(conf_dir, args.driver_memory).get("spark.driver.memory"),
        "counts": counts,
        "train": results["train"],
        "evaluation": results["evaluate"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interactions", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0, help="of the synthetic ratings")
    parser.add_argument(
        "--duplicate-share", type=float, default=0.01, help="earlier re-ratings, removed"
    )
    parser.add_argument("--eval-users", type=int, default=10_000, help="users scored (sample)")
    parser.add_argument("--eval-seed", type=int, default=0, help="seed of the user sample")
    parser.add_argument("--eval-scorer", choices=("full", "faiss"), default="full")
    parser.add_argument("--driver-memory", default=None, help="default: spark.yml's")
    parser.add_argument("--conf-dir", default=str(PROJECT_CONF), help="the project's conf/base")
    parser.add_argument("--work-dir", default=None, help="a new or empty folder (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--sample-interval", type=float, default=0.2, help="RSS sampling, s")
    args = parser.parse_args(argv)
    if args.eval_users < 1:
        parser.error("--eval-users must be >= 1")
    if not (math.isfinite(args.sample_interval) and args.sample_interval > 0):
        parser.error("--sample-interval must be a number of seconds > 0")
    summary = run(args)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
