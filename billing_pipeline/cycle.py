"""The nightly facility cycle for a batch of facility-days: maintenance -> dues -> billing.

Each step reads the validated export and the warehouse, computes with the pure rules in
`billing_pipeline.rules`, and writes its tables for those facility-days in one transaction.
The Dagster assets and `billing-pipeline run` both call these functions, so the two give the
same results. A batch is any set of (facility, business date): one Dagster partition (an hourly
window), or one date for every facility.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field

import duckdb
import polars as pl

from billing_pipeline.charging import ChargeSettings, completed_now, run_charges
from billing_pipeline.facility_clock import FACILITY_DAYS_SCHEMA, facility_days_for_date
from billing_pipeline.gateway import PaymentGateway
from billing_pipeline.night import Night
from billing_pipeline.rules import billable as billable_rules
from billing_pipeline.rules import contract_status, dues, prebilling
from billing_pipeline.rules.balance import balance_due_now
from billing_pipeline.warehouse import ledger
from billing_pipeline.warehouse.state import PERIOD_KINDS_SQL
from billing_pipeline.warehouse.store import execute, insert, query, replace_facility_days, transaction


@dataclass(frozen=True)
class CycleSettings:
    max_flagged_share: float = prebilling.DEFAULT_BLOCK_SHARE
    charging: ChargeSettings = field(default_factory=ChargeSettings)


def previous_runs(conn: duckdb.DuckDBPyConnection, facility_days: pl.DataFrame,
                  billed: bool = False) -> pl.DataFrame:
    """Each facility-day with the business date, scheduled run instant and first billing time of
    the facility's last processed day before it (with `billed`, its last day whose billing
    finished; null if none), and its own first billing time (null until its billing finishes)."""
    return query(conn, f"""
        WITH previous AS (
            SELECT d.facility_id, d.business_date, max(p.business_date) AS previous_business_date
            FROM _days d LEFT JOIN processed_days p
              ON p.facility_id = d.facility_id AND p.business_date < d.business_date
                 {"AND p.billed_first_at IS NOT NULL" if billed else ""}
            GROUP BY ALL)
        SELECT v.facility_id, v.business_date, v.previous_business_date, q.run_at AS previous_run_at,
               q.billed_first_at AS previous_billed_first_at, t.billed_first_at
        FROM previous v
        LEFT JOIN processed_days q ON q.facility_id = v.facility_id AND q.business_date = v.previous_business_date
        LEFT JOIN processed_days t ON t.facility_id = v.facility_id AND t.business_date = v.business_date""",
                 _days=facility_days.select("facility_id", "business_date"))


# --- maintenance (SPEC 1.1) ---------------------------------------------------------------

class RefusedDay(ValueError):
    """A facility-day (or its billing) that must not run now; nothing was written."""


class DayNotReady(RefusedDay):
    """A step asked of a facility-day whose earlier steps have not finished (dues posting before
    maintenance, billing before dues posting)."""


class SupersededDay(RefusedDay):
    """A facility-day never run whose facility already ran a later day: that later day caught it
    up (its dues posted, its customers billed). Running it now would bill them again."""


def refuse_superseded(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame, condition: str, message: str) -> None:
    """Raises SupersededDay, with `message` formatted for the first of them, if any facility-day
    `d` (processed_days row `s`, if any) has a later day `l` of its facility meeting `condition`."""
    late = query(conn, f"""
        SELECT d.facility_id, d.business_date, min(l.business_date) AS later_day
        FROM _days d
        JOIN processed_days l ON l.facility_id = d.facility_id AND l.business_date > d.business_date
        LEFT JOIN processed_days s ON s.facility_id = d.facility_id AND s.business_date = d.business_date
        WHERE {condition}
        GROUP BY ALL ORDER BY ALL""", _days=days.select("facility_id", "business_date"))
    if late.height:
        raise SupersededDay(message.format(n=late.height, **late.row(0, named=True)))


def refuse_superseded_days(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame) -> None:
    refuse_superseded(conn, days, "s.facility_id IS NULL",
                      "{n} facility-days were never run and a later day already caught them up "
                      "(e.g. {facility_id} {business_date}, caught up by {later_day}): "
                      "nothing written; rerun the later day instead")


def refuse_superseded_billing(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame) -> None:
    """A day whose billing never finished (or finished after a later day's): that later day
    counted this day's dues and billed the whole balance."""
    refuse_superseded(conn, days, """l.billed_first_at IS NOT NULL
                                     AND (s.billed_first_at IS NULL OR s.billed_first_at > l.billed_first_at)""",
                      "billing of {n} facility-days refused: a later day of their facility already billed "
                      "their customers' whole balance (e.g. {facility_id} {business_date}, billed by "
                      "{later_day}); running it now would charge them twice. Their dues stay posted and "
                      "the next day's billing counts them.")


def refuse_unfinished(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame, unfinished: str, message: str) -> None:
    """Raises DayNotReady, with `message` formatted for the first of them, if any facility-day
    (processed_days row `p`, null if none) meets `unfinished`."""
    missing = query(conn, f"""
        SELECT d.facility_id, d.business_date FROM _days d
        LEFT JOIN processed_days p USING (facility_id, business_date)
        WHERE {unfinished} ORDER BY ALL""", _days=days.select("facility_id", "business_date"))
    if missing.height:
        raise DayNotReady(message.format(n=missing.height, **missing.row(0, named=True)))


def refuse_dues_before_maintenance(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame) -> None:
    """Billing counts the dues of the processed days only: dues posted for a day whose
    maintenance never ran (its dues step materialized alone, say) would be owed and billed by
    no one."""
    refuse_unfinished(conn, days, "p.facility_id IS NULL",
                      "dues posting of {n} facility-days refused: their maintenance has not run "
                      "(e.g. {facility_id} {business_date}); run the whole day")


def refuse_billing_before_dues(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame) -> None:
    """Billing counts the day's dues and later days count its billing: a day whose dues step
    never finished (its billable step materialized alone, say) would bill a balance no later
    day knows was billed."""
    refuse_unfinished(conn, days, "p.dues_first_posted_at IS NULL",
                      "billing of {n} facility-days refused: their maintenance and dues posting have not "
                      "finished (e.g. {facility_id} {business_date}); run the whole day")


def maintenance(conn: duckdb.DuckDBPyConnection, night: Night) -> dict[str, pl.DataFrame]:
    days = night.facility_days
    refuse_superseded_days(conn, days)
    statuses = night.contracts.select("business_date", "facility_id", "contract_id", "customer_id", "status")
    # Reported under the facility that processes the contract (its customer's home when its own
    # facility does not exist), as its dues errors are. Only the changed contracts' facilities are
    # made unique: a unique over every routed contract cost 2.4 GiB at 10M contracts.
    changed_keys = night.changes.lazy().select("contract_key").unique()
    processing = night.routed.lazy().select("contract_key", "facility_id").join(changed_keys, on="contract_key",
                                                                               how="semi").unique()
    columns = ["facility_id", "change_id", "contract_id", "kind", "effective_date", "state_before", "applies"]
    # Only the changes that do not apply can be reported: a few, worked out once.
    changes = pl.concat([night.changes.lazy().filter(~pl.col("applies")).join(processing, on="contract_key")
                         .select(columns), night.unknown_contract_changes.lazy().select(columns)]).collect().lazy()
    errors = contract_status.status_change_errors(changes, days.lazy(), reported_changes(conn, changes, days)).collect()
    with transaction(conn):
        mark_processed(conn, days)
        changed = status_changes_since_last_day(conn, statuses, days)
        keep_later_days(conn, days, changed)
        replace_facility_days(conn, "contract_status_log", changed, days)
        replace_facility_days(conn, "status_change_errors", errors, days)
    return {"contract_status_daily": statuses, "contract_status_log": changed, "status_change_errors": errors}


def reported_changes(conn: duckdb.DuckDBPyConnection, changes: pl.LazyFrame, days: pl.DataFrame) -> pl.LazyFrame:
    """change_id, business_date, facility_id of the stored reports of `changes` (those that do not
    apply), but those of the batch's own facility-days: the batch replaces them (a contract moved
    between its facilities is reported by its new one, and every rerun reports the same)."""
    return query(conn, """
        SELECT DISTINCT e.change_id, e.business_date, e.facility_id FROM status_change_errors e
        SEMI JOIN _ids USING (change_id) ANTI JOIN _days USING (facility_id, business_date)""",
                 _ids=changes.select("change_id").collect(),
                 _days=days.select("facility_id", "business_date")).lazy()


def mark_processed(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame) -> None:
    """Records the facility-days as processed now; a rerun keeps their first dues and billing times."""
    days = days.select("facility_id", "business_date", "partition_key", "run_at")
    execute(conn, """
        INSERT INTO processed_days (facility_id, business_date, partition_key, run_at)
        SELECT * FROM _days d ANTI JOIN processed_days p USING (facility_id, business_date)""", _days=days)
    execute(conn, """
        UPDATE processed_days p SET partition_key = d.partition_key, run_at = d.run_at, processed_at = now()
        FROM _days d WHERE p.facility_id = d.facility_id AND p.business_date = d.business_date""", _days=days)


def stamp(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame, column: str, first: bool = False) -> None:
    """Sets `column` of processed_days to now, with `first` only where it is not set yet (call
    inside the step's transaction)."""
    unset = f"AND p.{column} IS NULL" if first else ""
    execute(conn, f"""
        UPDATE processed_days p SET {column} = now() FROM _days d
        WHERE p.facility_id = d.facility_id AND p.business_date = d.business_date {unset}""",
            _days=days.select("facility_id", "business_date"))


def status_changes_since_last_day(conn: duckdb.DuckDBPyConnection, statuses: pl.DataFrame,
                                  days: pl.DataFrame) -> pl.DataFrame:
    """The rows of `contract_status_log` for the facility-days: a contract whose status on D
    differs from its last row before D at its facility (or has none there: new, moved in, back),
    and an end row (status null) for a contract the facility's last row shows but D does not
    (moved out, gone from the export). So 10M contracts do not cost 10M rows a day, and each
    facility's rows alone say which contracts it had on each of its processed days: its own
    time zone's dates, whatever another facility's runs wrote, and in whatever order. (A
    contract given to another customer gets a row under them at its next change: comparing
    every contract's customer cost 1-2 s a night at 10M.)"""
    # DuckDB compares and answers with row numbers: at 10M contracts, bringing every previous
    # status back into Polars to join there cost 9 s a night; the row numbers cost about 3.
    # (arg_max_null: an end row's null status is the last state, not skipped.)
    found = query(conn, """
        WITH before AS (
            SELECT l.contract_id, l.facility_id, any_value(d.business_date) AS business_date,
                   arg_max_null(l.status, l.business_date) AS previous_status
            FROM contract_status_log l JOIN _days d
              ON l.facility_id = d.facility_id AND l.business_date < d.business_date
            GROUP BY l.contract_id, l.facility_id)
        SELECT s.row, b.business_date, facility_id, contract_id
        FROM _statuses s FULL JOIN before b USING (contract_id, facility_id)
        WHERE CASE WHEN s.row IS NULL THEN b.previous_status IS NOT NULL
                   ELSE b.previous_status IS DISTINCT FROM s.status END""",
                  _days=days.select("facility_id", "business_date"),
                  _statuses=statuses.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"), "contract_id",
                                            "facility_id", "status"))
    changed = statuses[found.get_column("row").drop_nulls().sort()]
    ended = found.filter(pl.col("row").is_null()).with_columns(pl.lit(None, pl.String).alias("customer_id"),
                                                               pl.lit(None, pl.String).alias("status"))
    return pl.concat([changed, ended.select(changed.columns).cast(changed.schema)]) if ended.height else changed


