"""Maintenance (SPEC 1.1): a contract's status on any date, derived from the export.

The exported status is where a contract starts; `status_changes` rows are applied in
effective_date, then requested_at order. Which changes apply is decided set-based: a change's
state before it depends only on the contract's base status, its dates, whether an earlier
terminate exists and which of freeze / thaw came last before it (an ignored freeze leaves the
contract frozen, an ignored thaw leaves it active, so "the last one wins" holds).

The result is a timeline: one row per (contract, valid_from) with the status from that date.
The status on date D is the timeline row with the latest valid_from <= D (`status_on`). Only
contracts with a change that applies have timeline rows (6% of them in the benchmark data): the
others' status follows from their exported status, start and end dates alone
(`status_without_changes`), a few vectorized comparisons instead of a sort and an as-of join.

Contracts carry `contract_key`, their row number in the export (`with_contract_key`): timelines
are sorted, grouped and joined on it, an integer, which at 10M contracts is several times
faster than on the contract_id string.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from billing_pipeline.rules.text import fmt

IN_EFFECT = ["active", "frozen"]
ALIVE = ["pending", "active", "frozen"]
# The base row of a timeline: before any date an export can hold (a start date of 1800-01-01 must
# still make a pending contract active).
BEGINNING = dt.date.min


def with_contract_key(contracts: pl.DataFrame) -> pl.DataFrame:
    """The export's contracts with `contract_key`, their row number: the integer the rules join on."""
    return contracts.with_row_index("contract_key")


# Window functions over(contract_key) cost 0.5-0.8 s each on 842k changes of 610k contracts (a
# group per contract); on rows sorted by contract_key the same answers come from whole-column
# shifts and fills: where each contract's run of rows starts, and the last earlier row of the run
# meeting a condition.

def run_start(key: str) -> pl.Expr:
    """The row number where each row's run of equal `key` begins (rows sorted by `key`)."""
    starts = (pl.col(key) != pl.col(key).shift(1)).fill_null(True)
    return pl.when(starts).then(pl.int_range(pl.len(), dtype=pl.Int64)).otherwise(None).forward_fill()


def earlier_in_run(condition: pl.Expr) -> pl.Expr:
    """The row number of the last earlier row meeting `condition`, in any run (null if none);
    compare it with `run_start` to keep it within the row's own run."""
    return pl.when(condition).then(pl.int_range(pl.len(), dtype=pl.Int64)).otherwise(None).shift(1).forward_fill()


def applied_changes(contracts: pl.LazyFrame, status_changes: pl.LazyFrame) -> pl.LazyFrame:
    """Every status change of a known contract with `state_before` and `applies`."""
    base = contracts.select("contract_id", "contract_key", pl.col("status").alias("base_status"), "start_date",
                            "end_date")
    eff, kind, base_status = pl.col("effective_date"), pl.col("kind"), pl.col("base_status")
    counts_for_freeze_thaw = kind.is_in(["freeze", "thaw"]) & (
        (base_status != "pending") | (eff >= pl.col("start_date")))
    ordered = (
        status_changes.join(base, on="contract_id", how="inner")
        .sort("contract_key", "effective_date", "requested_at", "change_id")
        .with_columns(run_start("contract_key").alias("_start"),
                      earlier_in_run(counts_for_freeze_thaw).alias("_freeze_thaw_row"),
                      earlier_in_run(kind == "terminate").alias("_terminate_row"))
    )
    ft_row = pl.col("_freeze_thaw_row")
    last_freeze_thaw = pl.when(ft_row >= pl.col("_start")).then(kind.gather(ft_row.fill_null(0))).otherwise(None)
    state_before = (
        pl.when(base_status.is_in(["terminated", "concluded"])).then(base_status)
        .when(pl.col("end_date").is_not_null() & (eff > pl.col("end_date"))).then(pl.lit("concluded"))
        .when((pl.col("_terminate_row") >= pl.col("_start")).fill_null(False)).then(pl.lit("terminated"))
        .when((base_status == "pending") & (eff < pl.col("start_date"))).then(pl.lit("pending"))
        .when(last_freeze_thaw == "freeze").then(pl.lit("frozen"))
        .when(last_freeze_thaw == "thaw").then(pl.lit("active"))
        .when(base_status == "pending").then(pl.lit("active"))
        .otherwise(base_status)
    )
    applies = (
        ((kind == "freeze") & (pl.col("state_before") == "active"))
        | ((kind == "thaw") & (pl.col("state_before") == "frozen"))
        | ((kind == "terminate") & pl.col("state_before").is_in(ALIVE))
    )
    return (ordered.with_columns(state_before.alias("state_before")).with_columns(applies.alias("applies"))
            .drop("_start", "_freeze_thaw_row", "_terminate_row"))


