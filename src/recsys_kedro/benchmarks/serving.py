"""Serving latency and throughput of the saved recommender (the recommend pipeline's model).

Run: ``python -m recsys_kedro.benchmarks.serving [--model data/06_models/recommender]``
after ``kedro run --pipelines=recommend``. It loads the MLflow model as a server would
(``mlflow.pyfunc.load_model``) and measures, for exact retrieval and for the approximate
indexes built from the same item vectors:

* latency of one user per call: p50 / p99 over ``--requests`` random known users;
* throughput with ``--batch`` users per call (users per second).

It prints a table; the last line is one JSON object with ``p50_ms``, ``p99_ms`` and
``users_per_s`` of the default (saved) configuration, and the same per index kind.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any

import numpy as np
import pandas as pd


def _with_index(model: Any, kind: str) -> Any:
    """A copy of the recommender whose index is ``kind``, built from the saved vectors."""
    from recsys_kedro.retrieval import IndexConfig, build_index, deserialize_index
    from recsys_kedro.retrieval import serialize_index as serialise

    saved = deserialize_index(model.index_bytes)
    vectors = saved.reconstruct_n(0, saved.ntotal)  # exact (flat) indexes keep the vectors
    clone = copy.copy(model)
    clone.index_bytes = serialise(build_index(vectors, IndexConfig(kind=kind)))
    clone._loaded = None
    return clone


def measure(model: Any, requests: int, batch: int, seed: int = 0) -> dict[str, float]:
    """p50 / p99 one-user latency (ms) and users/s at ``batch`` users per call."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(model.user_ids)
    model.predict(None, pd.DataFrame({"user_id": ids[:2]}))  # warm up: index, ranker
    latencies = []
    for user in rng.choice(ids, size=requests):
        start = time.perf_counter()
        model.predict(None, pd.DataFrame({"user_id": [user]}))
        latencies.append((time.perf_counter() - start) * 1000.0)
    # Distinct users (the model serves each once); every user if the batch is larger.
    users = rng.choice(ids, size=min(batch, ids.size), replace=False)
    start = time.perf_counter()
    rounds = 3
    for _ in range(rounds):
        model.predict(None, pd.DataFrame({"user_id": users}))
    seconds = (time.perf_counter() - start) / rounds
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "users_per_s": float(len(users) / seconds),
        "batch_users": int(len(users)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="data/06_models/recommender")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--kinds", default="exact,hnsw,ivf", help="index kinds to compare")
    args = parser.parse_args(argv)

    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(args.model).unwrap_python_model()
    results = {"saved": measure(model, args.requests, args.batch)}
    for kind in [k for k in args.kinds.split(",") if k]:
        results[kind] = measure(_with_index(model, kind), args.requests, args.batch)
    print(f"{'index':<8} {'p50 ms':>8} {'p99 ms':>8} {'users/s':>10}  (batch of {args.batch})")
    for name, r in results.items():
        print(f"{name:<8} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['users_per_s']:>10.0f}")
    summary = {**{k: v for k, v in results["saved"].items()}, "by_index": results}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
