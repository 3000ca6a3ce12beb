"""Billable customers and sweeps (SPEC 1.4), and what each is charged (SPEC 1.5).

A customer is billed at their home facility with every reason that applies, and always for the
whole balance due now. `billable_customers` lists everyone who would be billed before holds;
`hold_reason` says why someone is not charged.
"""

from __future__ import annotations

import polars as pl

from billing_pipeline.rules.money import percent_of
from billing_pipeline.rules.text import fmt

QUALIFYING_TYPES = ["membership", "program", "pass"]
REASONS = ["dues_posted", "retry", "sweep_fixed", "sweep_rolling"]
BILLABLE_COLUMNS = ["business_date", "facility_id", "customer_id", "reasons", "balance_cents", "hold_reason"]


def is_fixed_sweep_day(date: pl.Expr, sweep_days: pl.Expr) -> pl.Expr:
    """D is one of the days "1;15;31"; a day past the month's end means its last day."""
    days = sweep_days.str.split(";").list.eval(pl.element().str.strip_chars().cast(pl.Int64))
    day = date.dt.day().cast(pl.Int64)
    month_end = date == date.dt.month_end()
    return (days.list.contains(day) | (month_end & (days.list.max() > day))).fill_null(False)


BILLING_SETTINGS = ["sweep_mode", "rolling_sweep_days", "retry_declined_after_days", "active_contracts_only"]


def facility_day_settings(facility_days: pl.LazyFrame, facilities: pl.LazyFrame) -> pl.LazyFrame:
    """Each facility-day with the facility's settings that decide who is billed, and
    `fixed_sweep_today`, worked out once per facility-day rather than once per customer. Only
    these columns: the frame is joined to every customer (8M rows at the largest chains).

    facility_days: facility_id, business_date, run_at, and `sweep_from`: the first date whose
    fixed sweep day this billing makes up for (see `cycle.sweep_from`; null: D alone). A sweep day
    on which the facility did not bill (its night missed, or its billing never finished and was
    refused once a later day billed) is swept by its next billing: `fixed_sweep_today` holds when
    any day from `sweep_from` to D is a sweep day, and `fixed_sweep_day` is the latest of them
    (D on a sweep day; null if none).
    """
    d = pl.col("business_date")
    # Any 31 days in a row hold every listed day (or its month's last day): further back changes
    # nothing, and the dates to look at stay a month or two per facility-day.
    first = pl.coalesce(pl.col("sweep_from").cast(pl.Date), d).clip(lower_bound=d - pl.duration(days=62))
    sweep_today = (
        facility_days.select("facility_id", "business_date", "sweep_from")
        .join(facilities.select("facility_id", "fixed_sweep_days", "sweep_mode"), on="facility_id")
        .filter(pl.col("sweep_mode") == "fixed")
        .with_columns(pl.date_ranges(first, d).alias("_day"))
        .explode("_day")
        .filter(is_fixed_sweep_day(pl.col("_day"), pl.col("fixed_sweep_days")))
        .group_by("facility_id", "business_date")
        .agg(pl.col("_day").max().alias("fixed_sweep_day"))
    )
    return (
        facility_days.select("facility_id", "business_date", "run_at")
        .join(facilities.select("facility_id", *BILLING_SETTINGS), on="facility_id")
        .join(sweep_today, on=["facility_id", "business_date"], how="left")
        .with_columns(pl.col("fixed_sweep_day").is_not_null().alias("fixed_sweep_today"))
    )


