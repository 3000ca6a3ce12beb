"""Diagnostic: where the dues rules spend their time, step by step, with the package's own functions.

    .venv/bin/python -m benchmarks.dues_stages --size 1000000 [--result out.json]

Same inputs as the cycle benchmark (benchmarks/data/<size>, business date 2026-03-28, empty ledger).
Times the Night's frames the dues step reads (contracts with status on D, duplicates), then
`rules.dues.data_errors`, `rules.dues.due_periods` (bill-date windows, explosion, status on each
bill date, periods; it materializes its own stages) and the three frames of `rules.dues.post_dues`
collected as `cycle.post_dues` collects them. Nothing here re-implements a rule: it calls them.
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
    args = parser.parse_args()

    import polars as pl

    from billing_pipeline.night import Night
    from billing_pipeline.facility_clock import facility_days_for_date
    from billing_pipeline.inputs.load import load_inputs
    from billing_pipeline.rules import dues

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
        timed("night.timeline (+changes)", lambda: night.timeline)
        processed = timed("night.contracts (status on D)", lambda: night.contracts).lazy()
        duplicates = timed("night.duplicates", lambda: night.duplicates).lazy()
        last = pl.LazyFrame(schema={"contract_id": pl.String, "last_bill_date": pl.Date, "paid_through": pl.Date,
                                    "first_period_date": pl.Date, "posted_from": pl.Date})  # empty ledger
        timeline = night.timeline.lazy()
        timed("data_errors", lambda: dues.data_errors(processed, duplicates).collect())
        timed("due_periods (periods + too many)", lambda: pl.collect_all(list(dues.due_periods(
            processed.filter(pl.col("plan_known")), last, timeline))))
        timed("post_dues (3 frames, as cycle.post_dues)", lambda: {
            name: frame.collect() for name, frame in dues.post_dues(processed, last, timeline, duplicates).items()})

    from benchmarks.run import code_version

    result = {"size": args.size, "seconds": times, "rows": rows, "peak_rss_bytes": sampler.peak,
              "polars": pl.__version__, "code": code_version()}
    if args.result:
        write_json(args.result, result)


if __name__ == "__main__":
    main()
