"""Write a synthetic shop event log to try the README's "Your own data" event-log example.

Users prefer two of twelve item categories; each browses 8-40 items (views), carts about a
third and buys about a fifth of them. Ids are strings, timestamps milliseconds, the log is
split over two CSV files (a glob, as logs arrive), and an item table holds each item's
categories (multi-hot), brand (categorical) and price (numeric).
Usage: ``python scripts/synthetic_event_log.py data/01_raw/shop``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

START_MS = 1_717_200_000_000  # 2024-06-01 UTC
DAY_MS = 86_400_000


def event_log(
    users: int, items: int, categories: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    item_category = rng.integers(0, categories, items)
    popularity = np.minimum(rng.zipf(1.6, items).astype(float), 50.0)
    rows = []
    for u in range(users):
        liked = rng.choice(categories, 2, replace=False)
        weight = popularity * np.where(np.isin(item_category, liked), 8.0, 0.3)
        n = int(rng.integers(8, 40))
        browsed = rng.choice(items, n, p=weight / weight.sum())
        times = np.sort(START_MS + rng.integers(0, 30 * DAY_MS, n))
        for item, t in zip(browsed, times, strict=True):
            user_id, sku = f"user-{u:05d}", f"SKU-{item:04d}"
            rows.append((user_id, sku, "view", int(t)))
            r = rng.random()
            if r < 0.35:
                rows.append((user_id, sku, "cart", int(t) + 60_000))
            if r < 0.2:
                rows.append((user_id, sku, "purchase", int(t) + 120_000))
    log = pd.DataFrame(rows, columns=["visitor_id", "sku", "event_type", "ts"])
    return log, item_table(item_category, categories, seed)


def item_table(item_category: np.ndarray, categories: int, seed: int) -> pd.DataFrame:
    """Each item's attributes: ``categories`` (its category, and for a third of the items a
    second one: ``|``-separated, a multi-hot feature), ``brand`` (one of 40, each brand
    selling in two categories: categorical) and ``price`` (log-normal by category, 5%
    missing: numeric). Its own generator, so the event log stays the same for a seed."""
    rng = np.random.default_rng(seed + 1)
    items = len(item_category)
    second = rng.integers(0, categories, items)
    tags = [
        f"cat-{c:02d}" + (f"|cat-{s:02d}" if s != c and rng.random() < 0.33 else "")
        for c, s in zip(item_category, second, strict=True)
    ]
    brand = 2 * rng.integers(0, 20, items) + (item_category % 2)
    price = np.round(np.exp(rng.normal(2.5 + 0.15 * item_category, 0.5)), 2)
    return pd.DataFrame(
        {
            "sku": [f"SKU-{i:04d}" for i in range(items)],
            "category": item_category,
            "categories": tags,
            "brand": [f"brand-{b:02d}" for b in brand],
            "price": np.where(rng.random(items) < 0.05, np.nan, price),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for events/*.csv and items.csv")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--categories", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    log, table = event_log(args.users, args.items, args.categories, args.seed)
    (args.out / "events").mkdir(parents=True, exist_ok=True)
    half = len(log) // 2
    log.iloc[:half].to_csv(args.out / "events" / "part-1.csv", index=False)
    log.iloc[half:].to_csv(args.out / "events" / "part-2.csv", index=False)
    table.to_csv(args.out / "items.csv", index=False)
    print(f"{len(log):,} events of {args.users:,} users on {args.items:,} items in {args.out}")


if __name__ == "__main__":
    main()
