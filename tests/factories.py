"""Small hand-built exports for tests: one facility, a few plans, and rows the test adds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from billing_pipeline.inputs.contract import TABLES

D = dt.date


def facility(**over) -> dict:
    row = dict(facility_id="F1", name="Main", timezone="Europe/Berlin", weekly_billing_day=1, monthly_billing_day=1,
               sweep_mode="off", fixed_sweep_days=None, rolling_sweep_days=None, retry_declined_after_days=None,
               active_contracts_only=False, surcharge_enabled=False, surcharge_product_id=None,
               surcharge_percent=None, report_recipients="billing@example.org")
    row.update(over)
    return row


def plan(**over) -> dict:
    row = dict(plan_id="MONTHLY", name="Monthly", contract_type="membership", frequency="monthly",
               schedule="contract", dues_cents=5000, freeze_fee_cents=None)
    row.update(over)
    return row


def customer(customer_id="C1", **over) -> dict:
    row = dict(customer_id=customer_id, facility_id="F1", name=f"Customer {customer_id}", email=None)
    row.update(over)
    return row


def contract(contract_id="K1", **over) -> dict:
    row = dict(contract_id=contract_id, customer_id="C1", facility_id="F1", plan_id="MONTHLY", status="active",
               start_date=D(2026, 1, 1), end_date=None, first_bill_date=None, dues_cents=None)
    row.update(over)
    return row


def card(customer_id="C1", token="tok_ok", **over) -> dict:
    row = dict(payment_method_id=f"PM-{customer_id}", customer_id=customer_id, kind="card", token=token,
               is_default=True, expires_on=D(2030, 1, 1), removed=False)
    row.update(over)
    return row


def change(change_id, contract_id, kind, effective, requested=None) -> dict:
    requested = requested or dt.datetime.combine(effective, dt.time(9))
    return dict(change_id=change_id, contract_id=contract_id, kind=kind, effective_date=effective,
                requested_at=requested)


def frames(**tables: list[dict]) -> dict[str, pl.DataFrame]:
    """Every required table, with defaults for facilities, plans and customers."""
    rows = {"facilities": [facility()], "plans": [plan()], "customers": [customer()], "contracts": [contract()],
            "payment_methods": [card()]}
    rows.update(tables)
    out = {}
    for name, spec in TABLES.items():
        if not spec.required and name not in rows:
            continue
        out[name] = pl.DataFrame(rows.get(name, []), schema=spec.dtypes) if rows.get(name) \
            else pl.DataFrame(schema=spec.dtypes)
    return out


def write_export(folder: Path, fmt: str = "parquet", **tables: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames(**tables).items():
        if fmt == "csv":
            frame.write_csv(folder / f"{name}.csv", datetime_format="%Y-%m-%dT%H:%M:%S")
        else:
            frame.write_parquet(folder / f"{name}.parquet")
    return folder


def facility_days(facilities: pl.DataFrame, days: dict[str, dt.date], partition_key: str = "window") -> pl.DataFrame:
    """A batch of facility-days (facility -> business date) sharing one window, each with its
    real run instant (03:00 in the facility's time zone)."""
    from billing_pipeline.facility_clock import FACILITY_DAYS_SCHEMA, run_instant

    zones = dict(facilities.select("facility_id", "timezone").iter_rows())
    return pl.DataFrame([(f, d, partition_key, run_instant(zones[f], d)) for f, d in days.items()],
                        schema=FACILITY_DAYS_SCHEMA, orient="row")
