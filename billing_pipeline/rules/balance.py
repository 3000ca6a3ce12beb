"""Balance due now (SPEC 1.4): the one place that adds up what a customer owes on D.

Balance due now = input charges due on or before D + ledger debits on or before D
                  - input payments paid on or before D - ledger credits on or before D.
The ledger part comes in already summed (`ledger_sums`) as two columns: entries before D, and
the dues / freeze fees posted on D. Billing entries of D itself are left out on purpose, so
that rerunning D (or resuming a killed run) bills exactly what the first run billed.
"""

from __future__ import annotations

import polars as pl


def balance_due_now(customer_days: pl.LazyFrame, charges: pl.LazyFrame, payments: pl.LazyFrame,
                    ledger_sums: pl.LazyFrame) -> pl.LazyFrame:
    """customer_id, business_date -> balance_cents (every customer of the days, 0 if nothing)."""
    keys = customer_days.select("customer_id", "business_date")
    charged = (
        keys.join(charges.select("customer_id", "amount_cents", "due_date", "posted_date"), on="customer_id")
        .filter((pl.col("due_date") <= pl.col("business_date")) & (pl.col("posted_date") <= pl.col("business_date")))
        .group_by("customer_id", "business_date").agg(pl.col("amount_cents").sum().alias("charged"))
    )
    paid = (
        keys.join(payments.select("customer_id", "amount_cents", "paid_date"), on="customer_id")
        .filter(pl.col("paid_date") <= pl.col("business_date"))
        .group_by("customer_id", "business_date").agg(pl.col("amount_cents").sum().alias("paid"))
    )
    return (
        keys.join(charged, on=["customer_id", "business_date"], how="left")
        .join(paid, on=["customer_id", "business_date"], how="left")
        .join(ledger_sums, on="customer_id", how="left")
        .select(
            "customer_id", "business_date",
            (pl.col("charged").fill_null(0) - pl.col("paid").fill_null(0)
             + pl.col("ledger_before_cents").fill_null(0) + pl.col("ledger_dues_today_cents").fill_null(0)
             ).cast(pl.Int64).alias("balance_cents"),
        )
    )
