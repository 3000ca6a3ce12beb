"""Dues posting (SPEC 1.3): which periods post tonight, and which contracts are in error.

A period is a (contract, bill date): it runs from its bill date to the day before the series'
next one (`period_end`). Every unposted period with a bill date on or before the business date
posts once: dues if the contract is active on that bill date, the plan's freeze fee if it is
frozen then and the fee is above 0, nothing otherwise (no catch-up for frozen periods). A
contract in error posts nothing; its error repeats each night until the data is fixed, and then
the missed periods catch up.

A schedule edited after a period posted (first bill date, start date, the facility's billing
day, the plan's frequency) moves the series, and its next dates may fall inside the time that
period paid for (up to its `period_end`, as the schedule stood when it posted). A period half
or more of whose days are paid already does not post: the periods posted cover it
(`mostly_paid`). One mostly unpaid posts, and pays its few paid days twice. So the series
continues from its date nearest to the end of the paid time (a pro-rated charge for the days
paid twice or left unbilled is not in SPEC). A rerun, or a day run late, measures the paid days
against the periods posted on its date or later and the latest one before (`stand_ins`).

A series edited to start earlier than it did when its periods posted (its start date or first
bill date moved before the earliest one they were posted under: `series_from`) is looked at from
its new start up to the old one as well (`early_windows`): such a date, never posted, posts when
mostly unpaid by the periods posted, on any night. A plan or billing day changed moves the
series but not where it starts from: it opens no window before the first period.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from billing_pipeline.inputs.contract import CONTRACT_TYPES, FREQUENCIES, SCHEDULES
from billing_pipeline.rules import bill_dates
from billing_pipeline.rules.contract_status import ALIVE, IN_EFFECT, status_on
from billing_pipeline.rules.text import fmt

MAX_MISSED_PERIODS = 12
# Above this many bill dates in the window, the window is not expanded: it is an error anyway.
EXPANSION_CAP = 400

# Which of some (contract_id, bill_date) the ledger has: a lookup the cycle passes to the rules.
InLedger = Callable[[pl.DataFrame], pl.DataFrame]

DUE_COLUMNS = ["business_date", "facility_id", "contract_id", "customer_id", "bill_date", "period_end", "kind",
               "amount_cents", "series_from"]
ERROR_COLUMNS = ["business_date", "facility_id", "contract_id", "customer_id", "error_code", "message"]


def contracts_for_days(contracts: pl.LazyFrame, customers: pl.LazyFrame, facilities: pl.LazyFrame,
                       plans: pl.LazyFrame, facility_days: pl.LazyFrame) -> pl.LazyFrame:
    """Contracts processed on these facility-days, with plan, customer and facility looked up.

    A contract is processed by its facility, or by its customer's home facility when its own
    facility does not exist (so that the error is reported somewhere), or, when neither exists, by
    the export's first facility (lowest facility_id): a bad record is never dropped unreported.
    """
    known = facilities.select("facility_id").collect().get_column("facility_id")  # a small table
    first_facility = known.min()
    batch = facility_days.select("facility_id").unique().collect().get_column("facility_id")
    candidates = contracts
    if not known.is_in(batch.implode()).all():
        # Only a contract of a facility in the batch, or of an unknown facility (routed below), can be
        # processed here: a window of 100 facilities out of 1,000 joins a tenth of the contracts. (A
        # batch of every facility skips the filter: it would copy every contract.)
        candidates = contracts.filter(pl.col("facility_id").is_in(batch.implode())
                                      | ~pl.col("facility_id").is_in(known.implode()))
    # Which facilities exist: a lookup in a set of a thousand ids, not a join copying 10M rows.
    routed = (
        candidates.join(customers.select("customer_id", pl.col("facility_id").alias("home_facility_id"),
                                         pl.lit(True).alias("customer_known")), on="customer_id", how="left")
        .with_columns(
            pl.col("facility_id").is_in(known.implode()).fill_null(False).alias("facility_known"),
            pl.col("customer_known").fill_null(False),
            pl.col("home_facility_id").is_in(known.implode()).fill_null(False).alias("home_known"),
        )
        .with_columns(
            # a customer whose home facility does not exist could never be billed
            (pl.col("customer_known") & ~pl.col("home_known")).alias("home_unknown"),
            pl.when(pl.col("facility_known")).then(pl.col("facility_id"))
            .when(pl.col("home_known")).then(pl.col("home_facility_id"))
            .otherwise(pl.lit(first_facility, pl.String)).alias("processing_facility_id"),
            pl.col("facility_id").alias("contract_facility_id"),
        )
        .rename({"status": "exported_status"})
        .drop("facility_id", "home_known")
        .rename({"processing_facility_id": "facility_id"})
    )
    # The facility-days with their settings, joined once.
    days = facility_days.select("facility_id", "business_date").join(
        facilities.select("facility_id", pl.col("weekly_billing_day", "monthly_billing_day").cast(pl.Int8)),
        on="facility_id", how="left")
    return routed.join(days, on="facility_id", how="inner").pipe(with_plan, plans)


def with_plan(contracts: pl.LazyFrame, plans: pl.LazyFrame) -> pl.LazyFrame:
    """Contracts with their plan's kinds and freeze fee, `plan_known`, and `amount_cents`: the
    contract's own dues if set, else its plan's."""
    # The plan's kinds as enums (4 bytes a row, not 16): the join copies them onto every contract.
    plan_cols = plans.select("plan_id", pl.col("contract_type").cast(pl.Enum(CONTRACT_TYPES)),
                             pl.col("frequency").cast(pl.Enum(FREQUENCIES)), pl.col("schedule").cast(pl.Enum(SCHEDULES)),
                             pl.col("dues_cents").alias("plan_dues_cents"), "freeze_fee_cents",
                             pl.lit(True).alias("plan_known"))
    return (
        contracts.join(plan_cols, on="plan_id", how="left")
        .with_columns(
            pl.col("plan_known").fill_null(False),
            pl.coalesce("dues_cents", "plan_dues_cents").alias("amount_cents"),
            pl.col("freeze_fee_cents").fill_null(0),
        )
        .drop("dues_cents", "plan_dues_cents")  # in amount_cents now: 10M rows are not carried twice
    )


def data_errors(processed: pl.LazyFrame, duplicate_customers: pl.LazyFrame) -> pl.LazyFrame:
    """Per contract: the data problems that stop its dues from posting (may be several)."""
    # A semi join for the duplicate holds: a left join to flag them copied every contract's row.
    held = processed.join(duplicate_customers.select("business_date", "customer_id"),
                          on=["business_date", "customer_id"], how="semi")
    checks = [
        ("unknown_plan", ~pl.col("plan_known"), fmt("plan {} does not exist", "plan_id")),
        ("unknown_customer", ~pl.col("customer_known"), fmt("customer {} does not exist", "customer_id")),
        ("unknown_facility", ~pl.col("facility_known"),
         fmt("facility {} does not exist", "contract_facility_id")),
        ("unknown_facility", pl.col("home_unknown") & pl.col("facility_known"),
         fmt("customer {}'s home facility {} does not exist: they could not be billed",
                   "customer_id", "home_facility_id")),
        ("negative_amount", (pl.col("amount_cents") < 0) | (pl.col("freeze_fee_cents") < 0),
         fmt("dues of {} cents (freeze fee {}) are negative", "amount_cents", "freeze_fee_cents")),
        ("invalid_dates", pl.col("end_date") < pl.col("start_date"),
         fmt("end date {} is before start date {}", "end_date", "start_date")),
    ]
    columns = ["business_date", "facility_id", "contract_id", "contract_key", "customer_id"]
    parts = [
        processed.filter(cond.fill_null(False)).select(*columns, pl.lit(code).alias("error_code"), msg.alias("message"))
        for code, cond, msg in checks
    ]
    parts.append(held.select(
        *columns, pl.lit("duplicate_contract").alias("error_code"),
        # The held periods of every contract still in effect on their bill dates catch up once
        # resolved: a contract that never should have existed must end from its start.
        fmt("customer {} has two or more contracts in effect for one plan: held until resolved; the periods held "
            "catch up for each contract that was in effect on them, so terminate a contract entered by mistake "
            "effective its start date (or export it as terminated)", "customer_id").alias("message")))
    return pl.concat(parts, how="vertical")


def due_periods(processed: pl.LazyFrame, last_posted: pl.LazyFrame, timeline: pl.LazyFrame,
                posted_since: pl.LazyFrame | None = None,
                in_ledger: InLedger | None = None) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Unposted periods up to the business date, and contracts with too many of them.

    `processed` must be free of plan errors (it needs the plan's schedule). `last_posted`:
    contract_id, last_bill_date and paid_through (the latest period posted before this business
    date, and the last day the periods posted before it cover), first_period_date and posted_from
    (the earliest bill date and series start of those periods, `early_windows`). A period half or
    more paid by them is dropped (`mostly_paid`), and not counted as missed.
    `posted_since`: contract_id, business_date, posted_bill_date, posted_period_end: the periods
    posted on the business date or later, of a rerun's contracts (or a day's run late). Those are
    not unposted, so not counted against the limit; and a period half or more paid by them and
    the latest one posted before (`stand_ins`) is dropped. `in_ledger`: which of some
    (contract_id, bill_date) the ledger has (`opened_back`).
    Returns (periods with kind, amount and period_end, too_many_missed_periods errors).
    """
    # Nothing bills from a termination or conclusion on: the window ends the day before. A contract
    # off the timeline (no change applies to it) ends after its end date.
    ends = (timeline.filter(pl.col("status").is_in(["terminated", "concluded"]))
            .group_by("contract_key").agg(pl.col("valid_from").min().alias("timeline_ends_on")))
    schedule_inputs = ["business_date", "contract_key", "frequency", "schedule", "start_date", "end_date",
                       "first_bill_date", "weekly_billing_day", "monthly_billing_day"]
    # The ids, amounts and exported status ride along only for the contracts with a bill date in
    # their window: carried through the schedule of 8.8M contracts they cost about 1 GiB.
    carried = ["business_date", "contract_key", "facility_id", "contract_id", "customer_id", "exported_status",
               "amount_cents", "freeze_fee_cents"]
    # A contract terminated or concluded in the export is so from the beginning: it never bills.
    alive = processed.filter(pl.col("exported_status").is_in(ALIVE))
    # Materialized at each stage: the later ones (explode, status on each bill date, errors)
    # read them several times, and a lazy plan would recompute them for every reader.
    windows = (
        alive.select(*schedule_inputs, "contract_id").join(last_posted, on="contract_id", how="left")
        .drop("contract_id")
        .join(ends, on="contract_key", how="left")
        .with_columns(pl.coalesce("timeline_ends_on", pl.col("end_date") + pl.duration(days=1)).alias("ends_on"))
        .with_columns(pl.min_horizontal("business_date", pl.col("ends_on") - pl.duration(days=1)).alias("through"))
        .drop("timeline_ends_on", "ends_on")
        .pipe(bill_dates.with_schedule)
        .pipe(bill_dates.with_count_between, "last_bill_date", "through", "n_dates")
        .pipe(with_date_back)
        .with_columns((bill_dates.series_from() < pl.col("posted_from")).fill_null(False)
                      .alias("_starts_earlier"))
        # Its time before the first period is owed now, and was never paid: its periods are paid
        # from the first one on. (Any other series counts a period's days before the first one as
        # paid: they were not owed, and a date opened back is measured by how near it lies to
        # the end of the paid time, as every date after it is.)
        .with_columns(pl.when("_starts_earlier").then(pl.col("first_period_date")).alias("paid_from"))
        .filter((pl.col("n_dates") > 0) | pl.col("_date_back") | pl.col("_starts_earlier"))
    ).collect()
    regular = pl.concat([windows.filter(~pl.col("_date_back")).with_columns(pl.col("last_bill_date").alias("window_after")),
                         opened_back(windows.filter(pl.col("_date_back")), alive, in_ledger)], how="vertical")
    windows = (
        pl.concat([regular, early_windows(windows.filter(pl.col("_starts_earlier")), regular)])
        .drop("_date_back", "_starts_earlier").lazy().filter(pl.col("n_dates") > 0)
        .join(alive.select(carried), on=["contract_key", "business_date"])
    ).collect().lazy()
    expanded = bill_dates.explode_bill_dates(windows.filter(pl.col("n_dates") <= EXPANSION_CAP),
                                             "window_after", "through")
    # Only the exploded contracts' timelines: status_on sorts what it is given.
    with_status = status_on(timeline.join(windows.select("contract_key"), on="contract_key", how="semi"),
                            expanded, "bill_date")
    periods = (
        with_status.with_columns(
            pl.when(pl.col("status") == "active").then(pl.lit("dues"))
            .when((pl.col("status") == "frozen") & (pl.col("freeze_fee_cents") > 0)).then(pl.lit("freeze_fee"))
            .otherwise(None).alias("kind"))
        .filter(pl.col("kind").is_not_null())
        .with_columns(pl.when(pl.col("kind") == "dues").then(pl.col("amount_cents"))
                      .otherwise(pl.col("freeze_fee_cents")).alias("amount_cents"),
                      (pl.col("next_bill_date") - pl.duration(days=1)).alias("period_end"),
                      bill_dates.series_from().alias("series_from"))
        # (Only after an edit of the schedule: on every other night paid_through is the day
        # before the next bill date, and nothing is paid of the periods in the window.)
        .filter(~mostly_paid(pl.coalesce("paid_from", "bill_date"), pl.col("paid_through")))
        .select(*DUE_COLUMNS, "contract_key")
    ).collect().lazy()
    unposted = periods
    if posted_since is not None:
        rerun = posted_since.select("contract_id", "business_date").unique()
        # (unique: a contract that starts earlier has two windows, `early_windows`)
        before = (windows.join(rerun, on=["contract_id", "business_date"], how="semi")
                  .filter(pl.col("last_bill_date").is_not_null())
                  .select("contract_id", "business_date", pl.col("last_bill_date").alias("posted_bill_date"),
                          pl.col("paid_through").alias("posted_period_end")).unique())
        replaced = stand_ins(periods, pl.concat([posted_since, before]),
                             windows.select("contract_id", "business_date", "frequency").unique())
        periods = periods.join(replaced, on=["contract_id", "bill_date"], how="anti").collect().lazy()
        unposted = periods.join(posted_since.select("contract_id", pl.col("posted_bill_date").alias("bill_date")),
                                on=["contract_id", "bill_date"], how="anti")
    counts = unposted.group_by("contract_key").agg(
        pl.len().cast(pl.Int64).alias("n_periods"), pl.col("bill_date").min().alias("first"), pl.col("bill_date").max().alias("last"))
    overflow = windows.filter(pl.col("n_dates") > EXPANSION_CAP).select(
        "contract_key", pl.col("n_dates").alias("n_periods"), pl.lit(None, pl.Date).alias("first"),
        pl.col("business_date").alias("last"))
    too_many = (
        pl.concat([counts.filter(pl.col("n_periods") > MAX_MISSED_PERIODS), overflow], how="vertical")
        .join(processed.select("business_date", "facility_id", "contract_id", "contract_key", "customer_id"),
              on="contract_key")
        .select("business_date", "facility_id", "contract_id", "contract_key", "customer_id",
                pl.lit("too_many_missed_periods").alias("error_code"),
                fmt("{} unposted periods through {} (more than {}): set first_bill_date or post them manually",
                          "n_periods", "last", pl.lit(MAX_MISSED_PERIODS)).alias("message"))
    )
    return periods, too_many