def keep_later_days(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame, rows: pl.DataFrame) -> None:
    """Before a rerun replaces its facility-days' log rows with `rows`: where a facility has run a
    later day, the contracts whose state at D changes keep, on the facility's next processed day,
    the state that day found (its run wrote a row only where it differed from D's old one). A
    rerun with a corrected export then corrects D, not the days after it. (Call in the transaction,
    before the replace; a night with no later day does nothing.)"""
    later = query(conn, """
        SELECT d.facility_id, d.business_date, min(p.business_date) AS next_date
        FROM _days d JOIN processed_days p ON p.facility_id = d.facility_id AND p.business_date > d.business_date
        GROUP BY ALL""", _days=days.select("facility_id", "business_date"))
    if later.is_empty():
        return
    execute(conn, """
        INSERT INTO contract_status_log (business_date, facility_id, contract_id, customer_id, status)
        WITH old AS (
            SELECT l.* FROM contract_status_log l JOIN _later d USING (facility_id, business_date)),
        touched AS (
            SELECT contract_id, facility_id FROM old
            UNION SELECT contract_id, facility_id FROM _rows SEMI JOIN _later USING (facility_id, business_date)),
        before AS (  -- each touched contract's last row before D at the facility
            SELECT l.contract_id, l.facility_id, arg_max_null(l.status, l.business_date) AS status,
                   arg_max_null(l.customer_id, l.business_date) AS customer_id
            FROM contract_status_log l SEMI JOIN touched USING (contract_id, facility_id)
            JOIN _later d ON l.facility_id = d.facility_id AND l.business_date < d.business_date
            GROUP BY ALL),
        states AS (  -- at D before and after the rerun: its row if it has one, else the last before
            SELECT t.contract_id, t.facility_id, d.next_date,
                   CASE WHEN o.contract_id IS NOT NULL THEN {'status': o.status, 'customer_id': o.customer_id}
                        ELSE {'status': b.status, 'customer_id': b.customer_id} END AS old,
                   CASE WHEN n.contract_id IS NOT NULL THEN {'status': n.status, 'customer_id': n.customer_id}
                        ELSE {'status': b.status, 'customer_id': b.customer_id} END AS new
            FROM touched t JOIN _later d USING (facility_id)
            LEFT JOIN old o USING (contract_id, facility_id)
            LEFT JOIN _rows n USING (contract_id, facility_id)
            LEFT JOIN before b USING (contract_id, facility_id))
        SELECT s.next_date, s.facility_id, s.contract_id,
               coalesce(s.old.customer_id, s.new.customer_id), s.old.status
        FROM states s
        WHERE s.old IS DISTINCT FROM s.new
          AND NOT EXISTS (SELECT 1 FROM contract_status_log x WHERE x.facility_id = s.facility_id
                          AND x.contract_id = s.contract_id AND x.business_date = s.next_date)""",
            _later=later, _rows=rows.select("facility_id", "business_date", "contract_id", "customer_id", "status"))


