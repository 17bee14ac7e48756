"""Click logs in the Criteo layout from the project's planted model, to try `dlrm` on files as a
user's would arrive (README, "Your own data"): one tab-separated file per day, no header, a label,
13 integer counts and 26 hexadecimal tokens per line, some fields empty.

    python scripts/write_criteo_layout.py --rows 300000 --days 3 --out data/01_raw/criteo

The labels follow the planted model of `recsys_kedro.data.click_logs` (its dense features become
counts, ``round(exp(x + 3) - 1)``, so ``log(1 + count)`` gives ``x + 3`` back where it is >= 0;
its ids become tokens).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from recsys_kedro.data.click_logs import ClickLogSpec, planted_intercept, planted_probabilities


def _tokens(feature: int, ids: np.ndarray) -> np.ndarray:
    """Stable 8-hex-digit tokens of a feature's ids (as Criteo's hashed strings look)."""
    table = {
        i: hashlib.blake2b(f"{feature}:{i}".encode(), digest_size=4).hexdigest()
        for i in np.unique(ids)
    }
    return np.array([table[i] for i in ids])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--missing", type=float, default=0.05, help="share of empty fields")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty: pass a new folder")
    args.out.mkdir(parents=True, exist_ok=True)
    spec = ClickLogSpec.from_params(
        {"rows": args.rows, "cardinalities": [3, 10, 20, 50, 100, 1000] * 4 + [5000, 20000],
         "multi_hot": [1] * 26, "seed": args.seed}
    )  # fmt: skip
    intercept = planted_intercept(spec)
    rng = np.random.default_rng(args.seed)
    for day, row_ids in enumerate(np.array_split(np.arange(args.rows), args.days)):
        cols = planted_probabilities(spec, row_ids, intercept)
        labels = cols["label"]
        counts = np.rint(np.expm1(np.maximum(cols["dense"].astype(np.float64) + 3, 0)))
        fields = [labels.astype(str)]
        fields += [counts[:, i].astype(np.int64).astype(str) for i in range(spec.num_dense)]
        fields += [_tokens(j, cols[f"sparse_{j}"]) for j in range(spec.num_sparse)]
        table = np.stack(fields, axis=1).astype(object)
        table[:, 1:][rng.random(table[:, 1:].shape) < args.missing] = ""
        path = args.out / f"day_{day}.tsv"
        path.write_text("\n".join("\t".join(row) for row in table) + "\n")
        print(f"{path}: {len(row_ids):,} lines, click rate {labels.mean():.3f}")


if __name__ == "__main__":
    main()