def post_dues(processed: pl.LazyFrame, last_posted: pl.LazyFrame, timeline: pl.LazyFrame,
              duplicate_customers: pl.LazyFrame, posted_since: pl.LazyFrame | None = None,
              in_ledger: InLedger | None = None) -> dict[str, pl.LazyFrame]:
    """due_contracts (before holds), dues_postings and dues_posting_errors for the facility-days.

    `processed` carries `status`, the contract's status on the business date. `posted_since`,
    `in_ledger`: see `due_periods`.
    """
    errors = data_errors(processed, duplicate_customers).collect().lazy()
    schedulable = processed.filter(pl.col("plan_known"))
    periods, too_many = due_periods(schedulable, last_posted, timeline, posted_since, in_ledger)
    in_effect_today = processed.filter(pl.col("status").is_in(IN_EFFECT)).select("contract_key")
    has_periods = periods.select("contract_key").unique()
    alive = processed.filter(pl.col("exported_status").is_in(ALIVE)).select("contract_key")
    # Data errors are reported for contracts that matter tonight: alive in the export, in effect,
    # or owing periods; a contract that ended long ago is not reported every night.
    relevant = pl.concat([in_effect_today, has_periods, alive]).unique()
    errors = pl.concat([errors.join(relevant, on="contract_key", how="semi"), too_many],
                       how="vertical").collect().lazy()
    blocking_codes = errors.filter(pl.col("error_code") != "duplicate_contract").select("contract_key").unique()
    due = periods.join(blocking_codes, on="contract_key", how="anti")
    postings = due.join(errors.select("contract_key").unique(), on="contract_key", how="anti")
    return {
        "due_contracts": due.select(DUE_COLUMNS).sort("facility_id", "contract_id", "bill_date"),
        "dues_postings": postings.select(DUE_COLUMNS).sort("facility_id", "contract_id", "bill_date"),
        "dues_posting_errors": errors.select(ERROR_COLUMNS).sort("facility_id", "contract_id", "error_code"),
    }