# --- dues posting (SPEC 1.2, 1.3) -----------------------------------------------------------

def post_dues(conn: duckdb.DuckDBPyConnection, night: Night) -> tuple[dict[str, pl.DataFrame], int]:
    """Writes the dues tables of the facility-days; returns them and how many ledger entries were new."""
    refuse_dues_before_maintenance(conn, night.facility_days)
    processed = night.contracts
    posted = ledger.last_posted_periods(conn, processed)
    last_posted = (posted.filter(pl.col("last_bill_date").is_not_null())
                   .select("contract_id", "last_bill_date", "paid_through", "first_period_date",
                           pl.col("series_from").alias("posted_from")))
    # A rerun's (or a late day's) contracts: the periods its date, and later ones, posted already.
    since = posted.filter(pl.col("posted_since")).select("contract_id")
    rerun = processed.select("contract_id", "business_date")
    # (Every night's case: nothing posted on the date yet, no semi join over the 10M contracts.)
    rerun = rerun.join(since, on="contract_id", how="semi") if since.height else rerun.clear()
    own = ledger.periods_posted_since(conn, rerun)
    out = {name: frame.collect() for name, frame in dues.post_dues(
        processed.lazy(), last_posted.lazy(), night.timeline.lazy(), night.duplicates.lazy(),
        own.lazy() if own.height else None, lambda keys: ledger.periods_in_ledger(conn, keys)).items()}
    out["dues_postings"] = out["dues_postings"].with_columns(
        ledger.period_entry_id(pl.col("contract_id"), pl.col("bill_date")).alias("entry_id"))
    # The periods of a contract with nothing posted on this date or later come after every
    # period it has in the ledger: new by construction, a plain INSERT (the primary key refuses
    # one that is not: a wrong contract_periods fails the night instead of skipping a period).
    # The others (a rerun, a late day) may be posted already: those that are, are left out. (A
    # period before the latest one posted, `dues.opened_back`, the rules looked up in the ledger.)
    maybe_posted = pl.col("contract_id").is_in(since.get_column("contract_id").implode())
    with transaction(conn):
        # A period another facility-day already posted is that day's: an earlier day rerun
        # after it (its data fixed since) neither lists it as due nor posted (the ledger has it
        # once, under the later day, and the later day billed it).
        elsewhere = ledger.posted_by_other_days(conn, out["dues_postings"].filter(maybe_posted))
        if elsewhere.height:
            for table in ("due_contracts", "dues_postings"):
                out[table] = out[table].join(elsewhere, on=["contract_id", "bill_date"], how="anti")
        entries = ledger.dues_entries(out["dues_postings"])
        # And what a rerun's facility-days posted before stays theirs, as the ledger has it, even
        # if the export no longer gives them the period or gives it other dues (the contract
        # moved, its schedule or dues were edited): listed as due and posted, as the first run
        # did, so their billing counts it as before. (In the ledger already: not posted again.)
        kept = ledger.postings_kept(conn, night.facility_days)
        if kept.height:
            for table in ("due_contracts", "dues_postings"):
                recomputed = out[table].join(kept, on=["contract_id", "bill_date"], how="anti")
                out[table] = (pl.concat([recomputed, kept.select(out[table].columns)])
                              .sort("facility_id", "contract_id", "bill_date"))
        for table in ("due_contracts", "dues_postings", "dues_posting_errors"):
            replace_facility_days(conn, table, out[table], night.facility_days)
        new_entries = (ledger.post_new_entries(conn, entries.filter(~maybe_posted))
                       + ledger.post_entries(conn, entries.filter(maybe_posted)))
        stamp(conn, night.facility_days, "dues_first_posted_at", first=True)
    return out, new_entries


# --- billable customers, sweeps and pre-billing checks (SPEC 1.4, 1.6) -----------------------

