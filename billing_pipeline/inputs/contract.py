"""The input data contract (SPEC section 3) as pandera models, one per table.

A model states the column types the loader casts to, and the checks a structurally valid export
passes: enum values, ranges, unique keys, time zones. Values that are valid for the schema but
wrong for billing (a contract whose plan does not exist, negative dues) are not checked here:
they are per-row dues posting errors (rules/dues.py), so one bad record never stops a chain.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

CONTRACT_TYPES = ["membership", "program", "pass", "other"]
FREQUENCIES = ["weekly", "biweekly", "monthly", "quarterly", "yearly"]
SCHEDULES = ["facility", "contract"]
CONTRACT_STATUSES = ["pending", "active", "frozen", "terminated", "concluded"]
SWEEP_MODES = ["off", "fixed", "rolling"]
PAYMENT_KINDS = ["card", "ach"]
CHANGE_KINDS = ["freeze", "thaw", "terminate"]
PAYMENT_CHANNELS = ["terminal", "signup", "manual"]
CERTIFICATION_STATUSES = ["active", "lapsed", "dropped"]
APPLICATION_STATUSES = ["submitted", "approved", "active", "rejected"]

TIME_ZONES = sorted(zoneinfo.available_timezones())
SWEEP_DAYS_PATTERN = r"^\s*(0?[1-9]|[12][0-9]|3[01])\s*(;\s*(0?[1-9]|[12][0-9]|3[01])\s*)*$"


class Facilities(pa.DataFrameModel):
    facility_id: str = pa.Field(unique=True)
    name: str
    timezone: str = pa.Field(isin=TIME_ZONES)
    weekly_billing_day: pl.Int64 = pa.Field(ge=1, le=7)
    monthly_billing_day: pl.Int64 = pa.Field(ge=1, le=31)
    sweep_mode: str = pa.Field(isin=SWEEP_MODES)
    fixed_sweep_days: str = pa.Field(nullable=True, str_matches=SWEEP_DAYS_PATTERN)
    rolling_sweep_days: pl.Int64 = pa.Field(nullable=True, ge=1)
    retry_declined_after_days: pl.Int64 = pa.Field(nullable=True, ge=0)
    active_contracts_only: bool
    surcharge_enabled: bool
    surcharge_product_id: str = pa.Field(nullable=True)
    surcharge_percent: pl.Float64 = pa.Field(nullable=True, ge=0, le=100)
    report_recipients: str = pa.Field(nullable=True)


class Plans(pa.DataFrameModel):
    plan_id: str = pa.Field(unique=True)
    name: str
    contract_type: str = pa.Field(isin=CONTRACT_TYPES)
    frequency: str = pa.Field(isin=FREQUENCIES)
    schedule: str = pa.Field(isin=SCHEDULES)
    dues_cents: pl.Int64
    freeze_fee_cents: pl.Int64 = pa.Field(nullable=True)


class Customers(pa.DataFrameModel):
    customer_id: str = pa.Field(unique=True)
    facility_id: str
    name: str
    email: str = pa.Field(nullable=True)


class Contracts(pa.DataFrameModel):
    contract_id: str = pa.Field(unique=True)
    customer_id: str
    facility_id: str
    plan_id: str
    status: str = pa.Field(isin=CONTRACT_STATUSES)
    start_date: dt.date
    end_date: dt.date = pa.Field(nullable=True)
    first_bill_date: dt.date = pa.Field(nullable=True)
    dues_cents: pl.Int64 = pa.Field(nullable=True)


class PaymentMethods(pa.DataFrameModel):
    payment_method_id: str = pa.Field(unique=True)
    customer_id: str
    kind: str = pa.Field(isin=PAYMENT_KINDS)
    token: str
    is_default: bool
    expires_on: dt.date = pa.Field(nullable=True)
    removed: bool


class StatusChanges(pa.DataFrameModel):
    change_id: str = pa.Field(unique=True)
    contract_id: str
    kind: str = pa.Field(isin=CHANGE_KINDS)
    effective_date: dt.date
    requested_at: pl.Datetime


class Charges(pa.DataFrameModel):
    charge_id: str = pa.Field(unique=True)
    customer_id: str
    facility_id: str
    product_id: str
    amount_cents: pl.Int64
    posted_date: dt.date
    due_date: dt.date


class Payments(pa.DataFrameModel):
    payment_id: str = pa.Field(unique=True)
    customer_id: str
    facility_id: str
    amount_cents: pl.Int64
    paid_date: dt.date
    channel: str = pa.Field(isin=PAYMENT_CHANNELS)


class CertificationTypes(pa.DataFrameModel):
    certification_type: str = pa.Field(unique=True)
    validity_months: pl.Int64 = pa.Field(ge=1)
    renewal_fee_cents: pl.Int64 = pa.Field(ge=0)
    reminder_days_before: pl.Int64 = pa.Field(ge=0)
    grace_days: pl.Int64 = pa.Field(ge=0)


class Certifications(pa.DataFrameModel):
    certification_id: str = pa.Field(unique=True)
    member_id: str
    certification_type: str
    status: str = pa.Field(isin=CERTIFICATION_STATUSES)
    expires_on: dt.date


class Applications(pa.DataFrameModel):
    application_id: str = pa.Field(unique=True)
    member_id: str
    certification_type: str
    status: str = pa.Field(isin=APPLICATION_STATUSES)
    approved_on: dt.date = pa.Field(nullable=True)


class Members(pa.DataFrameModel):
    member_id: str = pa.Field(unique=True)
    name: str
    email: str = pa.Field(nullable=True)


@dataclass(frozen=True)
class RequiredWhen:
    """A column that may be empty only when its setting is off (SPEC 3): empty while `when`
    holds, the row is bad input."""
    column: str
    when: pl.Expr
    because: str


@dataclass(frozen=True)
class TableContract:
    name: str
    model: type[pa.DataFrameModel]
    key: str
    required: bool = True
    required_when: tuple[RequiredWhen, ...] = ()

    @property
    def schema(self) -> pa.DataFrameSchema:
        return self.model.to_schema()

    @property
    def dtypes(self) -> dict[str, pl.DataType]:
        return {name: col.dtype.type for name, col in self.schema.columns.items()}


TABLES: dict[str, TableContract] = {
    t.name: t
    for t in [
        TableContract("facilities", Facilities, "facility_id", required_when=(
            RequiredWhen("fixed_sweep_days", pl.col("sweep_mode") == "fixed", "sweep_mode is fixed"),
            RequiredWhen("rolling_sweep_days", pl.col("sweep_mode") == "rolling", "sweep_mode is rolling"),
            RequiredWhen("surcharge_product_id", pl.col("surcharge_enabled"), "surcharge_enabled is true"),
            RequiredWhen("surcharge_percent", pl.col("surcharge_enabled"), "surcharge_enabled is true"),
        )),
        TableContract("plans", Plans, "plan_id"),
        TableContract("customers", Customers, "customer_id"),
        TableContract("contracts", Contracts, "contract_id"),
        TableContract("payment_methods", PaymentMethods, "payment_method_id"),
        TableContract("status_changes", StatusChanges, "change_id"),
        TableContract("charges", Charges, "charge_id"),
        TableContract("payments", Payments, "payment_id"),
        TableContract("certification_types", CertificationTypes, "certification_type", required=False),
        TableContract("certifications", Certifications, "certification_id", required=False),
        TableContract("applications", Applications, "application_id", required=False),
        TableContract("members", Members, "member_id", required=False),
    ]
}
