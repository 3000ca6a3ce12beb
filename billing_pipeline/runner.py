"""Wiring for a run outside Dagster: load, validate, then the cycle day by day.

The export is loaded and validated completely before the warehouse is opened, so bad input
writes nothing. Each day's facility-days are one vectorized batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from billing_pipeline.charging import ChargeSettings
from billing_pipeline.cycle import CycleSettings, NightSummary, run_night
from billing_pipeline.facility_clock import facility_days_for_date
from billing_pipeline.gateway import SimulatedGateway
from billing_pipeline.inputs.load import load_inputs
from billing_pipeline.night import Night
from billing_pipeline.warehouse.store import Warehouse


@dataclass(frozen=True)
class RunOptions:
    gateway_state: Path | None = None
    latency_s: float = 0.0
    decline_rate: float = 0.0
    max_in_flight: int = ChargeSettings.max_in_flight
    batch_size: int = ChargeSettings.batch_size
    max_flagged_share: float = 0.02

    def cycle_settings(self) -> CycleSettings:
        return CycleSettings(max_flagged_share=self.max_flagged_share,
                             charging=ChargeSettings(max_in_flight=self.max_in_flight,
                                                     batch_size=self.batch_size))


def default_gateway_state(db: Path) -> Path:
    return Warehouse(db).gateway_record_path  # beside the file a symlinked warehouse points to


def run_dates(data: Path, db: Path, first: dt.date, last: dt.date, facility: str | None,
              options: RunOptions, echo: Callable[[str], None] = print) -> list[NightSummary]:
    inputs = load_inputs(data)
    if facility is not None and inputs.facilities.filter(pl.col("facility_id") == facility).height == 0:
        raise LookupError(f"facility {facility} is not in {data}/facilities")
    warehouse = Warehouse(db)
    warehouse.refuse_a_clash()  # before the gateway record, named by the same stem, is opened
    gateway = SimulatedGateway(options.gateway_state or warehouse.gateway_record_path, latency_s=options.latency_s,
                               decline_rate=options.decline_rate)
    summaries = []
    try:
        day = first
        while day <= last:
            night = Night(inputs, facility_days_for_date(inputs.facilities, day, facility))
            with warehouse.connect(echo=echo) as conn:
                summary = run_night(conn, night, gateway, options.cycle_settings())
            echo(describe(day, summary))
            summaries.append(summary)
            day += dt.timedelta(days=1)
    finally:
        gateway.close()
    return summaries


def describe(day: dt.date, s: NightSummary) -> str:
    line = (f"{day}: {s.facility_days} facilities, {s.dues_posted} periods posted, {s.dues_errors} dues errors, "
            f"{s.billable} billable ({s.held} held), charged {s.approved} approved / {s.declined} declined / "
            f"{s.errors} gateway errors")
    if s.blocked_facility_days:
        line += f"; BILLING BLOCKED for {len(s.blocked_facility_days)} facility-days"
    return line