def with_date_back(windows: pl.LazyFrame) -> pl.LazyFrame:
    """Adds `_date_back`: the series has no date from the latest bill date posted to the day
    after paid_through, and one before the latest bill date. The schedule was edited to longer
    steps (weekly to monthly): the series date before (`opened_back`), whose period runs past
    the paid time, may be mostly unpaid. (On every other night the next series date is the day
    after paid_through: one count of the series, no date built.)"""
    return (
        windows.with_columns((pl.col("paid_through") + pl.duration(days=1)).alias("_paid_next"))
        .pipe(bill_dates.with_series_count, "_paid_next", "_k_paid_next")
        # (paid_through is the latest bill date in a ledger written before periods had an end)
        .with_columns(((pl.col("_k_paid_next") == pl.col("_lo")) & (pl.col("_lo") >= 1)
                       & (pl.col("paid_through") > pl.col("last_bill_date"))).fill_null(False).alias("_date_back"))
        .drop("_paid_next", "_k_paid_next")
    )


def opened_back(windows: pl.DataFrame, alive: pl.LazyFrame, in_ledger: InLedger | None) -> pl.DataFrame:
    """The windows of `with_date_back` contracts opened back to include the series date before
    the latest bill date posted (`window_after` the day before it), and counted again; that
    date, unless it is posted already (a bill date posts once: the latest one, or one
    `in_ledger` finds)."""
    back = (
        windows.lazy().with_columns((pl.col("_lo") - 1).alias("_k_back"))
        .pipe(bill_dates.with_nth_bill_date, "_k_back", "_back")
        .with_columns(((pl.col("_back") < pl.col("last_bill_date")) & (pl.col("_back") <= pl.col("through")))
                      .alias("_opens"))
    ).collect()
    if in_ledger is not None and back.get_column("_opens").any():
        keys = (back.lazy().filter("_opens").join(alive.select("contract_key", "business_date", "contract_id"),
                                                  on=["contract_key", "business_date"])
                .select("contract_key", "business_date", "contract_id", pl.col("_back").alias("bill_date")).collect())
        posted = in_ledger(keys.select("contract_id", "bill_date"))
        taken = (keys.join(posted, on=["contract_id", "bill_date"], how="semi")
                 .select("contract_key", "business_date", pl.lit(True).alias("_taken")))
        back = (back.join(taken, on=["contract_key", "business_date"], how="left")
                .with_columns(pl.col("_opens") & pl.col("_taken").is_null()).drop("_taken"))
    return (
        back.lazy()
        .with_columns(pl.when("_opens").then(pl.col("_back") - pl.duration(days=1)).otherwise(pl.col("last_bill_date"))
                      .alias("window_after"))
        .drop("_k_back", "_back", "_opens", "_lo", "_hi", "n_dates")
        .pipe(bill_dates.with_count_between, "window_after", "through", "n_dates")
        .select(windows.columns + ["window_after"]).collect()
    )