def status_timeline(contracts: pl.LazyFrame, changes: pl.LazyFrame) -> pl.LazyFrame:
    """(contract_key, valid_from, status) of the contracts with a change that applies: the status
    from valid_from on, latest row wins.

    `changes` is the output of `applied_changes` (in its order). Within one date the order is:
    base, start of a pending contract, the day's changes in requested_at order, then conclusion.
    """
    # Read three times below; and Polars 2.1's streaming engine panicked (PortState assertion) on
    # this plan over a lazy `applied_changes`.
    changes = changes.collect().lazy()
    with_changes = changes.filter(pl.col("applies")).select("contract_key").unique()
    c = contracts.join(with_changes, on="contract_key", how="semi").select("contract_key", "status", "start_date",
                                                                           "end_date")
    first_terminate = (
        changes.filter(pl.col("applies") & (pl.col("kind") == "terminate"))
        .group_by("contract_key").agg(pl.col("effective_date").min().alias("terminated_on"))
    )
    base = c.select("contract_key", pl.lit(BEGINNING).alias("valid_from"), pl.lit(0).alias("seq"), "status")
    started = c.filter(pl.col("status") == "pending").select(
        "contract_key", pl.col("start_date").alias("valid_from"), pl.lit(1).alias("seq"), pl.lit("active").alias("status"))
    changed = changes.filter(pl.col("applies")).select(
        "contract_key", pl.col("effective_date").alias("valid_from"),
        (pl.int_range(pl.len(), dtype=pl.Int64) - run_start("contract_key") + 2).cast(pl.Int32).alias("seq"),
        pl.col("kind").replace_strict({"freeze": "frozen", "thaw": "active", "terminate": "terminated"},
                                      return_dtype=pl.String).alias("status"))
    concluded = (
        c.filter(pl.col("status").is_in(ALIVE) & pl.col("end_date").is_not_null())
        .join(first_terminate, on="contract_key", how="left")
        .filter(pl.col("terminated_on").is_null() | (pl.col("terminated_on") > pl.col("end_date")))
        .select("contract_key", (pl.col("end_date") + pl.duration(days=1)).alias("valid_from"),
                pl.lit(1_000_000).alias("seq"), pl.lit("concluded").alias("status"))
    )
    rows = pl.concat([base, started.with_columns(pl.col("seq").cast(pl.Int32)),
                      changed, concluded.with_columns(pl.col("seq").cast(pl.Int32))],
                     how="vertical_relaxed")
    # Nothing follows a termination or a conclusion.
    final = (
        rows.filter(pl.col("status").is_in(["terminated", "concluded"]) & (pl.col("seq") > 0))
        .group_by("contract_key").agg(pl.col("valid_from").min().alias("final_from"))
    )
    return (
        rows.join(final, on="contract_key", how="left")
        .filter(pl.col("final_from").is_null() | (pl.col("valid_from") <= pl.col("final_from")))
        .sort("contract_key", "valid_from", "seq")
        .group_by("contract_key", "valid_from", maintain_order=True).agg(pl.col("status").last())
    )


def status_without_changes(date: pl.Expr) -> pl.Expr:
    """The status on `date` of a contract no change applies to: its exported status, a pending
    one active from its start date, an alive one concluded after its end date (the timeline of
    such a contract, in closed form). Reads exported_status, start_date and end_date."""
    exported = pl.col("exported_status")
    return (
        pl.when(exported.is_in(ALIVE) & (date > pl.col("end_date")).fill_null(False)).then(pl.lit("concluded"))
        .when((exported == "pending") & (date >= pl.col("start_date"))).then(pl.lit("active"))
        .otherwise(exported.cast(pl.String))
    )


def status_on(timeline: pl.LazyFrame, pairs: pl.LazyFrame, date_col: str) -> pl.LazyFrame:
    """`pairs` (contract_key, <date_col>, exported_status, start_date, end_date, ...) with the
    contract's `status` on that date.

    A contract on the timeline is looked up there (an as-of join on three narrow columns); any
    other follows from its own columns. The result keeps `pairs`' rows and order.
    """
    frame = pairs.collect()
    timeline = timeline.collect().lazy()  # read twice below
    looked_up = (
        frame.lazy().select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), "contract_key", date_col)
        .join(timeline.select("contract_key").unique(), on="contract_key", how="semi")
        .sort(date_col)
        .join_asof(timeline.sort("valid_from"), left_on=date_col, right_on="valid_from",
                   by="contract_key", strategy="backward", check_sortedness=False)
        .select("_row", "status")
    ).collect()
    status = frame.select(status_without_changes(pl.col(date_col)).alias("status")).to_series()
    return frame.with_columns(status.scatter(looked_up.get_column("_row"), looked_up.get_column("status"))).lazy()


def status_change_errors(changes: pl.LazyFrame, facility_days: pl.LazyFrame, reported: pl.LazyFrame) -> pl.LazyFrame:
    """Changes that do not apply, reported once: on the first processed date on or after them
    that sees them (a change exported after that date ran, or one that stopped applying when an
    earlier change arrived, is reported by the next night).

    `changes` carries the contract's `facility_id`; one of a contract the export does not have
    has `state_before` null. `facility_days` has facility_id, business_date. `reported`:
    change_id, business_date, facility_id of the reports already stored (a rerun reports again
    on its own facility-day what it reported there, never what another facility-day reported: a
    contract that moved, or that arrived in the export between two windows of one date).
    """
    candidates = (
        changes.filter(~pl.col("applies"))
        .join(facility_days.select("facility_id", "business_date"), on="facility_id", how="inner")
        .filter(pl.col("effective_date") <= pl.col("business_date"))
    )
    keys = ["change_id", "business_date", "facility_id"]
    elsewhere = (candidates.select(keys)
                 .join(reported.select("change_id", pl.col("business_date").alias("reported_on"),
                                       pl.col("facility_id").alias("reported_at")), on="change_id")
                 .filter((pl.col("reported_on") != pl.col("business_date"))
                         | (pl.col("reported_at") != pl.col("facility_id")))
                 .select(keys).unique())
    return (
        candidates.join(elsewhere, on=keys, how="anti")
        .select(
            "business_date", "facility_id", "change_id", "contract_id",
            pl.lit("not_applicable").alias("error_code"),
            pl.when(pl.col("state_before").is_null())
            .then(fmt("{} effective {} does not apply: contract {} is not in the export",
                      pl.col("kind"), pl.col("effective_date"), pl.col("contract_id")))
            .otherwise(fmt("{} effective {} does not apply: the contract is {} then",
                           pl.col("kind"), pl.col("effective_date"), pl.col("state_before"))).alias("message"),
        )
        .sort("facility_id", "change_id")
    )
