"""Money is integer cents. A percentage is applied with rounding half away from zero."""

from __future__ import annotations

import polars as pl

PERCENT_SCALE = 10_000  # percent to millionths of the amount: 4 decimal places of percent


def percent_of(amount_cents: pl.Expr, percent: pl.Expr) -> pl.Expr:
    """`percent` % of `amount_cents`, rounded half away from zero, in whole cents (Int64)."""
    millionths = (percent * PERCENT_SCALE).round(0).cast(pl.Int64)
    product = amount_cents.cast(pl.Int64) * millionths
    magnitude = (product.abs() + 500_000) // 1_000_000
    return (pl.when(product < 0).then(-magnitude).otherwise(magnitude)).cast(pl.Int64)