def select_billable(conn: duckdb.DuckDBPyConnection, night: Night, settings: CycleSettings) -> dict[str, pl.DataFrame]:
    refuse_billing_before_dues(conn, night.facility_days)
    refuse_superseded_billing(conn, night.facility_days)
    customer_days = night.customer_days
    runs = home_runs(conn, night.facility_days)
    day_settings = billable_rules.facility_day_settings(
        runs.join(sweep_from(conn, runs), on=["facility_id", "business_date"]).lazy(),
        night.inputs.facilities.lazy()).collect()
    # Only a retry or a rolling sweep looks at past attempts: the customers of facilities with
    # neither are left out of that query (it reads every attempt and billed day of the rest).
    looks_back = day_settings.filter(pl.col("retry_declined_after_days").is_not_null()
                                     | (pl.col("sweep_mode") == "rolling"))
    keys = customer_days.join(looks_back.select("facility_id", "business_date"), on=["facility_id", "business_date"],
                              how="semi").select("customer_id", "business_date")
    # Tonight's dues of a customer: those posted by every facility-day (at any facility, in any
    # time zone) that ran by the home facility's run tonight with a business date up to the
    # home's, and were not counted by the home's previous run: each facility-day is counted by
    # one home run. A contract's facility west of the home runs later, so its dues of D are
    # billed with the home's D+1 run (D+2 for a facility more than 24 hours west); a facility
    # more than 24 hours east (Kiritimati D+1 runs before Pago Pago D) waits for the home's D+1
    # too. The same in Dagster (windows in order) and with `run` (a date at a time), as the run
    # instants are the scheduled ones.
    # A facility-day run late (a window failed and rerun the next day, a backfill), its dues first
    # posted after the home's previous day first billed, is counted by the home's next billing:
    # each facility-day's dues by one home day, which its reruns count again (the first-time
    # stamps do not move), nothing that arrived after the home day first billed.
    arrived = "coalesce(c.dues_first_posted_at, '-infinity'::TIMESTAMPTZ)"
    counted = f"""c.business_date <= h.business_date AND c.run_at <= h.run_at
                 AND {arrived} <= coalesce(h.billed_first_at, 'infinity'::TIMESTAMPTZ)
                 AND NOT coalesce(c.run_at <= h.previous_run_at AND c.business_date <= h.previous_business_date
                                   AND {arrived} <= h.previous_billed_first_at, false)"""
    # due_contracts holds every period due (before holds), dues_postings those that posted.
    due = query(conn, f"""
        WITH dues AS (SELECT customer_id, amount_cents, business_date, facility_id, false AS posted FROM due_contracts
                      WHERE business_date >= $since
                      UNION ALL
                      SELECT customer_id, amount_cents, business_date, facility_id, true FROM dues_postings
                      WHERE business_date >= $since),
             homes AS (SELECT k.customer_id, k.business_date, r.run_at, r.previous_run_at, r.previous_business_date,
                              r.previous_billed_first_at, r.billed_first_at
                       FROM _keys k JOIN _runs r USING (facility_id, business_date))
        SELECT h.customer_id, h.business_date,
               sum(c.amount_cents) FILTER (WHERE NOT c.posted)::BIGINT AS due_cents,
               sum(c.amount_cents) FILTER (WHERE c.posted)::BIGINT AS posted_cents
        FROM homes h
        JOIN (dues d JOIN processed_days p USING (facility_id, business_date)) c
          ON c.customer_id = h.customer_id AND {counted}
        GROUP BY ALL HAVING count(*) FILTER (WHERE NOT c.posted) > 0""",
                _keys=customer_days.select("customer_id", "business_date", "facility_id"), _runs=runs,
                params={"since": dues_since(conn, runs)})
    due = with_more_dues(due, late_postings(conn, customer_days, runs))
    due = with_more_dues(due, held_pending(conn, customer_days))
    last_attempts = query(conn, """
        SELECT a.customer_id, arg_max(a.business_date, a.business_date) AS last_attempt_date,
               arg_max(a.outcome, a.business_date) AS last_outcome
        FROM billing_attempts a JOIN _keys k
          ON a.customer_id = k.customer_id AND a.business_date < k.business_date
        GROUP BY a.customer_id""", _keys=keys)
    duplicates, without_payment_method = night.duplicates, night.without_payment_method
    last_attempts = (last_attempts.join(rolling_holds(conn, night, day_settings), on="customer_id", how="full",
                                        coalesce=True)
                     .with_columns(pl.max_horizontal("last_attempt_date", "last_held_date").alias("last_billed_date")))
    qualifying = (night.customer_contracts.filter(pl.col("status").is_in(contract_status.IN_EFFECT)
                                         & pl.col("contract_type").is_in(billable_rules.QUALIFYING_TYPES))
                  .select("customer_id", "business_date"))
    night.forget("customer_contracts", "customer_keys", "elsewhere")  # 10M contracts' rows: not needed from here on
    with_settings = customer_days.lazy().join(day_settings.lazy().drop("fixed_sweep_day"), on=["facility_id", "business_date"])
    with_reasons = billable_rules.with_reasons(with_settings, due.lazy(), last_attempts.lazy(), qualifying.lazy()).collect()
    owed = balances(conn, night, with_reasons.select("customer_id", "business_date", "run_at"))
    candidates = billable_rules.with_balance(with_reasons.lazy(), owed.lazy()).collect()
    flagged = pl.concat([duplicates.select("business_date", "customer_id"),
                         without_payment_method.select("business_date", "customer_id")]).unique()
    blocks = prebilling.billing_blocks(candidates.lazy(), flagged.lazy(), night.facility_days.lazy(),
                                       settings.max_flagged_share, window_neighbours(conn, night).lazy()).collect()
    held = billable_rules.apply_holds(candidates.lazy(), duplicates.lazy(), night.usable_methods.lazy(),
                                      blocks.lazy(), charge_holds(conn, candidates).lazy()).collect()
    out = {
        "billable_customers": held.select(*billable_rules.BILLABLE_COLUMNS, "payment_method_id")
        .sort("facility_id", "customer_id"),
        "sweep_candidates": billable_rules.sweep_candidates(held.lazy(), day_settings.lazy()).collect(),
        "duplicate_contracts": night.at_home(duplicates),
        "recurring_dues_without_payment_method": night.at_home(without_payment_method),
        "billing_blocks": blocks.select("business_date", "facility_id", "partition_key", "billable_customers",
                                        "flagged_customers", "window_billable", "window_flagged",
                                        "window_flagged_share", "max_share", "blocked"),
    }
    with transaction(conn):
        for table, frame in out.items():
            replace_facility_days(conn, table, frame, night.facility_days)
        stamp(conn, night.facility_days, "billed_first_at", first=True)
        stamp(conn, night.facility_days, "billed_last_at")
    return out


