"""Diagnostic: the dues rules stage by stage vs the fused lazy plans that `cycle.post_dues` collects.

    .venv/bin/python -m benchmarks.dues_stages --size 1000000 [--result out.json]

Same inputs as the cycle benchmark (benchmarks/data/<size>, business date 2026-03-28, empty ledger).
"fused" collects the three frames of `rules.dues.post_dues` one by one, exactly as
`cycle.post_dues` does (each collect re-derives the shared subplans: windows, explosion, status
per bill date, periods); "collect_all" collects them together; "staged" materializes each stage
once (the work the three outputs really need). The gap between fused and staged is the price of
recomputing shared subplans.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

from benchmarks.common import BUSINESS_DATE, RssSampler, data_dir, write_json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--date", type=dt.date.fromisoformat, default=BUSINESS_DATE)
    parser.add_argument("--result", type=Path)
    parser.add_argument("--skip-fused", action="store_true")
    args = parser.parse_args()

    import polars as pl

    from billing_pipeline.cycle import Night
    from billing_pipeline.facility_clock import facility_days_for_date
    from billing_pipeline.inputs.load import load_inputs
    from billing_pipeline.rules import bill_dates, dues
    from billing_pipeline.rules.contract_status import ALIVE, IN_EFFECT, status_on

    times: dict[str, float] = {}
    rows: dict[str, int] = {}

    def timed(name: str, fn):
        started = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - started
        if isinstance(out, pl.DataFrame):
            rows[name] = out.height
        print(f"{name:44s} {times[name]:8.2f} s  {rows.get(name, '')}", flush=True)
        return out

    with RssSampler() as sampler:
        inputs = timed("load_inputs", lambda: load_inputs(data_dir(args.size)))
        night = Night(inputs, facility_days_for_date(inputs.facilities, args.date))
        timed("night.contracts (+timeline, changes)", lambda: night.contracts)
        timed("night.duplicates", lambda: night.duplicates)
        processed = night.contracts.drop("status")
        last = pl.DataFrame(schema={"contract_id": pl.String, "last_bill_date": pl.Date})  # empty ledger
        timeline = night.timeline.lazy()
        lazy = dues.post_dues(processed.lazy(), last.lazy(), timeline, night.duplicates.lazy())

        if not args.skip_fused:
            for name, frame in lazy.items():
                timed(f"fused collect {name}", frame.collect)
            times["fused total (3 collects)"] = sum(times[f"fused collect {n}"] for n in lazy)
            print(f"{'fused total (3 collects)':44s} {times['fused total (3 collects)']:8.2f} s", flush=True)
            timed("collect_all (3 frames together)", lambda: pl.collect_all(list(lazy.values())))

        # Staged: each stage once, materialized (mirrors rules/dues.py as of the measured commit).
        p = processed.lazy()
        ends = timed("staged ends (timeline)", lambda: timeline.filter(pl.col("status").is_in(["terminated", "concluded"]))
                     .group_by("contract_id").agg(pl.col("valid_from").min().alias("ends_on")).collect())
        windows = timed("staged windows (schedule + counts)", lambda: (
            p.filter(pl.col("plan_known")).join(last.lazy(), on="contract_id", how="left")
            .join(ends.lazy(), on="contract_id", how="left")
            .with_columns(pl.min_horizontal("business_date", pl.col("ends_on") - pl.duration(days=1)).alias("through"))
            .pipe(bill_dates.with_schedule)
            .pipe(bill_dates.with_count_between, "last_bill_date", "through", "n_dates")
            .filter(pl.col("n_dates") > 0).collect()))
        expanded = timed("staged explode bill dates", lambda: bill_dates.explode_bill_dates(
            windows.lazy().filter(pl.col("n_dates") <= dues.EXPANSION_CAP), "last_bill_date", "through").collect())
        with_status = timed("staged status on bill date (asof)",
                            lambda: status_on(timeline, expanded.lazy(), "bill_date").collect())
        periods = timed("staged periods", lambda: with_status.lazy().with_columns(
            pl.when(pl.col("status") == "active").then(pl.lit("dues"))
            .when((pl.col("status") == "frozen") & (pl.col("freeze_fee_cents") > 0)).then(pl.lit("freeze_fee"))
            .otherwise(None).alias("kind")).filter(pl.col("kind").is_not_null())
            .with_columns(pl.when(pl.col("kind") == "dues").then(pl.col("amount_cents"))
                          .otherwise(pl.col("freeze_fee_cents")).alias("amount_cents"))
            .select(dues.DUE_COLUMNS).collect())
        too_many = timed("staged too_many", lambda: pl.concat([
            periods.lazy().group_by("contract_id").agg(pl.len().cast(pl.Int64).alias("n_periods"))
            .filter(pl.col("n_periods") > dues.MAX_MISSED_PERIODS),
            windows.lazy().filter(pl.col("n_dates") > dues.EXPANSION_CAP)
            .select("contract_id", pl.col("n_dates").alias("n_periods"))]).collect())
        errors = timed("staged data_errors", lambda: dues.data_errors(p, night.duplicates.lazy()).collect())
        in_effect = timed("staged in effect today (asof)", lambda: status_on(
            timeline, p.select("contract_id", "business_date"), "business_date")
            .filter(pl.col("status").is_in(IN_EFFECT)).select("contract_id").collect())
        relevant = timed("staged relevant", lambda: pl.concat([
            in_effect.lazy(), periods.lazy().select("contract_id").unique(),
            p.filter(pl.col("exported_status").is_in(ALIVE)).select("contract_id")]).unique().collect())
        all_errors = timed("staged errors", lambda: pl.concat([
            errors.lazy().join(relevant.lazy(), on="contract_id", how="semi").select("contract_id", "error_code"),
            too_many.lazy().select("contract_id", pl.lit("too_many_missed_periods").alias("error_code"))]).collect())
        timed("staged due + postings + sorts", lambda: [
            periods.lazy().join(all_errors.lazy().filter(pl.col("error_code") != "duplicate_contract")
                                .select("contract_id").unique(), on="contract_id", how="anti")
            .sort("facility_id", "contract_id", "bill_date").collect(),
            periods.lazy().join(all_errors.lazy().select("contract_id").unique(), on="contract_id", how="anti")
            .sort("facility_id", "contract_id", "bill_date").collect()])
        times["staged total"] = sum(v for k, v in times.items() if k.startswith("staged "))
        print(f"{'staged total':44s} {times['staged total']:8.2f} s", flush=True)

    from benchmarks.run import code_version

    result = {"size": args.size, "seconds": times, "rows": rows, "peak_rss_bytes": sampler.peak,
              "polars": pl.__version__, "code": code_version()}
    if args.result:
        write_json(args.result, result)


if __name__ == "__main__":
    main()
