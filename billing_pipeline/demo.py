"""`billing-pipeline demo`: the embedded default, end to end, in a local Dagster instance.

Generates demo data (once), then materializes the nightly job for every hourly window in
which a facility's 03:00 falls over several days, in order, as the schedule would. Runs are
recorded in the project-local Dagster instance, so `dagster dev` shows them afterwards.
Running the demo again reruns the same windows: nothing is posted or charged twice.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl

DEMO_START = dt.date(2026, 3, 28)  # spans Europe's DST start, a month end and Australia's DST end
# The demo prints one line per window; the full logs are in the Dagster UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
INSTANCE_CONFIG = """telemetry:
  enabled: false
run_queue:
  max_concurrent_runs: 1
"""


def ensure_dagster_home() -> Path:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(INSTANCE_CONFIG)
    return home


def run_demo(workdir: Path, days: int, contracts: int, echo: Callable[[str], None] = print) -> None:
    home = ensure_dagster_home()
    os.environ.setdefault("BILLING_GATEWAY_DECLINE_RATE", "0.02")
    import dagster as dg

    from assets.definitions import build_definitions
    from billing_pipeline.demo_data import generate
    from billing_pipeline.facility_clock import facility_days_for_date
    from billing_pipeline.inputs.load import load_inputs

    workdir = workdir.resolve()
    data, db = workdir / "data", workdir / "billing.duckdb"
    if not (data / "contracts.parquet").exists():
        echo(f"generating {contracts:,} contracts of demo data in {data} ...")
        generate(data, contracts=contracts, seed=7, start=DEMO_START, progress=True)
    facilities = load_inputs(data).facilities
    dates = [DEMO_START + dt.timedelta(days=n) for n in range(days)]
    windows = (pl.concat([facility_days_for_date(facilities, d) for d in dates])
               .group_by("partition_key").agg(pl.col("run_at").min(), pl.len().alias("facility_days"))
               .sort("run_at"))
    defs = build_definitions(str(data), str(db))
    job = defs.resolve_job_def("nightly_facility_cycle")
    instance = dg.DagsterInstance.get()
    echo(f"running {windows.height} hourly windows ({days} business days from {DEMO_START}) "
         f"in the Dagster instance at {home}")
    started = time.perf_counter()
    blocked = []
    for row in windows.iter_rows(named=True):
        result = job.execute_in_process(partition_key=row["partition_key"], instance=instance, raise_on_error=False,
                                        run_config=QUIET)
        failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
        errors = [e.check_name for e in failed if e.severity == dg.AssetCheckSeverity.ERROR]
        warned = [e.check_name for e in failed if e.severity != dg.AssetCheckSeverity.ERROR]
        if errors:
            blocked.append(row["partition_key"])
            status = f"BLOCKED by {', '.join(errors)}: dues posted, no one charged"
        elif not result.success:
            status = "FAILED (see the run in the Dagster UI)"
        else:
            status = "ok" + (f" (held: {', '.join(warned)})" if warned else "")
        echo(f"  window {row['partition_key']} UTC: {row['facility_days']} facility-days ... {status}")
    echo(f"done in {time.perf_counter() - started:.0f} s\n")
    # The daily full audit, as its schedule would run it: every customer, every key.
    audit = defs.resolve_job_def("ledger_audit").execute_in_process(instance=instance, raise_on_error=False,
                                                                   run_config=QUIET)
    problems = {k: v for e in audit.get_asset_check_evaluations() for k, v in e.metadata.items()
                if not e.passed and not k.endswith("_sample") and v.value}
    with duckdb.connect(str(db), read_only=True) as conn:
        echo(summary(conn, dates))
    echo(f"\nledger audit (job ledger_audit, table ledger_audits): "
         f"{'balanced, no key twice' if audit.success and not problems else problems or 'FAILED'}")
    echo(f"""
Where to look next:
  * the Dagster UI with these runs, the asset graph and the checks:
      DAGSTER_HOME={home} {Path(sys.executable).with_name("dagster")} dev -w workspace.yaml
    (from the repository root; then open http://127.0.0.1:3000)
  * the analysts' database: {db} (open it read-only any time, also during a run):
      {sys.executable} -c "import duckdb; print(duckdb.connect('{db}', read_only=True).sql('SELECT kind, count(*), sum(amount_cents) FROM ledger GROUP BY kind'))"
  * run a day from the command line: billing-pipeline run --data {data} --db {db} --date {dates[-1]}""")


def summary(conn: duckdb.DuckDBPyConnection, dates: list[dt.date]) -> str:
    """A per-day table of what the nightly cycle did."""
    rows = conn.execute("""
        WITH days AS (SELECT unnest(?::DATE[]) AS business_date)
        SELECT d.business_date,
          (SELECT count(*) FROM dues_postings p WHERE p.business_date = d.business_date) AS posted,
          (SELECT count(*) FROM dues_posting_errors e WHERE e.business_date = d.business_date) AS dues_errors,
          (SELECT count(*) FROM billable_customers b WHERE b.business_date = d.business_date) AS billable,
          (SELECT count(*) FROM billable_customers b WHERE b.business_date = d.business_date
             AND list_contains(b.reasons, 'retry')) AS retries,
          (SELECT count(*) FROM sweep_candidates s WHERE s.business_date = d.business_date) AS sweeps,
          (SELECT count(*) FROM billable_customers b WHERE b.business_date = d.business_date
             AND b.hold_reason IS NOT NULL) AS held,
          (SELECT count(*) FILTER (WHERE outcome = 'approved') FROM billing_attempts a
             WHERE a.business_date = d.business_date) AS approved,
          (SELECT count(*) FILTER (WHERE outcome = 'declined') FROM billing_attempts a
             WHERE a.business_date = d.business_date) AS declined,
          (SELECT count(*) FILTER (WHERE outcome = 'error') FROM billing_attempts a
             WHERE a.business_date = d.business_date) AS gateway_errors,
          (SELECT coalesce(-sum(amount_cents), 0) FROM ledger l WHERE l.business_date = d.business_date
             AND l.kind = 'billing_payment') AS collected_cents
        FROM days d ORDER BY 1""", [dates]).fetchall()
    header = ["date", "posted", "dues err", "billable", "retries", "sweeps", "held", "approved", "declined",
              "gw errors", "collected"]
    lines = ["  ".join(f"{h:>10}" for h in header)]
    for r in rows:
        values = [str(r[0])] + [f"{v:,}" for v in r[1:-1]] + [f"${r[-1] / 100:,.2f}"]
        lines.append("  ".join(f"{v:>10}" for v in values))
    return "\n".join(lines)