def with_reasons(customer_days: pl.LazyFrame, due: pl.LazyFrame, last_attempts: pl.LazyFrame,
                 qualifying: pl.LazyFrame) -> pl.LazyFrame:
    """The customers with at least one reason to be billed on D (and a qualifying contract if
    the facility bills active contracts only): the only ones whose balance needs working out.
    `with_balance` then keeps those who owe something: everyone billed on D before holds.

    customer_days: customer_id + `facility_day_settings` of the home facility's day.
    due: customer_id, business_date, due_cents (dues due tonight before holds), posted_cents
    (what of it posted). last_attempts: customer_id, last_attempt_date, last_outcome (latest
    attempt before D: retries count from it), last_billed_date (rolling sweeps count from it: the
    latest attempt, or a later hold for the customer's own data that still applies,
    `cycle.rolling_holds`). qualifying: customer_id, business_date of customers with a membership /
    program / pass contract in effect on D (a row per contract will do).
    """
    d = pl.col("business_date")
    days_since = (d - pl.col("last_attempt_date")).dt.total_days()
    reasons = {
        "dues_posted": pl.col("due_cents").is_not_null(),
        "retry": pl.col("last_outcome").is_in(["declined", "error"]) & pl.col("retry_declined_after_days").is_not_null()
        & (days_since >= pl.col("retry_declined_after_days")),
        "sweep_fixed": pl.col("fixed_sweep_today"),
        "sweep_rolling": (pl.col("sweep_mode") == "rolling") & pl.col("rolling_sweep_days").is_not_null()
        & (pl.col("last_billed_date").is_null()
           | ((d - pl.col("last_billed_date")).dt.total_days() >= pl.col("rolling_sweep_days"))),
    }
    keys = ["customer_id", "business_date"]
    flags = [f"_{name}" for name in reasons]
    with_a_reason = (
        customer_days.join(due, on=keys, how="left")
        .join(last_attempts, on="customer_id", how="left")
        .with_columns(*[cond.fill_null(False).alias(flag) for flag, cond in zip(flags, reasons.values())])
        .filter(pl.any_horizontal(flags))
    )
    # Only the customers with a reason at a facility that bills active contracts only are looked
    # up among the qualifying contracts: a unique over every qualifying contract's customer cost
    # 2.6 s a night at 10M contracts.
    asked = with_a_reason.filter(pl.col("active_contracts_only")).select(keys)
    qualifies = (qualifying.select(keys).join(asked, on=keys, how="semi").unique()
                 .with_columns(pl.lit(True).alias("qualifies")))
    return (
        with_a_reason.join(qualifies, on=keys, how="left")
        .filter(~pl.col("active_contracts_only") | pl.col("qualifies").fill_null(False))
        # Each combination of reasons (16 at most) is one list, joined on its bit mask: building a
        # list per row took 2 s for 2M customers.
        .with_columns(pl.sum_horizontal([pl.col(flag).cast(pl.UInt8) * (1 << bit) for bit, flag in enumerate(flags)])
                      .cast(pl.UInt8).alias("_mask"))
        .join(reason_lists(list(reasons)), on="_mask", how="left")
        .drop(*flags, "_mask")
    )


def reason_lists(names: list[str]) -> pl.LazyFrame:
    """_mask -> reasons: the names whose bit is set, in order."""
    masks = range(1 << len(names))
    return pl.LazyFrame({"_mask": masks, "reasons": [[n for bit, n in enumerate(names) if m >> bit & 1] for m in masks]},
                        schema={"_mask": pl.UInt8, "reasons": pl.List(pl.String)})


def with_balance(candidates: pl.LazyFrame, balances: pl.LazyFrame) -> pl.LazyFrame:
    """Those of `with_reasons`' candidates who owe something once tonight's dues are in, with
    balance_cents (balances: what was really posted)."""
    before_holds = pl.col("balance_cents") + pl.col("due_cents").fill_null(0) - pl.col("posted_cents").fill_null(0)
    return (
        candidates.join(balances, on=["customer_id", "business_date"], how="left")
        .with_columns(pl.col("balance_cents").fill_null(0))
        .filter(before_holds > 0)
    )


