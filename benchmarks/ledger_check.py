"""The ledger check after a window against the daily full audit, as the ledger grows.

    .venv/bin/python -m benchmarks.ledger_check --db WAREHOUSE --data DATA [--months 10]

WAREHOUSE is a first night's warehouse (`benchmarks.run --keep-db` prints its path); it is
copied, never changed. The copy's ledger is timed as it is, then grown by `--months` earlier
months of history (the night's entries again, dates one month earlier each, keys of their own,
balances moved to match), and timed again: `ledger_problems` for one Dagster window (the
largest of the date), for every facility-day of the date, and in full (the daily audit). The
history is a copy, not a billing simulation: its periods and payments are not all consistent
with the rest of the warehouse, so the checks may report problems; the times are what matter.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import polars as pl

from benchmarks.common import match_ledger_state
from billing_pipeline.facility_clock import facility_days_for_date
from billing_pipeline.inputs.load import load_inputs
from billing_pipeline.warehouse.ledger import ledger_problems
from billing_pipeline.warehouse.store import create_schema


def timings(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame, window: pl.DataFrame) -> dict[str, float]:
    out = {"ledger_rows": conn.execute("SELECT count(*) FROM ledger").fetchall()[0][0]}
    for label, scope in [("window", window), ("date", days), ("full_audit", None)]:
        started = time.perf_counter()
        ledger_problems(conn, scope)
        out[f"{label}_s"] = round(time.perf_counter() - started, 2)
    return out


def grow(conn: duckdb.DuckDBPyConnection, months: int) -> None:
    for k in range(1, months + 1):
        conn.execute(f"""
            INSERT INTO ledger SELECT entry_id || '|h{k}', business_date - INTERVAL {k} MONTH, facility_id,
                   customer_id, kind, amount_cents, contract_id, bill_date - INTERVAL {k} MONTH,
                   idempotency_key || '|h{k}', product_id, posted_at, period_end - INTERVAL {k} MONTH,
                   series_from - INTERVAL {k} MONTH
            FROM ledger WHERE entry_id NOT LIKE '%|h%'""")
    # The history's facility-days ran, as in a real warehouse (the check finds entries of days that did not).
    conn.execute("""INSERT INTO processed_days (facility_id, business_date)
                    SELECT DISTINCT facility_id, business_date FROM ledger ANTI JOIN processed_days USING (facility_id, business_date)""")
    match_ledger_state(conn)
    conn.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--months", type=int, default=10)
    args = parser.parse_args()
    days = facility_days_for_date(load_inputs(args.data).facilities,
                                  duckdb.connect(str(args.db), read_only=True)
                                  .execute("SELECT max(business_date) FROM processed_days").fetchall()[0][0])
    largest = days.group_by("partition_key").len().sort("len", "partition_key").row(-1)[0]
    window = days.filter(pl.col("partition_key") == largest)
    copy = Path(tempfile.mkdtemp(prefix="bench-ledger-")) / "warehouse.duckdb"
    shutil.copyfile(args.db, copy)
    try:
        with duckdb.connect(str(copy)) as conn:
            create_schema(conn)  # a warehouse from an older version gets the state tables the checks read
            print(f"window {largest}: {window.height} facility-days; date: {days.height}")
            print("as the first night left it:", timings(conn, days, window), flush=True)
            grow(conn, args.months)
            print(f"with {args.months} months of history:", timings(conn, days, window))
    finally:
        shutil.rmtree(copy.parent)


if __name__ == "__main__":
    main()
