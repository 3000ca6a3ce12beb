"""Bill-date arithmetic (SPEC 1.2): the one place that knows when a contract bills.

A contract's bill dates are a series: an anchor date plus k steps of days or months. Month
steps keep the anchor's intended day of month, clamped to the month's last day, so anchor 31
bills Jan 31, Feb 28 (29), Mar 31 and never drifts. Everything is Polars expressions over the
columns added by `with_schedule`, so any number of contracts is one vectorized pass.

Series columns: `anchor` (first date of the series), `step_days` (7 or 14, null for month
steps), `step_months` (1, 3 or 12, null for day steps), `anchor_day` (intended day of month),
and `extra_first` (a first_bill_date before the facility series, billed once).
"""

from __future__ import annotations

import polars as pl

from billing_pipeline.rules.text import fmt

STEP_DAYS = {"weekly": 7, "biweekly": 14}
STEP_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}


def step_columns(frequency: pl.Expr) -> list[pl.Expr]:
    """`step_days` and `step_months` of a plan frequency (the other one null)."""
    return [frequency.replace_strict(STEP_DAYS, default=None, return_dtype=pl.Int64).alias("step_days"),
            frequency.replace_strict(STEP_MONTHS, default=None, return_dtype=pl.Int64).alias("step_months")]


def one_step_after(date: pl.Expr) -> pl.Expr:
    """`date` one step of the series later (reads step_days / step_months); a month step keeps
    the day, clamped to the month's last day (Jan 31 -> Feb 28)."""
    return (pl.when(pl.col("step_days").is_not_null()).then(date + pl.duration(days=pl.col("step_days")))
            .otherwise(date.dt.offset_by(fmt("{}mo", pl.col("step_months")))))


def month_index(date: pl.Expr) -> pl.Expr:
    return date.dt.year().cast(pl.Int64) * 12 + date.dt.month().cast(pl.Int64) - 1