# What `late_postings` and `held_pending` add to a customer-day's dues (`with_more_dues`).
MORE_DUES_SCHEMA = {"customer_id": pl.String, "business_date": pl.Date, "more_cents": pl.Int64}


def late_postings(conn: duckdb.DuckDBPyConnection, customer_days: pl.DataFrame, runs: pl.DataFrame) -> pl.DataFrame:
    """customer_id, business_date, more_cents: periods a rerun posted for a facility-day after
    its dues first posted (an export corrected: a wrong freeze, a first bill date too late), once
    the home day that counted that facility-day had billed. That home day charged the customer
    without them, and its rerun resends its first charge (one per customer and day), so the
    home's next billing counts them as dues posted: the first to finish after they were posted.
    Not those a charge's balance held: one of a home day at or after theirs (date and run
    instant, as `ledger.ledger_sums` counts) whose billing step worked it out after they were
    posted (`balance_as_of`: the rerun charged a customer it had not charged before). A request
    written before that was recorded counts as holding them: never billed twice."""
    billed_before = runs.get_column("previous_billed_first_at").drop_nulls()
    empty = pl.DataFrame(schema=MORE_DUES_SCHEMA)
    if billed_before.is_empty():
        return empty
    # Every night reads the entries posted since the earliest previous billing (tonight's, by
    # the posted_at zone maps) and finds none late: the join below runs only after a rerun.
    late = query(conn, f"""
        SELECT l.customer_id, l.amount_cents, l.posted_at, p.business_date, p.run_at
        FROM ledger l JOIN processed_days p USING (facility_id, business_date)
        WHERE l.posted_at > $since AND l.kind IN {PERIOD_KINDS_SQL} AND l.posted_at > p.dues_first_posted_at""",
                 params={"since": billed_before.min()})
    if late.is_empty():
        return empty
    keys = customer_days.filter(pl.col("customer_id").is_in(late.get_column("customer_id").unique().implode()))
    return query(conn, """
        WITH homes AS (SELECT k.customer_id, k.business_date, r.run_at, r.previous_billed_first_at, r.billed_first_at
                       FROM _keys k JOIN _runs r USING (facility_id, business_date))
        SELECT h.customer_id, h.business_date, sum(c.amount_cents)::BIGINT AS more_cents
        FROM homes h JOIN _late c
          ON c.customer_id = h.customer_id AND c.business_date <= h.business_date AND c.run_at <= h.run_at
         AND c.posted_at > h.previous_billed_first_at
         AND c.posted_at <= coalesce(h.billed_first_at, 'infinity'::TIMESTAMPTZ)
        WHERE NOT EXISTS (
            SELECT 1 FROM charge_requests r JOIN processed_days q USING (facility_id, business_date)
            WHERE r.customer_id = c.customer_id AND r.business_date < h.business_date
              AND r.business_date >= c.business_date AND q.run_at >= c.run_at
              AND coalesce(r.balance_as_of > c.posted_at, true))
        GROUP BY ALL""", _keys=keys.select("customer_id", "business_date", "facility_id"), _runs=runs, _late=late)


def held_pending(conn: duckdb.DuckDBPyConnection, customer_days: pl.DataFrame) -> pl.DataFrame:
    """customer_id, business_date, more_cents (0) of customers an earlier day held
    `charge_pending` with dues posted for them (an earlier day's charge had no answer yet: its run
    was killed), charged on no day since: once that day is rerun and settled, the next billing
    bills them as `dues_posted`, as the day that held them would have. Few rows: read by the
    hold, then matched with the batch's customers."""
    empty = pl.DataFrame(schema=MORE_DUES_SCHEMA)
    held = query(conn, """
        SELECT customer_id, business_date AS held_on FROM billable_customers
        WHERE hold_reason = 'charge_pending' AND list_contains(reasons, 'dues_posted')""")
    if held.is_empty():
        return empty
    keys = customer_days.filter(pl.col("customer_id").is_in(held.get_column("customer_id").unique().implode()))
    return query(conn, """
        SELECT DISTINCT k.customer_id, k.business_date, 0::BIGINT AS more_cents
        FROM _keys k JOIN _held h ON h.customer_id = k.customer_id AND h.held_on < k.business_date
        WHERE NOT EXISTS (SELECT 1 FROM charge_requests r WHERE r.customer_id = h.customer_id
                          AND r.business_date >= h.held_on AND r.business_date < k.business_date)""",
                 _keys=keys.select("customer_id", "business_date"), _held=held)


def with_more_dues(due: pl.DataFrame, more: pl.DataFrame) -> pl.DataFrame:
    """`due` with `more` (`late_postings`, `held_pending`) added as due and posted: a reason,
    dues posted."""
    if more.is_empty():
        return due
    keys = ["customer_id", "business_date"]
    return (due.join(more, on=keys, how="full", coalesce=True)
            .select(*keys, *(pl.sum_horizontal(column, "more_cents").alias(column)
                             for column in ("due_cents", "posted_cents"))))


