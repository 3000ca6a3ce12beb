"""Pre-billing checks (SPEC 1.6): duplicate contracts, recurring dues with no payment method,
and whether the flagged share is large enough to block a window's billing.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from billing_pipeline.rules.contract_status import IN_EFFECT

DEFAULT_BLOCK_SHARE = 0.02


def usable_payment_methods(payment_methods: pl.LazyFrame, customer_days: pl.LazyFrame) -> pl.LazyFrame:
    """customer_id, business_date -> the default method if not removed and not expired on D.

    With several defaults (a data slip), the highest payment_method_id is taken, deterministically.
    `customer_days` holds each (customer_id, business_date) once.
    """
    # Keyed by the customer-day's row number: at 8M customers, finding the few with several
    # usable defaults by an integer costs 0.1 s where grouping by the customer_id string cost 1.5 s.
    usable = (
        payment_methods.filter(pl.col("is_default") & ~pl.col("removed"))
        .join(customer_days.select("customer_id", "business_date").with_row_index("_day"), on="customer_id", how="inner")
        .filter(NOT_EXPIRED)
        .with_columns(pl.col("_day").is_duplicated().alias("_several"))
    ).collect().lazy()
    return one_default_each(usable, "_day")


def usable_payment_methods_on(payment_methods: pl.LazyFrame, business_date: dt.date) -> pl.LazyFrame:
    """`usable_payment_methods` of every customer on one date (a batch of every facility): the
    methods of customers no step asks about come along, unjoined. At 10M contracts, joining 9M
    methods to 8M customer-days cost 2.5 s. The few customers with several defaults are found
    by comparing neighbours in an export sorted by customer (0.05 s), else by the hash of their
    id (1 s; told apart by the id itself among those few)."""
    usable = (
        payment_methods.filter(pl.col("is_default") & ~pl.col("removed"))
        .with_columns(pl.lit(business_date, pl.Date).alias("business_date"))
        .filter(NOT_EXPIRED)
    ).collect()
    ids = usable.get_column("customer_id")
    if ids.is_sorted():
        several = (ids == ids.shift(1)).fill_null(False) | (ids == ids.shift(-1)).fill_null(False)
    else:
        several = ids.hash().is_duplicated()
    return one_default_each(usable.with_columns(several.alias("_several")).lazy(), "customer_id")


NOT_EXPIRED = pl.col("expires_on").is_null() | (pl.col("business_date") <= pl.col("expires_on"))


def one_default_each(usable: pl.LazyFrame, customer_day: str) -> pl.LazyFrame:
    """Of the rows flagged `_several` (maybe several usable defaults for one `customer_day`), the
    highest payment_method_id of each."""
    several = usable.filter(pl.col("_several"))
    chosen = several.filter(pl.col("payment_method_id") == pl.col("payment_method_id").max().over(customer_day))
    return pl.concat([usable.filter(~pl.col("_several")), chosen]).select(
        "customer_id", "business_date", "payment_method_id", pl.col("kind").alias("payment_kind"), "token")


def duplicate_contracts(statuses: pl.LazyFrame, customers: pl.LazyFrame) -> pl.LazyFrame:
    """A customer with two or more contracts in effect on D for the same plan.

    `statuses`: business_date, contract_id, customer_id, plan_id, status (contracts of the days).
    Reported under the customer's home facility.
    """
    keys = ["business_date", "customer_id", "plan_id"]
    in_effect = statuses.filter(pl.col("status").is_in(IN_EFFECT)).select(*keys, "contract_id")
    # Lists are built only for the few groups that have two or more contracts.
    doubled = in_effect.group_by(keys).len().filter(pl.col("len") >= 2).drop("len")
    return (
        in_effect.join(doubled, on=keys, how="semi")
        .group_by(keys).agg(pl.col("contract_id").sort().alias("contract_ids"))
        .join(customers.select("customer_id", "facility_id"), on="customer_id", how="inner")
        .select("business_date", "facility_id", "customer_id", "plan_id", "contract_ids")
        .sort("facility_id", "customer_id", "plan_id")
    )


def recurring_dues_without_payment_method(statuses: pl.LazyFrame, customers: pl.LazyFrame,
                                          usable: pl.LazyFrame) -> pl.LazyFrame:
    """Contracts in effect with dues above 0 whose customer has no usable payment method on D.

    `statuses` carries amount_cents (the contract's dues).
    """
    return (
        statuses.filter(pl.col("status").is_in(IN_EFFECT) & (pl.col("amount_cents") > 0))
        .join(customers.select("customer_id", "facility_id"), on="customer_id", how="inner")
        .join(usable, on=["customer_id", "business_date"], how="anti")
        .select("business_date", "facility_id", "customer_id", "contract_id")
        .sort("facility_id", "customer_id", "contract_id")
    )


def billing_blocks(candidates: pl.LazyFrame, flagged: pl.LazyFrame, facility_days: pl.LazyFrame,
                   max_share: float, neighbours: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Per facility-day: does its window block billing?

    The share is flagged customers among those who would be billed that day before holds, over
    the window's (partition_key) facility-days of that business date: a window holds two dates
    when facilities 24 hours apart share its UTC hour, and `billing-pipeline run` (a date at a
    time) must decide as the Dagster partition does. No one to bill: no block.
    `neighbours`: partition_key, business_date, billable_customers, flagged_customers of the
    windows' facility-days outside the batch (a batch of one facility), counted in the share.
    """
    per_day = (
        candidates.select("business_date", "facility_id", "customer_id")
        .join(flagged.select("business_date", "customer_id", pl.lit(1).alias("flag")).unique(),
              on=["business_date", "customer_id"], how="left")
        .group_by("business_date", "facility_id")
        .agg(pl.len().alias("billable_customers"), pl.col("flag").sum().alias("flagged_customers"))
    )
    days = (
        facility_days.select("business_date", "facility_id", "partition_key")
        .join(per_day, on=["business_date", "facility_id"], how="left")
        .with_columns(pl.col("billable_customers", "flagged_customers").fill_null(0).cast(pl.Int64))
    )
    counted = days.select("partition_key", "business_date", "billable_customers", "flagged_customers")
    if neighbours is not None:
        counted = pl.concat([counted, neighbours.select(counted.collect_schema().names())
                            .cast({"billable_customers": pl.Int64, "flagged_customers": pl.Int64})])
    window = counted.group_by("partition_key", "business_date").agg(
        pl.col("billable_customers").sum().alias("window_billable"),
        pl.col("flagged_customers").sum().alias("window_flagged"))
    share = pl.when(pl.col("window_billable") > 0).then(
        pl.col("window_flagged") / pl.col("window_billable")).otherwise(0.0)
    return (
        days.join(window, on=["partition_key", "business_date"])
        .with_columns(share.alias("window_flagged_share"), pl.lit(max_share).alias("max_share"))
        .with_columns((pl.col("window_flagged_share") > pl.col("max_share")).alias("blocked"))
        .sort("facility_id")
    )