def days_in_month(year: pl.Expr, month: pl.Expr) -> pl.Expr:
    """Integer arithmetic only (no date construction): 28 + (m + m // 8) % 2 + 2 % m + 2 * (1 // m),
    plus one for February of a leap year."""
    base = 28 + (month + month // 8) % 2 + 2 % month + 2 * (1 // month)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    return base + ((month == 2) & leap).cast(pl.Int64)


# Every helper below adds columns in stages (with_columns after with_columns) instead of nesting
# one expression in another: Polars evaluates a nested tree's shared parts once per use, and at
# 10M contracts the nested schedule took 7.2 s where the staged one takes 3.0 s.

def with_clamped_date(frame: pl.LazyFrame, month_idx: pl.Expr, day: pl.Expr, name: str) -> pl.LazyFrame:
    """Adds `name`: the date in month `month_idx` on `day`, or the month's last day if it is shorter."""
    year, month = pl.col("_cd_mi").floordiv(12), pl.col("_cd_mi").mod(12) + 1
    return (
        frame.with_columns(month_idx.alias("_cd_mi"), day.cast(pl.Int64).alias("_cd_day"))
        .with_columns(year.alias("_cd_y"), month.alias("_cd_m"))
        .with_columns(pl.min_horizontal("_cd_day", days_in_month(pl.col("_cd_y"), pl.col("_cd_m"))).alias("_cd_d"))
        .with_columns(pl.date(pl.col("_cd_y").cast(pl.Int32), pl.col("_cd_m").cast(pl.Int8),
                              pl.col("_cd_d").cast(pl.Int8)).alias(name))
        .drop("_cd_mi", "_cd_day", "_cd_y", "_cd_m", "_cd_d")
    )


def with_facility_day(frame: pl.LazyFrame, date: str, name: str) -> pl.LazyFrame:
    """Adds `name`: the first facility billing day on or after `date`, for the plan's frequency
    (needs step_days, weekly_billing_day, monthly_billing_day)."""
    d = pl.col(date)
    weekly = d + pl.duration(days=(pl.col("weekly_billing_day") - d.dt.weekday().cast(pl.Int64)).mod(7))
    return (
        frame.with_columns(month_index(d).alias("_fd_mi"))
        .pipe(with_clamped_date, pl.col("_fd_mi"), pl.col("monthly_billing_day"), "_fd_this")
        .pipe(with_clamped_date, pl.col("_fd_mi") + 1, pl.col("monthly_billing_day"), "_fd_next")
        .with_columns(pl.when(pl.col("step_days").is_not_null()).then(weekly)
                      .when(pl.col("_fd_this") >= d).then(pl.col("_fd_this"))
                      .otherwise(pl.col("_fd_next")).alias(name))
        .drop("_fd_mi", "_fd_this", "_fd_next")
    )


# With a first_bill_date off the facility's day, the series starts one step after it, snapped to
# the facility's next billing day: shift = step - one base period (7 days or 1 month).
SHIFT_DAYS = {"weekly": 0, "biweekly": 7}
SHIFT_MONTHS = {"monthly": 0, "quarterly": 2, "yearly": 11}


def series_from() -> pl.Expr:
    """The date a contract's series counts from: its first bill date, else its start date."""
    return pl.coalesce("first_bill_date", "start_date")


def with_schedule(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Adds the series columns to contract + plan + facility rows.

    Needs: frequency, schedule, start_date, first_bill_date, weekly_billing_day,
    monthly_billing_day. The rows come back grouped by kind of schedule, not in their order:
    each kind works out only its own dates (at 10M contracts 0.7 s instead of 2.0 s for every
    branch on every row).
    """
    freq, fbd = pl.col("frequency"), pl.col("first_bill_date")
    steps = frame.with_columns(
        *step_columns(freq),
        series_from().alias("_from"),
        (pl.col("schedule") == "contract").fill_null(False).alias("_rolling"),
    ).collect().lazy()  # read by each kind below
    # Rolling: the series starts on the first bill date (or start date) and keeps its day.
    rolling = steps.filter(pl.col("_rolling")).with_columns(
        pl.col("_from").alias("anchor"), pl.col("_from").dt.day().cast(pl.Int64).alias("anchor_day"),
        pl.lit(None, pl.Date).alias("extra_first"))
    facility = (
        steps.filter(~pl.col("_rolling")).pipe(with_facility_day, "_from", "_facility_anchor")
        # first_bill_date off the facility day: it bills once, then the series one step later.
        .with_columns((fbd.is_not_null() & (pl.col("_facility_anchor") != fbd)).alias("_off_day"))
    ).collect().lazy()
    on_day = facility.filter(~pl.col("_off_day")).with_columns(
        pl.col("_facility_anchor").alias("anchor"), pl.col("monthly_billing_day").cast(pl.Int64).alias("anchor_day"),
        pl.lit(None, pl.Date).alias("extra_first"))
    off_day = (
        facility.filter(pl.col("_off_day"))
        .with_columns(freq.replace_strict(SHIFT_DAYS, default=0, return_dtype=pl.Int64).alias("_shift_days"),
                      freq.replace_strict(SHIFT_MONTHS, default=0, return_dtype=pl.Int64).alias("_shift_months"))
        .pipe(with_clamped_date, month_index(fbd) + pl.col("_shift_months"), fbd.dt.day(), "_shifted_by_months")
        .with_columns(pl.when(pl.col("step_days").is_not_null())
                      .then(fbd + pl.duration(days=pl.col("_shift_days")))
                      .otherwise(pl.col("_shifted_by_months")).alias("_shifted"))
        .pipe(with_facility_day, "_shifted", "anchor")
        .with_columns(pl.col("monthly_billing_day").cast(pl.Int64).alias("anchor_day"), fbd.alias("extra_first"))
        .drop("_shift_days", "_shift_months", "_shifted_by_months", "_shifted")
    )
    return pl.concat([rolling, on_day.drop("_facility_anchor", "_off_day"), off_day.drop("_facility_anchor", "_off_day")],
                     how="vertical").drop("_from", "_rolling")


def with_nth_bill_date(frame: pl.LazyFrame, k: str, name: str) -> pl.LazyFrame:
    """Adds `name`: the k-th date of the series (k = 0 is the anchor)."""
    by_days = pl.col("anchor") + pl.duration(days=pl.col(k) * pl.col("step_days"))
    return (
        frame.pipe(with_clamped_date, month_index(pl.col("anchor")) + pl.col(k) * pl.col("step_months"),
                   pl.col("anchor_day"), "_nth_by_months")
        .with_columns(pl.when(pl.col("step_days").is_not_null()).then(by_days)
                      .otherwise(pl.col("_nth_by_months")).alias(name))
        .drop("_nth_by_months")
    )


def with_series_count(frame: pl.LazyFrame, date: str, name: str) -> pl.LazyFrame:
    """Adds `name`: how many dates of the series (without extra_first) are on or before `date`.

    No date is built: a day series' k-th date, k = days // step, is never after `date`; a month
    series has a date in `date`'s month only a whole number of steps from the anchor's, on
    min(anchor_day, days in that month), after `date` only if that day is.
    """
    anchor, d = pl.col("anchor"), pl.col(date)
    overshoot = (pl.col("_months").mod(pl.col("step_months")) == 0) & (
        pl.min_horizontal("anchor_day", days_in_month(pl.col("_year"), pl.col("_month"))) > pl.col("_day"))
    by_months = pl.col("_months").floordiv(pl.col("step_months")) + 1 - overshoot.cast(pl.Int64)
    by_days = (d - anchor).dt.total_days().floordiv(pl.col("step_days")) + 1
    return (
        frame.with_columns((month_index(d) - month_index(anchor)).alias("_months"),
                           d.dt.year().cast(pl.Int64).alias("_year"), d.dt.month().cast(pl.Int64).alias("_month"),
                           d.dt.day().cast(pl.Int64).alias("_day"))
        .with_columns(pl.when(d.is_null() | (d < anchor)).then(0)
                      .when(pl.col("step_days").is_not_null()).then(by_days)
                      .otherwise(by_months).cast(pl.Int64).alias(name))
        .drop("_months", "_year", "_month", "_day")
    )


def with_count_between(frame: pl.LazyFrame, after: str, through: str, name: str) -> pl.LazyFrame:
    """Adds `name`: how many bill dates b have after < b <= through (after null: from the start),
    and the series positions `_lo` / `_hi` that `explode_bill_dates` uses."""
    extra, lo, hi = pl.col("extra_first"), pl.col(after), pl.col(through)
    in_window = extra.is_not_null() & (extra <= hi) & (lo.is_null() | (extra > lo))
    return (
        frame.pipe(with_series_count, after, "_lo").pipe(with_series_count, through, "_hi")
        .with_columns((pl.col("_hi") - pl.col("_lo") + in_window.cast(pl.Int64)).alias(name))
    )


def explode_bill_dates(frame: pl.LazyFrame, after: str, through: str) -> pl.LazyFrame:
    """One row per bill date b with after < b <= through, as column `bill_date`, with
    `next_bill_date`, the series' date after it: the period b bills runs up to the day before.

    `frame` comes from `with_count_between`; callers cap the window first, so the explosion
    stays small.
    """
    series = (
        frame.with_columns(pl.int_ranges("_lo", "_hi", dtype=pl.Int64).alias("_k"))
        .explode("_k")
        .filter(pl.col("_k").is_not_null())
        .pipe(with_nth_bill_date, "_k", "bill_date")
        .with_columns(pl.col("_k") + 1)
        .pipe(with_nth_bill_date, "_k", "next_bill_date")
        .drop("_k")
    )
    # An extra first date is always before the anchor (the anchor is a billing day after it).
    extra = frame.filter(
        pl.col("extra_first").is_not_null() & (pl.col("extra_first") <= pl.col(through))
        & (pl.col(after).is_null() | (pl.col("extra_first") > pl.col(after)))
    ).with_columns(pl.col("extra_first").alias("bill_date"), pl.col("anchor").alias("next_bill_date"))
    return pl.concat([series, extra], how="vertical").drop("_lo", "_hi")