def rolling_holds(conn: duckdb.DuckDBPyConnection, night: Night, day_settings: pl.DataFrame) -> pl.DataFrame:
    """customer_id, last_held_date: customers of rolling-sweep facilities held for their own data
    (no payment method, duplicate contract) within the last rolling interval, and still so tonight.
    Such a customer counts as billed on that day for the rolling sweep: swept every interval
    while stuck, not every night, where they would keep a quiet night's flagged share over the
    block limit. Once fixed, the hold no longer counts (a hold is not an attempt, SPEC 1.4): they
    are swept the first night after, not an interval later."""
    rolling = day_settings.filter((pl.col("sweep_mode") == "rolling") & pl.col("rolling_sweep_days").is_not_null())
    empty = pl.DataFrame(schema={"customer_id": pl.String, "last_held_date": pl.Date})
    if rolling.is_empty():
        return empty
    # The holds of the dates the intervals cover, few (stuck members), read by date (DuckDB skips
    # the row groups of other dates), then matched with the batch's customers here: sending it
    # the batch's millions of customer-days cost about 0.5 s a night at 10M contracts.
    since = rolling.select((pl.col("business_date") - pl.duration(days=pl.col("rolling_sweep_days"))).min()).item()
    held = query(conn, """
        SELECT customer_id, business_date AS held_on FROM billable_customers SEMI JOIN _rolling USING (facility_id)
        WHERE business_date >= $since AND business_date < $until
          AND hold_reason IN ('no_payment_method', 'duplicate_contract')""",
                 params={"since": since, "until": rolling.get_column("business_date").max()},
                 _rolling=rolling.select("facility_id").unique())
    if held.is_empty():
        return empty
    day = ["customer_id", "business_date"]
    # The held customers' rows of the batch's 8M-row frames, picked by id (0.04 s) before any
    # join: an anti join with every usable method hashed them all (about 0.5 s).
    ids = pl.col("customer_id").is_in(held.get_column("customer_id").unique().implode())
    keys = (night.customer_days.filter(ids)
            .join(rolling.select("facility_id", "business_date", "rolling_sweep_days"), on=["facility_id", "business_date"])
            .select(*day, "rolling_sweep_days"))
    held = (held.join(keys, on="customer_id")
            .filter((pl.col("held_on") < pl.col("business_date"))
                    & (pl.col("held_on") >= pl.col("business_date") - pl.duration(days=pl.col("rolling_sweep_days")))))
    still = pl.concat([held.join(night.usable_methods.filter(ids).select(day), on=day, how="anti"),
                       held.join(night.duplicates.filter(ids).select(day), on=day, how="semi")])
    return still.group_by("customer_id").agg(pl.col("held_on").max().alias("last_held_date"))


def window_neighbours(conn: duckdb.DuckDBPyConnection, night: Night) -> pl.DataFrame:
    """The block counts stored by the facility-days that share a window and date with the batch's
    but are not in it: none for a Dagster window or a whole date (they hold whole windows); for
    `run --facility`, the window's other facilities as their last run left them (those that have
    not run count nothing), so one facility is blocked or billed as its window would be."""
    days = night.facility_days
    window_days = pl.concat([pl.DataFrame(schema=FACILITY_DAYS_SCHEMA),  # a window may hold no facility
                             *(facility_days_for_date(night.inputs.facilities, day)
                               for day in days.get_column("business_date").unique().sort())])  # a date or two
    others = (window_days.join(days.select("partition_key", "business_date").unique(),
                               on=["partition_key", "business_date"], how="semi")
              .join(days, on=["facility_id", "business_date"], how="anti"))
    return query(conn, """
        SELECT o.partition_key, o.business_date, b.billable_customers, b.flagged_customers
        FROM _others o JOIN billing_blocks b USING (facility_id, business_date)""",
                 _others=others.select("facility_id", "business_date", "partition_key"))


def charge_holds(conn: duckdb.DuckDBPyConnection, candidates: pl.DataFrame) -> pl.DataFrame:
    """Customers not to charge today because of their other days' charges (rare: a day killed
    while charging, or rerun, or its charging retried, after a later one):
    charge_pending  an earlier day's charge is written but has no outcome: it may have gone
                    through; rerunning that day sends it and settles it
    billed_later    a later day selected them to be charged (or charged them) and this day never
                    charged them: that day counted their whole balance, this day's dues included,
                    so charging here too would charge them twice.
    Only three sets can decide these: the requests of the days listed in
    `unanswered_charge_days` (every request without an outcome is on one), the requests of the
    batch's dates and later, and the unheld billable customers of later dates; the rest of the
    history is not read."""
    return query(conn, """
        WITH listed_requests AS (
            SELECT * FROM charge_requests SEMI JOIN unanswered_charge_days USING (facility_id, business_date)),
        listed_attempts AS (
            SELECT idempotency_key FROM billing_attempts SEMI JOIN unanswered_charge_days USING (facility_id, business_date)),
        requests AS (
            SELECT r.customer_id, r.business_date, a.idempotency_key IS NULL AS unanswered, true AS requested
            FROM listed_requests r LEFT JOIN listed_attempts a USING (idempotency_key)
            UNION ALL
            SELECT customer_id, business_date, false, true FROM charge_requests WHERE business_date >= $lo
            UNION ALL
            SELECT customer_id, business_date, false, false FROM billable_customers
            WHERE business_date > $lo AND hold_reason IS NULL)
        SELECT k.customer_id, k.business_date,
               bool_or(r.business_date < k.business_date AND r.unanswered) AS charge_pending,
               bool_or(r.business_date > k.business_date)
                   AND NOT bool_or(r.business_date = k.business_date AND r.requested) AS billed_later
        FROM _keys k JOIN requests r USING (customer_id)
        GROUP BY ALL""", params={"lo": candidates.get_column("business_date").min()},
                 _keys=candidates.select("customer_id", "business_date"))


def dues_since(conn: duckdb.DuckDBPyConnection, runs: pl.DataFrame) -> dt.date:
    """The earliest business date whose dues the home runs may count (to skip the older rows):
    a day before the earliest previous run (time zones differ by a day at most), or earlier for
    a facility-day whose dues were first posted after a home's previous day first billed."""
    previous = runs.get_column("previous_run_at")
    if previous.null_count() or previous.is_empty():  # a home's first billed night counts every earlier day
        return dt.date.min
    since = previous.min().date() - dt.timedelta(days=1)
    billed = runs.get_column("previous_billed_first_at").min()
    if billed is not None:
        (late,) = conn.execute("SELECT min(business_date) FROM processed_days WHERE dues_first_posted_at > $billed",
                               {"billed": billed}).fetchall()
        if late[0] is not None:
            since = min(since, late[0])
    return since


def sweep_from(conn: duckdb.DuckDBPyConnection, runs: pl.DataFrame) -> pl.DataFrame:
    """Each facility-day's first date whose fixed sweep day its billing makes up for: the day
    after the facility's last earlier day whose billing finished; if it has never selected anyone
    to bill, its earliest earlier day (a first night killed before its billing, then refused
    once this day billed); else D alone (a warehouse from before the billing stamps: its earlier
    days have `billing_blocks` rows). The same on a rerun: an earlier day never bills after a
    later one (`refuse_superseded_billing`), nor runs at all (`refuse_superseded_days`)."""
    return query(conn, """
        WITH first_selected AS (SELECT facility_id, min(business_date) AS day FROM billing_blocks GROUP BY ALL)
        SELECT r.facility_id, r.business_date,
               coalesce(r.previous_business_date + 1,
                        min(p.business_date) FILTER (WHERE f.day IS NULL OR f.day >= r.business_date),
                        r.business_date) AS sweep_from
        FROM _runs r
        LEFT JOIN processed_days p ON p.facility_id = r.facility_id AND p.business_date < r.business_date
        LEFT JOIN first_selected f ON f.facility_id = r.facility_id
        GROUP BY r.facility_id, r.business_date, r.previous_business_date""",
                 _runs=runs.select("facility_id", "business_date", "previous_business_date"))