def sweep_candidates(billable: pl.LazyFrame, day_settings: pl.LazyFrame) -> pl.LazyFrame:
    """A row per sweep reason of a billable customer, with `sweep_day`: the sweep day it is for,
    D itself, or for a fixed sweep made up after a sweep day the facility did not bill, that day
    (`facility_day_settings`' `fixed_sweep_day`)."""
    return (
        billable.with_columns(pl.col("reasons").list.set_intersection(["sweep_fixed", "sweep_rolling"]).alias("reason"))
        .explode("reason").filter(pl.col("reason").is_not_null())
        .join(day_settings.select("facility_id", "business_date", "fixed_sweep_day"),
              on=["facility_id", "business_date"], how="left")
        .select("business_date", "facility_id", "customer_id", "reason", "balance_cents",
                pl.when(pl.col("reason") == "sweep_fixed").then("fixed_sweep_day").otherwise("business_date")
                .alias("sweep_day"))
        .sort("facility_id", "customer_id")
    )


def apply_holds(billable: pl.LazyFrame, duplicate_customers: pl.LazyFrame, usable: pl.LazyFrame,
                blocks: pl.LazyFrame, charge_holds: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Why each billable customer is not charged (null: charged). `balance_cents` is what is
    posted; a customer billable only by dues held as duplicates owes nothing posted and is held
    `duplicate_contract` too, even when no duplicate is in effect on the home's date.
    `charge_holds`: (customer_id, business_date, charge_pending, billed_later) from the
    customers' other days' charges (see `cycle.charge_holds`)."""
    keys = ["customer_id", "business_date"]
    dup = duplicate_customers.select(*keys, pl.lit(True).alias("dup")).unique()
    blocked = blocks.filter(pl.col("blocked")).select("facility_id", "business_date", pl.lit(True).alias("blocked"))
    if charge_holds is None:
        charge_holds = pl.LazyFrame(schema={"customer_id": pl.String, "business_date": pl.Date,
                                            "charge_pending": pl.Boolean, "billed_later": pl.Boolean})
    hold = (
        pl.when(pl.col("dup").fill_null(False)).then(pl.lit("duplicate_contract"))
        # Billable before holds only by dues held as duplicates at a facility-day of another date
        # (a contract west of the home, or its window run before the data was fixed): nothing
        # posted is owed, and a charge of zero or less would send a credit back as a "charge".
        .when(pl.col("balance_cents") <= 0).then(pl.lit("duplicate_contract"))
        .when(pl.col("payment_method_id").is_null()).then(pl.lit("no_payment_method"))
        .when(pl.col("blocked").fill_null(False)).then(pl.lit("billing_blocked"))
        .when(pl.col("charge_pending").fill_null(False)).then(pl.lit("charge_pending"))
        .when(pl.col("billed_later").fill_null(False)).then(pl.lit("billed_later"))
        .otherwise(None)
    )
    return (
        billable.join(dup, on=keys, how="left")
        .join(usable, on=keys, how="left")
        .join(blocked, on=["facility_id", "business_date"], how="left")
        .join(charge_holds.select(*keys, "charge_pending", "billed_later"), on=keys, how="left")
        .with_columns(hold.alias("hold_reason"))
        .drop("dup", "blocked", "charge_pending", "billed_later")
    )


def charge_requests(held: pl.LazyFrame) -> pl.LazyFrame:
    """One charge per customer not on hold: the whole balance, plus a card surcharge if enabled.

    The idempotency key is the customer and business date: at most one charge a customer a day.
    """
    surcharge = pl.when(pl.col("surcharge_enabled") & (pl.col("payment_kind") == "card")).then(
        percent_of(pl.col("balance_cents"), pl.col("surcharge_percent").fill_null(0.0))).otherwise(0)
    return held.filter(pl.col("hold_reason").is_null()).select(
        fmt("bill:{}:{}", "customer_id", "business_date").alias("idempotency_key"),
        "business_date", "facility_id", "customer_id", "payment_method_id", "payment_kind", "token",
        pl.col("balance_cents").alias("amount_cents"),
        surcharge.cast(pl.Int64).alias("surcharge_cents"),
        "surcharge_product_id",
    ).sort("idempotency_key")
