"""Worker: charge throughput through `charging.run_charges` against the SimulatedGateway.

Each configuration sends N synthetic requests (3% of tokens decline, none error, so no retry
backoff skews the rate) through `run_charges` with a fresh gateway state file and a fresh
warehouse (the package's schema). `record` is what `cycle.charge` does with each batch,
`cycle.record_outcomes`: one transaction that inserts the outcomes into `billing_attempts` and
posts the approved ones to the ledger. Throughput = N / wall time of `run_charges`; the ceiling is
max_in_flight / latency. Two controls locate the cost when the target is missed: the same run
with a no-op `record`, and latency 0 (the CPU cost of a charge with nothing to wait for).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_json

DAY = dt.date(2026, 3, 28)
# max_in_flight:batch_size:charges: the 64 and 256 in flight, and the defaults
DEFAULT_CONFIGS = "64:64:6400,256:64:25600,8000:2000:400000"


def build(n: int):
    import polars as pl

    i = pl.int_range(1, n + 1, eager=True)
    frame = pl.DataFrame({"i": i}).select(
        pl.format("bill:CU{}:{}", pl.col("i").cast(pl.String).str.zfill(8), pl.lit(str(DAY))).alias("idempotency_key"),
        pl.lit(DAY).alias("business_date"),
        pl.format("F{}", ((pl.col("i") % 1000) + 1).cast(pl.String).str.zfill(3)).alias("facility_id"),
        pl.format("CU{}", pl.col("i").cast(pl.String).str.zfill(8)).alias("customer_id"),
        pl.format("PM{}", pl.col("i").cast(pl.String).str.zfill(8)).alias("payment_method_id"),
        pl.when(pl.col("i") % 33 == 0).then(pl.lit("decline_insufficient_funds"))
        .otherwise(pl.format("tok_{}", pl.col("i"))).alias("token"),
        (4999 + (pl.col("i") % 7) * 100).cast(pl.Int64).alias("amount_cents"),
        pl.when(pl.col("i") % 4 == 0).then(150).otherwise(0).cast(pl.Int64).alias("surcharge_cents"),
        pl.lit("SURCHARGE").alias("surcharge_product_id"),
    )
    return frame.with_columns((pl.col("amount_cents") + pl.col("surcharge_cents")).alias("charge_cents"))


def measure(n: int, max_in_flight: int, batch_size: int, latency_s: float, record_mode: str, workdir: Path) -> dict:
    import duckdb
    import polars as pl

    from billing_pipeline.charging import ChargeSettings, run_charges
    from billing_pipeline.cycle import record_outcomes
    from billing_pipeline.gateway import SimulatedGateway
    from billing_pipeline.warehouse.store import CONNECTION_CONFIG, create_schema

    tag = f"n{n}-m{max_in_flight}-b{batch_size}-l{latency_s}-{record_mode}"
    requests = build(n)
    conn = duckdb.connect(str(workdir / f"{tag}.duckdb"), config=CONNECTION_CONFIG)
    create_schema(conn)
    gateway = SimulatedGateway(workdir / f"{tag}.gateway.sqlite", latency_s=latency_s)
    record_times: list[float] = []

    def record(outcomes: pl.DataFrame) -> None:  # what cycle.charge records
        started = time.perf_counter()
        record_outcomes(conn, outcomes)
        record_times.append(time.perf_counter() - started)

    def no_record(outcomes: pl.DataFrame) -> None:
        record_times.append(0.0)

    settings = ChargeSettings(max_in_flight=max_in_flight, batch_size=batch_size)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    sent = run_charges(requests, gateway, settings, record if record_mode == "duckdb" else no_record)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    gateway.close()
    stored = conn.execute("SELECT count(*) FROM billing_attempts").fetchone()[0]
    conn.close()
    limit = max_in_flight / latency_s if latency_s > 0 else None
    rate = sent / wall
    return {
        "n": n, "max_in_flight": max_in_flight, "batch_size": batch_size, "latency_s": latency_s, "record": record_mode,
        "sent": sent, "stored_attempts": stored, "wall_s": wall, "charges_per_s": rate,
        "limit_per_s": limit, "pct_of_limit": 100 * rate / limit if limit else None,
        "record_batches": len(record_times), "record_total_s": sum(record_times),
        "record_max_s": max(record_times, default=0.0), "flush_every": settings.flush_every,
        "cpu_s": cpu, "cpu_us_per_charge": 1e6 * cpu / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="max_in_flight:batch_size:charges, comma-separated")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--no-controls", action="store_true")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()

    configs = [(int(n), int(m), int(b), args.latency, "duckdb")
               for m, b, n in (c.split(":") for c in args.configs.split(","))]
    if not args.no_controls:
        n, m, b, latency, _ = configs[-1]
        configs += [(n, m, b, latency, "none"), (n, m, b, 0.0, "duckdb")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-charges-") as tmp:
        for n, m, b, latency, mode in configs:
            r = measure(n, m, b, latency, mode, Path(tmp))
            pct = f"{r['pct_of_limit']:.1f}% of {r['limit_per_s']:.0f}/s" if r["limit_per_s"] else "no limit (latency 0)"
            print(f"charges n={n} in_flight={m} batch={b} latency={latency}s record={mode}: "
                  f"{r['charges_per_s']:.0f}/s, {pct}; record {r['record_total_s']:.2f}s in {r['record_batches']} "
                  f"batches (max {r['record_max_s'] * 1000:.0f} ms); cpu {r['cpu_us_per_charge']:.0f} us/charge",
                  flush=True)
            results.append(r)
    write_json(args.result, {"runs": results})


if __name__ == "__main__":
    main()
