"""Choose the dlrm pipeline's model settings on validation: train each candidate on the data
the last ``kedro run --pipelines=dlrm`` exported, and print a table sorted by the kept
epoch's validation AUC (the test figures are printed beside it, never used to choose).

Run the whole pipeline once first (it generates and exports the data), then:
``python scripts/dlrm_sweep.py`` (each candidate: ``kedro run --pipelines=dlrm
--from-nodes=dlrm.training.dlrm_spec`` with its overrides in
``conf/local/parameters_dlrm_sweep.yml``, removed afterwards; ~2-3 min on 2 cores). Every run
is logged to MLflow as usual; the metrics file of each is copied to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from recsys_kedro.tuning import nest_dotted

#: Candidates: parameter overrides of conf/base/parameters_dlrm.yml (the first: the defaults).
CANDIDATES: dict[str, dict[str, object]] = {
    "defaults (dlrm, dim 16, embedding_lr 0.03, dense_lr 0.003)": {},
    "embedding_lr 0.015": {"dlrm.training.embedding_lr": 0.015},
    "embedding_lr 0.06": {"dlrm.training.embedding_lr": 0.06},
    "embedding_lr 0.12": {"dlrm.training.embedding_lr": 0.12},
    "dense_lr 0.001": {"dlrm.training.dense_lr": 0.001},
    "embedding_dim 32": {
        "dlrm.model.embedding_dim": 32,
        "dlrm.model.dense_arch_layer_sizes": [64, 32],
    },
    "dlrm_dcn": {"dlrm.model.architecture": "dlrm_dcn"},
    "dlrm_dcn, embedding_lr 0.06": {
        "dlrm.model.architecture": "dlrm_dcn",
        "dlrm.training.embedding_lr": 0.06,
    },
    "deepfm": {"dlrm.model.architecture": "deepfm"},
}

KEYS = ("val_auc", "val_auc_lift_ratio", "test_auc", "auc_lift_ratio", "best_epoch", "epochs")


SWEEP_CONF = Path("conf/local/parameters_dlrm_sweep.yml")


def run(name: str, overrides: dict[str, object], out: Path) -> dict:
    command = [
        str(Path(sys.executable).parent / "kedro"), "run", "--pipelines=dlrm",
        "--from-nodes=dlrm.training.dlrm_spec",
    ]  # fmt: skip
    print(f"{name}: {overrides or 'the defaults'}", flush=True)
    SWEEP_CONF.write_text(yaml.safe_dump(nest_dotted(overrides)) if overrides else "{}\n")
    try:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    finally:
        SWEEP_CONF.unlink()
    target = out / f"{len(list(out.glob('*.json'))):02d}.json"
    shutil.copy("data/08_reporting/dlrm_metrics.json", target)
    return json.loads(target.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/08_reporting/dlrm_sweep", type=Path)
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, overrides in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        metrics = run(name, overrides, args.out)
        rows.append({"candidate": name, **{k: metrics[k] for k in KEYS}})
        print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: -r["val_auc"])
    print(f"\n{'candidate':<58} " + " ".join(f"{k:>18}" for k in KEYS))
    for row in rows:
        print(f"{row['candidate']:<58} " + " ".join(f"{row[k]:>18.4f}" for k in KEYS))
    print(f"chosen on validation: {rows[0]['candidate']}")
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
