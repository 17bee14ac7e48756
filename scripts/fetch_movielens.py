"""Extract MovieLens-100K from the recbole wheel that ``make setup`` downloaded.

The ``recbole`` wheel on the package index ships ML-100K as RecBole atomic files
(``ml-100k.inter``, ``ml-100k.user``, ``ml-100k.item``). Nothing is downloaded at run
time; this script only unzips what pip fetched.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

MEMBER_DIR = "recbole/dataset_example/ml-100k/"
FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
EXPECTED_INTERACTIONS = 100_000


def extract(wheel_dir: Path, out: Path) -> None:
    wheels = sorted(wheel_dir.glob("recbole-*.whl"))
    if not wheels:
        sys.exit(
            f"no recbole wheel in {wheel_dir}: run `make setup` (it runs pip download recbole)"
        )
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as zf:
        for name in FILES:
            target = out / name
            target.write_bytes(zf.read(MEMBER_DIR + name))
    with open(out / "ml-100k.inter", encoding="utf-8") as f:
        n = sum(1 for _ in f) - 1  # header line
    if n != EXPECTED_INTERACTIONS:
        sys.exit(f"{out / 'ml-100k.inter'} has {n} interactions, expected {EXPECTED_INTERACTIONS}")
    print(f">> MovieLens-100K: {n} interactions in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wheel-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    extract(args.wheel_dir, args.out)


if __name__ == "__main__":
    main()
