"""Source data for the shipped demo (module_defs/demo.yaml): ``pipekit demo-data``.

Creates ``data/demo_erp.db`` beside the definitions with customers, orders and order events;
run again to "advance" it (5% of orders updated, 1% new orders, new events), as a live ERP would.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

COUNTRIES = ["DE", "FR", "US", "GB", "JP", "BR", "IN", "ZA"]
STATUSES = ["new", "paid", "shipped", "delivered", "returned"]


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def make_demo_data(folder: Path, customers: int = 200, orders: int = 5000) -> str:
    """Create the demo ERP database, or advance it when it exists. Returns a one-line summary."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo_erp.db"
    fresh = not path.exists()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rnd = random.Random()
    con = sqlite3.connect(path)
    try:
        with con:
            if fresh:
                con.executescript(
                    """
                    CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT, created_at TEXT);
                    CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT, amount REAL,
                                         ordered_at TEXT, updated_at TEXT NOT NULL);
                    CREATE TABLE order_events (id INTEGER PRIMARY KEY AUTOINCREMENT, order_id INTEGER, kind TEXT, at TEXT);
                    """
                )
                rnd.seed(42)
                con.executemany(
                    "INSERT INTO customers VALUES (?, ?, ?, ?)",
                    [(i, f"Customer {i}", rnd.choice(COUNTRIES), _ts(now - timedelta(days=400 - i % 400))) for i in range(1, customers + 1)],
                )
                rows = []
                for i in range(1, orders + 1):
                    t = now - timedelta(minutes=rnd.randint(60, 60 * 24 * 90))
                    rows.append((i, rnd.randint(1, customers), rnd.choice(STATUSES), round(rnd.uniform(5, 500), 2), _ts(t), _ts(t)))
                con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", rows)
                con.executemany(
                    "INSERT INTO order_events (order_id, kind, at) VALUES (?, 'created', ?)", [(r[0], r[4]) for r in rows]
                )
                return f"created {path} ({customers} customers, {orders} orders)"
            n = con.execute("SELECT count(*), max(id) FROM orders").fetchone()
            count, max_id = n[0], n[1] or 0
            changed = rnd.sample(range(1, max_id + 1), k=max(1, count // 20))
            stamp = _ts(now)
            con.executemany("UPDATE orders SET status = ?, updated_at = ? WHERE id = ?", [(rnd.choice(STATUSES), stamp, i) for i in changed])
            new = [(max_id + k, rnd.randint(1, customers), "new", round(rnd.uniform(5, 500), 2), stamp, stamp) for k in range(1, max(1, count // 100) + 1)]
            con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", new)
            con.executemany(
                "INSERT INTO order_events (order_id, kind, at) VALUES (?, 'updated', ?)", [(i, stamp) for i in changed]
            )
            return f"advanced {path}: {len(changed)} orders updated, {len(new)} new"
    finally:
        con.close()
