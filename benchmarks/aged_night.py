"""A steady night on a warehouse with months of daily history, against the same night without it.

    .venv/bin/python -m benchmarks.aged_night --db WAREHOUSE --data DATA [--days 90] [--out DIR]

WAREHOUSE is a first night's warehouse, date D (`benchmarks.run --keep-db`, or `benchmarks.cycle
--db FILE`); it is copied, never changed. Night D+1 runs on the copy (a steady night: its rows
are one day of history as it really accrues: the status changes, the day's periods, billable
customers, charges and ledger entries). A second copy then gets `--days` more such days before D:
D+1's rows again, dated 2, 3, ... days earlier, keys of their own, balances moved to match.
Night D+2 runs on both, each in its own process (`benchmarks.cycle --next-night`), and the step
times are printed side by side. The history is a copy, not a billing simulation (customers
declined on D+1 are declined every day of it, their balances grow): what it measures is what
months of rows cost the queries that read the past.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from benchmarks.common import gib, match_ledger_state, run_child, write_json

HISTORY = ["processed_days", "contract_status_log", "due_contracts", "dues_postings", "billable_customers",
           "sweep_candidates", "charge_requests", "billing_attempts", "ledger"]
KEYS = {"entry_id", "idempotency_key"}  # unique per row: each day's copy gets its own


def grow(conn: duckdb.DuckDBPyConnection, template: dt.date, days: int) -> dict[str, int]:
    """Adds `days` copies of the template day's rows to every HISTORY table, dated 2, 3, ...,
    days + 1 days before it (the template is the day after the first night: before the first night)."""
    added = {}
    for table in HISTORY:
        columns = conn.execute(f"DESCRIBE {table}").fetchall()
        select = []
        for name, kind, *_ in columns:
            if kind == "DATE":
                select.append(f"({name} - to_days(CAST(r.k AS INTEGER)))::DATE")
            elif kind.startswith("TIMESTAMP"):
                select.append(f"{name} - to_days(CAST(r.k AS INTEGER))")
            elif name in KEYS:
                select.append(f"{name} || '|h' || r.k")
            else:
                select.append(name)
        before = conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        # Keys go in sorted, as the pipeline inserts them: the primary-key index takes them faster.
        order = next((f"ORDER BY {name}" for name, *_ in columns if name in KEYS), "")
        conn.execute(f"""
            INSERT INTO {table} SELECT {', '.join(select)}
            FROM {table} t, range(2, {days + 2}) r(k) WHERE t.business_date = $template {order}""",
                     {"template": template})
        added[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before
    match_ledger_state(conn)
    conn.execute("CHECKPOINT")
    return added


def copy_warehouse(db: Path, to: Path) -> Path:
    """The file, its writer copy and the gateway record, as `to`/warehouse.*."""
    to.mkdir(parents=True)
    for source in db.parent.glob(db.stem + ".*"):
        if source.name.endswith((".writer.owner", ".writer.lock", ".writer.holder")):
            continue  # the copy is a warehouse of its own: it owns its side files when it first writes
        shutil.copyfile(source, to / source.name.replace(db.stem, "warehouse", 1))
    return to / "warehouse.duckdb"


def next_night(db: Path, data: Path, day: dt.date, out: Path, tag: str) -> dict:
    child = run_child("benchmarks.cycle", ["--data", str(data), "--db", str(db), "--date", day.isoformat(),
                                           "--size", "0", "--next-night"], out / f".aged_{tag}.json")
    if child.returncode != 0 or child.result is None:
        raise SystemExit(f"the {tag} night failed (exit {child.returncode})")
    # The child's own sampled peak: wait4's ru_maxrss of a process forked from this one (which
    # just grew a warehouse in DuckDB) counts this process's size at the fork.
    return {"run_dates_s": child.result["run_dates_s"], "steps_s": child.result["steps_s"],
            "peak_rss_gib": gib(child.result["sampled_peak_rss_bytes"]), "summary": child.result["summary"],
            "timers": {k: v["s"] for k, v in child.result["timers"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    with duckdb.connect(str(args.db), read_only=True) as conn:
        first = conn.execute("SELECT max(business_date) FROM processed_days").fetchall()[0][0]
    template, measured = first + dt.timedelta(days=1), first + dt.timedelta(days=2)
    work = Path(tempfile.mkdtemp(prefix="bench-aged-"))
    try:
        base = copy_warehouse(args.db, work / "base")
        one_day = next_night(base, args.data, template, work, "template")
        print(f"{template} (the day copied): {one_day['run_dates_s']:.1f} s", flush=True)
        copies = {tag: copy_warehouse(base, work / tag) for tag in ("fresh", "aged")}
        writer = copies["aged"].with_name("warehouse.writer.duckdb")
        started = time.perf_counter()
        with duckdb.connect(str(writer if writer.exists() else copies["aged"])) as conn:
            added = grow(conn, template, args.days)
            ledger_rows = conn.execute("SELECT count(*) FROM ledger").fetchall()[0][0]
        grow_s = time.perf_counter() - started
        print(f"{args.days} days of history added in {grow_s:.0f} s (ledger now {ledger_rows:,} rows): {added}",
              flush=True)
        result = {"first_night": first.isoformat(), "measured_night": measured.isoformat(), "days": args.days,
                  "rows_added": added, "ledger_rows": ledger_rows, "grow_s": grow_s, "db_bytes": {}, "nights": {}}
        for tag in ("fresh", "aged"):
            result["nights"][tag] = next_night(copies[tag], args.data, measured, work, tag)
            result["db_bytes"][tag] = copies[tag].with_name("warehouse.writer.duckdb").stat().st_size
            n = result["nights"][tag]
            steps = ", ".join(f"{k} {v:.2f}" for k, v in n["steps_s"].items() if v >= 0.01)
            print(f"{measured} {tag}: {n['run_dates_s']:.1f} s, peak {n['peak_rss_gib']:.2f} GiB, "
                  f"file {gib(result['db_bytes'][tag]):.2f} GiB; {steps}", flush=True)
        fresh, aged = (result["nights"][t]["timers"] for t in ("fresh", "aged"))
        grew = sorted(((aged[k] - fresh.get(k, 0.0), k) for k in aged), reverse=True)[:12]
        print("timers that grew the most:", json.dumps({k: round(d, 2) for d, k in grew}))
        write_json(args.out / f"aged_night_{args.days}d.json", result)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