def home_runs(conn: duckdb.DuckDBPyConnection, facility_days: pl.DataFrame) -> pl.DataFrame:
    """Each facility-day's run instant with its last earlier day whose billing finished (none on
    the home's first billed night: every earlier facility-day's dues are its to count)."""
    return (facility_days.select("facility_id", "business_date", "run_at")
            .join(previous_runs(conn, facility_days, billed=True), on=["facility_id", "business_date"]))


def balances(conn: duckdb.DuckDBPyConnection, night: Night, keys: pl.DataFrame) -> pl.DataFrame:
    """Balance due now of the (customer_id, business_date, run_at) keys."""
    sums = ledger.ledger_sums(conn, keys)
    return balance_due_now(keys.lazy(), night.inputs.charges.lazy(), night.inputs.payments.lazy(), sums.lazy()).collect()


# --- charging (SPEC 1.5) --------------------------------------------------------------------

def charge(conn: duckdb.DuckDBPyConnection, night: Night, gateway: PaymentGateway,
           settings: CycleSettings) -> tuple[pl.DataFrame, int, int]:
    """Charges every billable customer not on hold, once per business date, whatever reruns.

    1. The requests are written ahead (`charge_requests`); a key already written keeps its
       first request, so a rerun or a resumed run resends exactly what was sent before.
    2. Requests without a final outcome are sent; outcomes and their ledger entries are written
       together, batch by batch.
    Returns the facility-days' billing attempts, how many requests this run sent, and how many
    customers it held that their billable step had not (`holds_at_charging`).
    A blocked facility-day charges no one, and sends or settles nothing an earlier run of it
    wrote: those wait, holding their customers on later days (`charge_pending`), for a rerun of
    the day once it is fixed. The same as in Dagster, where the failed check skips the window's
    charging step (and, for a window that warns, this skips its blocked date).
    """
    days = night.facility_days.join(blocked_days(conn, night.facility_days), on=["facility_id", "business_date"],
                                    how="anti")
    billable = query(conn, """
        SELECT b.* FROM billable_customers b JOIN _days d USING (facility_id, business_date)
        WHERE b.hold_reason IS NULL""", _days=days.select("facility_id", "business_date"))
    keys = ["customer_id", "business_date"]
    planned = billable_rules.charge_requests(
        billable.join(night.usable_methods, on=[*keys, "payment_method_id"])
        .join(night.inputs.facilities.select("facility_id", "surcharge_enabled", "surcharge_percent",
                                             "surcharge_product_id"), on="facility_id")
        .lazy()).collect()
    settle_earlier_requests(conn, planned, days, gateway)
    with transaction(conn):
        unrequested = query(conn, "SELECT b.* FROM _billable b ANTI JOIN charge_requests r USING (customer_id, business_date)",
                            _billable=billable.select(keys))
        held = holds_at_charging(conn, unrequested, planned)
        if held.height:
            execute(conn, """
                UPDATE billable_customers b SET hold_reason = h.hold_reason FROM _held h
                WHERE b.customer_id = h.customer_id AND b.business_date = h.business_date AND b.hold_reason IS NULL""",
                    _held=held)
        new = (planned.join(unrequested, on=keys, how="semi").join(held, on=keys, how="anti")
               .join(billed_as_of(conn, days), on=["facility_id", "business_date"], how="left"))
        insert(conn, "charge_requests", new.with_columns(pl.lit(dt.datetime.now(dt.timezone.utc)).alias("requested_at")),
               key="idempotency_key")
        execute(conn, """INSERT INTO unanswered_charge_days SELECT DISTINCT facility_id, business_date FROM _new
                       ON CONFLICT DO NOTHING""", _new=new.select("facility_id", "business_date"))
    # This run's requests, and those of a run of these days that died before hearing back, as
    # written (`settle_earlier_requests` struck off those that must not go out as written).
    requests = as_sent(unanswered_requests(conn, days))
    sent = run_charges(requests, gateway, settings.charging, lambda outcomes: record_outcomes(conn, outcomes))
    # Every request of the batch's days has its outcome now (errors included).
    execute(conn, """DELETE FROM unanswered_charge_days u USING _days d
                   WHERE u.facility_id = d.facility_id AND u.business_date = d.business_date""",
          _days=days.select("facility_id", "business_date"))
    attempts = query(conn, """
        SELECT a.* FROM billing_attempts a JOIN _days d USING (facility_id, business_date)
        ORDER BY idempotency_key""", _days=night.facility_days.select("facility_id", "business_date"))
    return attempts, sent, held.height


def blocked_days(conn: duckdb.DuckDBPyConnection, facility_days: pl.DataFrame) -> pl.DataFrame:
    """facility_id, business_date of the facility-days whose billing the pre-billing checks block."""
    return query(conn, """SELECT facility_id, business_date FROM billing_blocks
                           SEMI JOIN _days USING (facility_id, business_date) WHERE blocked""",
                 _days=facility_days.select("facility_id", "business_date"))


def unanswered_requests(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame) -> pl.DataFrame:
    """The facility-days' charge requests without an outcome. An attempt has its request's date
    (the key holds it): the date range keeps the anti join off the attempts of every earlier
    day (0.5 s a night at 90 days of history)."""
    dates = days.get_column("business_date")
    return query(conn, """
        SELECT r.* FROM charge_requests r JOIN _days d USING (facility_id, business_date)
        ANTI JOIN (SELECT idempotency_key FROM billing_attempts WHERE business_date BETWEEN $lo AND $hi) a
             USING (idempotency_key)
        WHERE r.business_date BETWEEN $lo AND $hi ORDER BY r.idempotency_key""",
                 params={"lo": dates.min(), "hi": dates.max()}, _days=days.select("facility_id", "business_date"))