def early_windows(windows: pl.DataFrame, regular: pl.DataFrame) -> pl.DataFrame:
    """The windows of contracts whose series now starts before the earliest start their periods
    were posted under (`posted_from`: the start date or first bill date was moved earlier since):
    from the new start up to the day before the first period, the old start, and the `regular`
    window (after the latest bill date posted, or `opened_back`), whichever comes first. So its
    dates are neither in the ledger (all its periods are on or after the first one: an older
    ledger's entries without a series start included) nor in the other window. They are
    measured against the days the periods posted pay for, from the first one (`paid_from`) to
    paid_through: K1 posted Jan 5, paid Jan 5-Feb 4; its start moved to Dec 20: Dec 20-Jan 19
    posts, 15 of its 31 days paid. Once it posts, `posted_from` is the new start, and the window
    is gone. (A plan or billing day changed leaves the start as it was: it opens no window.)"""
    day = pl.duration(days=1)
    return (
        windows.lazy().drop("_lo", "_hi", "n_dates")
        .join(regular.lazy().select("contract_key", "business_date", pl.col("window_after").alias("_regular_after")),
              on=["contract_key", "business_date"])
        .with_columns(pl.lit(None, pl.Date).alias("window_after"),
                      pl.min_horizontal("through", pl.col("posted_from") - day, pl.col("first_period_date") - day,
                                        "_regular_after").alias("through"))
        .pipe(bill_dates.with_count_between, "window_after", "through", "n_dates")
        .select(windows.columns + ["window_after"]).collect()
    )


