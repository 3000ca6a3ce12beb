"""Worker: one full nightly cycle (`runner.run_dates`) for one business date, every facility.

Runs in its own process (started by `benchmarks.run`), so the peak RSS its parent reads with
wait4 is this run's own. The real `run_dates` runs unchanged; the step functions it calls are
wrapped in timers here, in this process only (nothing in the package is edited):

  load_validate  runner.load_inputs            read + cast + pandera-validate every table
  maintenance    cycle.maintenance             status on D, status log, status change errors
  dues           cycle.post_dues               bill dates, periods, dues errors, ledger postings
  billable       cycle.select_billable         balances, reasons, pre-billing checks, holds
  charging       cycle.charge                  charge requests, gateway, attempts + ledger
  ledger_check   ledger.ledger_problems        the ledger invariant after the run
  publish        Warehouse.publish             copy of the writer file onto the analysts' file

With --next-night it runs on the warehouse the previous night left (the first night of a fresh
warehouse logs every contract's status and posts catch-up periods; the next one is what a chain
runs every night), in a fresh process like a real nightly run.

Nested timers (`dues/query`, `billable/night.usable_methods`, ...) say where a step's time goes:
the Night's shared frames are computed lazily in the first step that needs them, and DuckDB
reads/writes are timed apart from the Polars compute. A thread samples RSS every 20 ms and keeps
the peak seen while each timer was running.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from benchmarks.common import RssSampler, write_json

TOP_STEPS = ["load_validate", "facility_days", "maintenance", "dues", "billable", "charging", "ledger_check",
             "publish"]


class Timers:
    def __init__(self, sampler: RssSampler):
        self.sampler = sampler
        self.stack: list[str] = []
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.cpu: dict[str, float] = defaultdict(float)  # process CPU time (every thread) while running

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            path = "/".join([*self.stack, name])
            self.stack.append(name)
            self.sampler.labels.append(path)
            started, cpu_started = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[path] += time.perf_counter() - started
                self.cpu[path] += time.process_time() - cpu_started
                self.calls[path] += 1
                self.stack.pop()
                self.sampler.labels.remove(path)
        return timed


def instrument(timers: Timers) -> list[str]:
    """Wraps the cycle's functions in timers; returns the names that could not be found."""
    from billing_pipeline import cycle, runner
    from billing_pipeline.night import Night
    from billing_pipeline.warehouse import ledger, store

    missing = []

    def patch(owner: Any, attr: str, name: str) -> None:
        fn = getattr(owner, attr, None)
        if fn is None:
            missing.append(f"{getattr(owner, '__name__', owner)}.{attr}")
            return
        setattr(owner, attr, timers.wrap(name, fn))

    patch(runner, "load_inputs", "load_validate")
    patch(runner, "facility_days_for_date", "facility_days")
    for attr, name in [("maintenance", "maintenance"), ("post_dues", "dues"), ("select_billable", "billable"),
                       ("charge", "charging"), ("run_charges", "gateway"), ("query", "query"),
                       ("insert", "insert"), ("replace_facility_days", "write"),
                       ("previous_runs", "previous_runs"),
                       ("status_changes_since_last_day", "status_changes_since_last_day"),
                       ("balances", "balances")]:
        patch(cycle, attr, name)
    for attr in ("ledger_problems", "post_entries", "post_new_entries", "ledger_sums", "last_posted_periods", "query"):
        patch(ledger, attr, attr if attr != "ledger_problems" else "ledger_check")
    patch(store.Warehouse, "publish", "publish")
    from billing_pipeline.inputs import load
    for attr, name in [("read_raw", "read"), ("cast_columns", "cast"), ("validate", "validate")]:
        patch(load, attr, name)
    # Every shared frame of the Night (whatever the package defines today), timed where first used.
    for attr, prop in list(vars(Night).items()):
        if not isinstance(prop, cached_property):
            continue
        wrapped = cached_property(timers.wrap(f"night.{attr}", prop.func))
        wrapped.__set_name__(Night, attr)
        setattr(Night, attr, wrapped)
    return missing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--db", type=Path, help="DuckDB file to create (default: in a fresh temp dir)")
    parser.add_argument("--date", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--next-night", action="store_true",
                        help="--db holds the previous night: run the next one on it (a steady-state night)")
    args = parser.parse_args()

    started_process = time.perf_counter()
    import duckdb
    import polars as pl

    from billing_pipeline.runner import RunOptions, run_dates
    imports_s = time.perf_counter() - started_process

    db = args.db or Path(tempfile.mkdtemp(prefix="bench-cycle-")) / "warehouse.duckdb"
    if args.next_night and not db.exists():
        raise SystemExit(f"--next-night needs the previous night's {db}")
    if not args.next_night and (db.exists() or db.with_name(db.stem + ".writer.duckdb").exists()):
        raise SystemExit(f"{db} exists: the benchmark needs a fresh DuckDB file")
    lines: list[str] = []
    with RssSampler() as sampler:
        timers = Timers(sampler)
        missing = instrument(timers)
        started, cpu_started = time.perf_counter(), time.process_time()
        summaries = run_dates(args.data, db, args.date, args.date, None,
                              RunOptions(latency_s=0.0), echo=lines.append)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    for line in lines:
        print(line, flush=True)

    top = {name: timers.seconds.get(name, 0.0) for name in TOP_STEPS}
    summary = summaries[0].__dict__ if summaries else {}
    write_json(args.result, {
        "size": args.size,
        "data": str(args.data),
        "db": str(db),
        "business_date": args.date.isoformat(),
        "run_dates_s": wall,
        "run_dates_cpu_s": cpu,
        "imports_s": imports_s,
        "steps_s": top,
        "other_s": wall - sum(top.values()),
        "timers": {path: {"s": s, "cpu_s": timers.cpu[path], "calls": timers.calls[path],
                          "peak_rss_bytes": sampler.peaks.get(path)}
                   for path, s in sorted(timers.seconds.items())},
        "sampled_peak_rss_bytes": sampler.peak,
        "uninstrumented": missing,
        "summary": summary,
        "echo": lines,
        "db_bytes": db.stat().st_size if db.exists() else None,
        "versions": {"polars": pl.__version__, "duckdb": duckdb.__version__},
        "threads": {"polars": pl.thread_pool_size(), "cpus": os.cpu_count()},
    })


if __name__ == "__main__":
    main()