def settle_earlier_requests(conn: duckdb.DuckDBPyConnection, planned: pl.DataFrame, days: pl.DataFrame,
                            gateway: PaymentGateway) -> None:
    """Settles the requests an earlier run of these days wrote, never heard back on, and that
    this billing (`planned`) would not send as written: the export changed since (the customer
    paid at the desk, the card was removed, the balance moved). Such a request may have reached
    the gateway. A gateway that can tell (`answered`) settles it: a key it answered is recorded
    with that answer, whatever tonight's billing says (the money moved); a key it never saw is
    struck off, and its customer goes on as any other this billing has not requested yet
    (charged as it says, under the same key, or held, or not billed). A gateway that cannot
    tell is sent the request as written: it may have gone through."""
    answered = getattr(gateway, "answered", None)
    if answered is None:
        return
    same = ["idempotency_key", "facility_id", "payment_method_id", "token", "amount_cents", "surcharge_cents"]
    stale = unanswered_requests(conn, days).join(planned.select(same), on=same, how="anti", nulls_equal=True)
    if stale.is_empty():
        return
    known = asyncio.run(answered(stale.get_column("idempotency_key")))
    settled = stale.join(known, on="idempotency_key")
    if settled.height:
        record_outcomes(conn, as_sent(settled).join(settled.select(
            "idempotency_key", "outcome", "decline_code", "reference",
            pl.lit("answered from the gateway's record: the run that sent it stopped before hearing back")
            .alias("message"), pl.lit(None, pl.Int32).alias("tries"), completed_now()), on="idempotency_key"))
    execute(conn, "DELETE FROM charge_requests WHERE idempotency_key IN (SELECT idempotency_key FROM _unsent)",
            _unsent=stale.join(known, on="idempotency_key", how="anti").select("idempotency_key"))


def as_sent(requests: pl.DataFrame) -> pl.DataFrame:
    """`charge_requests` rows as `run_charges` sends them and `record_outcomes` records them."""
    return requests.select("idempotency_key", "business_date", "facility_id", "customer_id", "payment_method_id",
                           "token", "amount_cents", "surcharge_cents", "surcharge_product_id",
                           (pl.col("amount_cents") + pl.col("surcharge_cents")).alias("charge_cents"))


def billed_as_of(conn: duckdb.DuckDBPyConnection, days: pl.DataFrame) -> pl.DataFrame:
    """facility_id, business_date, balance_as_of: when each facility-day's billing step last
    worked out the balances its charges bill (`late_postings` tells by it what they held)."""
    return query(conn, """SELECT facility_id, business_date, billed_last_at AS balance_as_of
                           FROM processed_days SEMI JOIN _days USING (facility_id, business_date)""",
                 _days=days.select("facility_id", "business_date"))


def holds_at_charging(conn: duckdb.DuckDBPyConnection, unrequested: pl.DataFrame,
                      planned: pl.DataFrame) -> pl.DataFrame:
    """customer_id, business_date, hold_reason of the customers not requested yet whom charging
    holds though their billable step, which decided earlier, did not (in `apply_holds`' order):
    no_payment_method  their default method is no longer usable (the export was replaced between
                       the steps): said, not dropped in silence; a rerun of the day bills the new one
    charge_pending / billed_later  another day's charge now holds them (`charge_holds`): charging
                       retried alone after a later day selected or charged them would charge twice."""
    keys = ["customer_id", "business_date"]
    if unrequested.is_empty():
        return unrequested.with_columns(pl.lit(None, pl.String).alias("hold_reason"))
    reason = (pl.when(pl.col("_planned").is_null()).then(pl.lit("no_payment_method"))
              .when(pl.col("charge_pending").fill_null(False)).then(pl.lit("charge_pending"))
              .when(pl.col("billed_later").fill_null(False)).then(pl.lit("billed_later")))
    return (unrequested.join(planned.select(*keys, pl.lit(True).alias("_planned")), on=keys, how="left")
            .join(charge_holds(conn, unrequested), on=keys, how="left")
            .select(*keys, reason.alias("hold_reason"))
            .filter(pl.col("hold_reason").is_not_null()))


def record_outcomes(conn: duckdb.DuckDBPyConnection, outcomes: pl.DataFrame) -> None:
    """Writes a chunk of charge outcomes (`run_charges`' requests with their answers) and the
    ledger entries of the approved ones, in one transaction."""
    attempts = outcomes.drop("token", "charge_cents").rename({"reference": "gateway_reference"})
    with transaction(conn):
        insert(conn, "billing_attempts", attempts.drop("surcharge_product_id"), key="idempotency_key")
        # New by construction: billing_attempts above refuses a second outcome of a charge.
        ledger.post_new_entries(conn, ledger.billing_entries(attempts.filter(pl.col("outcome") == "approved")))


# --- the whole cycle, as `billing-pipeline run` calls it -------------------------------------

@dataclass(frozen=True)
class NightSummary:
    facility_days: int
    dues_posted: int
    dues_errors: int
    billable: int
    held: int
    blocked_facility_days: list[str]
    approved: int
    declined: int
    errors: int
    ledger_problems: dict[str, int]


def run_night(conn: duckdb.DuckDBPyConnection, night: Night, gateway: PaymentGateway,
              settings: CycleSettings) -> NightSummary:
    maintenance(conn, night)
    posted, _ = post_dues(conn, night)
    night.forget("changes", "timeline", "contracts", "routed", "own_contracts", "keyed_contracts")
    selected = select_billable(conn, night, settings)
    night.forget("customer_days", "duplicates", "without_payment_method")
    attempts, _, _ = charge(conn, night, gateway, settings)
    problems = {name: frame.height for name, frame in ledger.ledger_problems(conn, night.facility_days).items()}
    blocks = selected["billing_blocks"].filter(pl.col("blocked"))
    outcomes = attempts.get_column("outcome")
    return NightSummary(
        facility_days=night.facility_days.height,
        dues_posted=posted["dues_postings"].height,
        dues_errors=posted["dues_posting_errors"].height,
        billable=selected["billable_customers"].height,
        held=selected["billable_customers"].filter(pl.col("hold_reason").is_not_null()).height,
        blocked_facility_days=[f"{r['facility_id']} {r['business_date']}" for r in blocks.iter_rows(named=True)],
        approved=int((outcomes == "approved").sum()),
        declined=int((outcomes == "declined").sum()),
        errors=int((outcomes == "error").sum()),
        ledger_problems=problems,
    )