def mostly_paid(paid_from: pl.Expr, paid_through: pl.Expr) -> pl.Expr:
    """Whether half or more of the period (bill_date .. period_end) lies in paid_from ..
    paid_through (false if that is null)."""
    return half_or_more(days_within(paid_from, paid_through)).fill_null(False)


def days_within(paid_from: pl.Expr, paid_through: pl.Expr) -> pl.Expr:
    """How many days of the period (bill_date .. period_end) lie in paid_from .. paid_through
    (0 if none, null if either is null)."""
    start, end = pl.col("bill_date"), pl.col("period_end")
    # (Not min/max_horizontal: they skip a null, and nothing paid must not read as all of it.)
    last = pl.when(end < paid_through).then(end).otherwise(paid_through)
    first = pl.when(start > paid_from).then(start).otherwise(paid_from)
    return ((last - first).dt.total_days() + 1).clip(lower_bound=0)


def half_or_more(days: pl.Expr) -> pl.Expr:
    return 2 * days >= (pl.col("period_end") - pl.col("bill_date")).dt.total_days() + 1


def stand_ins(due: pl.LazyFrame, posted: pl.LazyFrame, frequencies: pl.LazyFrame) -> pl.LazyFrame:
    """contract_id, bill_date of a rerun's periods that the periods posted cover: half or more of
    their days are paid by the other periods posted (those its business date or a later one
    posted, and the latest one posted before; a day paid by two counts once). The schedule was
    edited between the runs (first
    bill date, start date, a facility's billing day, the plan's frequency): posting them would
    bill those days twice. A period mostly unpaid is a period of its own, and posts (one the
    first run skipped, its data fixed since).

    due: contract_id, business_date, bill_date, period_end; posted: contract_id, business_date,
    posted_bill_date, posted_period_end (null in a ledger written before periods had an end:
    taken to end a step of the plan's current frequency later, near the rule before them);
    frequencies: contract_id, business_date, frequency.
    """
    posted_end = pl.coalesce("posted_period_end", bill_dates.one_step_after(pl.col("posted_bill_date")) - pl.duration(days=1))
    return (
        due.select("contract_id", "business_date", "bill_date", "period_end")
        .join(posted.join(frequencies.select("contract_id", "business_date",
                                             *bill_dates.step_columns(pl.col("frequency").cast(pl.String))),
                          on=["contract_id", "business_date"])
              .select("contract_id", "business_date", "posted_bill_date", posted_end.alias("posted_period_end")),
              on=["contract_id", "business_date"])
        .filter(pl.col("bill_date") != pl.col("posted_bill_date"))
        # Each posted period clipped to the computed one; the days of overlapping ones count once.
        .with_columns(pl.max_horizontal("bill_date", "posted_bill_date").cast(pl.Int64).alias("_first"),
                      pl.min_horizontal("period_end", "posted_period_end").cast(pl.Int64).alias("_last"))
        .filter(pl.col("_first") <= pl.col("_last"))
        .sort("contract_id", "bill_date", "_first")
        .with_columns(pl.col("_last").cum_max().shift(1).over("contract_id", "bill_date").alias("_covered"))
        .with_columns((pl.col("_last") - pl.max_horizontal("_first", pl.col("_covered") + 1) + 1)
                      .clip(lower_bound=0).alias("_new"))
        .group_by("contract_id", "bill_date", "period_end")
        .agg(pl.col("_new").sum().alias("paid_days"))
        .filter(half_or_more(pl.col("paid_days")))
        .select("contract_id", "bill_date").unique()
    )

