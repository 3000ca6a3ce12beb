"""The ledger's write path and what is read back from it: the one module that touches `ledger`.

The ledger is append-only. Entry ids are made from what they record, so a second posting of a
period or of a day's payment has the same id and is dropped, not added: rerunning anything
never posts twice. `customer_balances` moves in the same transaction; the ledger check
(`ledger_problems`) recomputes it from the entries after every run.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings

import duckdb
import polars as pl

from billing_pipeline.rules.text import fmt
from billing_pipeline.warehouse.state import PERIOD_END_SQL, PERIOD_KINDS, PERIOD_KINDS_SQL, contract_periods_upsert
from billing_pipeline.warehouse.store import execute, query, register

LEDGER_COLUMNS = ["entry_id", "business_date", "facility_id", "customer_id", "kind", "amount_cents",
                  "contract_id", "bill_date", "period_end", "idempotency_key", "product_id", "series_from"]


def period_entry_id(contract_id: pl.Expr, bill_date: pl.Expr) -> pl.Expr:
    return fmt("period|{}|{}", contract_id, bill_date)


def dues_entries(postings: pl.DataFrame) -> pl.DataFrame:
    return postings.select(
        period_entry_id(pl.col("contract_id"), pl.col("bill_date")).alias("entry_id"),
        "business_date", "facility_id", "customer_id", "kind", "amount_cents", "contract_id", "bill_date",
        "period_end", pl.lit(None, pl.String).alias("idempotency_key"), pl.lit(None, pl.String).alias("product_id"),
        "series_from")


def billing_entries(approved: pl.DataFrame) -> pl.DataFrame:
    """Ledger entries for approved charges: the surcharge (a debit of the facility's surcharge
    product, if any) and the payment of
    the whole amount charged (a credit), so the balance after it is zero."""
    base = approved.select("business_date", "facility_id", "customer_id", "idempotency_key",
                           "amount_cents", "surcharge_cents", "surcharge_product_id")
    surcharges = base.filter(pl.col("surcharge_cents") > 0).select(
        fmt("surcharge|{}", "idempotency_key").alias("entry_id"), "business_date", "facility_id",
        "customer_id", pl.lit("surcharge").alias("kind"), pl.col("surcharge_cents").alias("amount_cents"),
        pl.lit(None, pl.String).alias("contract_id"), pl.lit(None, pl.Date).alias("bill_date"),
        pl.lit(None, pl.Date).alias("period_end"), "idempotency_key",
        pl.col("surcharge_product_id").alias("product_id"), pl.lit(None, pl.Date).alias("series_from"))
    payments = base.select(
        fmt("payment|{}", "idempotency_key").alias("entry_id"), "business_date", "facility_id",
        "customer_id", pl.lit("billing_payment").alias("kind"),
        (-(pl.col("amount_cents") + pl.col("surcharge_cents"))).alias("amount_cents"),
        pl.lit(None, pl.String).alias("contract_id"), pl.lit(None, pl.Date).alias("bill_date"),
        pl.lit(None, pl.Date).alias("period_end"), "idempotency_key",
        pl.lit(None, pl.String).alias("product_id"), pl.lit(None, pl.Date).alias("series_from"))
    return pl.concat([surcharges, payments])


def post_entries(conn: duckdb.DuckDBPyConnection, entries: pl.DataFrame) -> int:
    """Appends the entries not in the ledger yet and moves balances by them (inside a
    transaction). Returns how many were new."""
    if entries.height == 0:
        return 0
    # The primary key finds entries already posted (an index lookup per entry, not a scan of
    # the ledger); only the entries really inserted move balances. Keys go in sorted, as
    # `store.insert(key=...)` does: cheaper for the index. (Tried: finding posted ids by a join
    # with the ledger, then a plain INSERT: 0.6 s faster for a first night's 1.4M periods, but
    # the join reads every entry id ever posted: +1.1 s a night at 33M ledger rows, growing.)
    register(conn, "_entries", entries.select(LEDGER_COLUMNS).unique("entry_id", keep="first").sort("entry_id"))
    columns = ", ".join(LEDGER_COLUMNS)
    with warnings.catch_warnings():  # RETURNING rows come through the DB-API: one copy, expected
        warnings.simplefilter("ignore", UserWarning)
        inserted = conn.execute(f"""
            INSERT INTO ledger ({columns}, posted_at) SELECT {columns}, now() FROM _entries
            ON CONFLICT DO NOTHING RETURNING customer_id, amount_cents, kind, contract_id, bill_date,
                                             period_end, business_date, series_from""").to_arrow_table()
    conn.unregister("_entries")
    move_state(conn, pl.from_arrow(inserted))
    return inserted.num_rows


def posted_by_other_days(conn: duckdb.DuckDBPyConnection, postings: pl.DataFrame) -> pl.DataFrame:
    """contract_id, bill_date of the dues `postings` (with their entry_id) whose period is in the
    ledger under another facility-day than the posting's."""
    if postings.is_empty():
        return postings.select("contract_id", "bill_date")
    return query(conn, """
        SELECT p.contract_id, p.bill_date FROM _postings p JOIN ledger l USING (entry_id)
        WHERE l.business_date <> p.business_date OR l.facility_id <> p.facility_id""",
                 _postings=postings.select("entry_id", "contract_id", "bill_date", "business_date", "facility_id"))


def postings_kept(conn: duckdb.DuckDBPyConnection, facility_days: pl.DataFrame) -> pl.DataFrame:
    """The stored dues_postings rows of the facility-days whose period the ledger has under that
    same facility-day: what those days posted, a fact a rerun keeps even when its export no
    longer gives the period to that day (the contract moved, its schedule was edited)."""
    dates = facility_days.get_column("business_date")
    # The days' rows first (DuckDB skips the row groups of other dates; none on a first run of
    # the days, every night's case), then the ledger probed by their ids, not hashed whole.
    stored = query(conn, """
        SELECT p.* FROM dues_postings p JOIN _days d USING (facility_id, business_date)
        WHERE p.business_date BETWEEN $lo AND $hi""",
                   params={"lo": dates.min(), "hi": dates.max()},
                   _days=facility_days.select("facility_id", "business_date"))
    if stored.is_empty():
        return stored
    # As the ledger has them (a row a rerun rewrote with other values, before, is put right).
    return query(conn, """
        SELECT p.business_date, p.facility_id, p.contract_id, l.customer_id, p.bill_date, l.period_end, l.kind,
               l.amount_cents, p.entry_id, l.series_from
        FROM _stored p JOIN (SELECT entry_id, facility_id, business_date, customer_id, kind, amount_cents, period_end,
                                    series_from
                             FROM ledger
                             SEMI JOIN _stored USING (entry_id)) l
          USING (entry_id, facility_id, business_date)""", _stored=stored)


def periods_in_ledger(conn: duckdb.DuckDBPyConnection, keys: pl.DataFrame) -> pl.DataFrame:
    """contract_id, bill_date of the `keys` whose period the ledger has (by entry id: an index
    lookup each)."""
    if keys.is_empty():
        return keys.select("contract_id", "bill_date")
    return query(conn, "SELECT contract_id, bill_date FROM _keys SEMI JOIN ledger USING (entry_id)",
                 _keys=keys.select("contract_id", "bill_date",
                                   period_entry_id(pl.col("contract_id"), pl.col("bill_date")).alias("entry_id")))


def periods_posted_since(conn: duckdb.DuckDBPyConnection, contract_days: pl.DataFrame) -> pl.DataFrame:
    """contract_id, business_date, posted_bill_date, posted_period_end: the periods the ledger has
    of the contracts posted on those business dates or later (by any facility; the end is null in
    an entry written before periods had one)."""
    if contract_days.is_empty():
        return pl.DataFrame(schema={"contract_id": pl.String, "business_date": pl.Date, "posted_bill_date": pl.Date,
                                    "posted_period_end": pl.Date})
    return query(conn, f"""
        SELECT d.contract_id, d.business_date, l.bill_date AS posted_bill_date, l.period_end AS posted_period_end
        FROM ledger l JOIN _days d ON l.contract_id = d.contract_id AND l.business_date >= d.business_date
        WHERE l.kind IN {PERIOD_KINDS_SQL} AND l.business_date >= $lo""",
                 params={"lo": contract_days.get_column("business_date").min()},
                 _days=contract_days.select("contract_id", "business_date").unique())


def post_new_entries(conn: duckdb.DuckDBPyConnection, entries: pl.DataFrame) -> int:
    """Appends entries that cannot be in the ledger yet, and moves balances by them (inside a
    transaction): the payments and surcharges of charges whose outcomes go into
    `billing_attempts` in the same transaction, whose primary key refuses a second outcome of a
    charge. A plain INSERT: about half the time of `post_entries`' ON CONFLICT ... RETURNING
    (1.4M entries: 1.1 s against 2.0 s). The ledger's primary key still refuses an id posted
    twice: the transaction fails, nothing is skipped."""
    if entries.height == 0:
        return 0
    entries = entries.select(LEDGER_COLUMNS).sort("entry_id")
    columns = ", ".join(LEDGER_COLUMNS)
    execute(conn, f"INSERT INTO ledger ({columns}, posted_at) SELECT {columns}, now() FROM _entries",
            _entries=entries)
    move_state(conn, entries)
    return entries.height


def move_state(conn: duckdb.DuckDBPyConnection, inserted: pl.DataFrame) -> None:
    """Moves customer_balances and contract_periods by entries just inserted into the ledger."""
    if inserted.height == 0:
        return
    execute(conn, """
        INSERT INTO customer_balances
        SELECT customer_id, sum(amount_cents)::BIGINT, count(*) FROM _inserted GROUP BY customer_id ORDER BY customer_id
        ON CONFLICT (customer_id) DO UPDATE
        SET balance_cents = balance_cents + excluded.balance_cents, entries = entries + excluded.entries""",
            _inserted=inserted.select("customer_id", "amount_cents"))
    periods = inserted.filter(pl.col("kind").is_in(PERIOD_KINDS))
    if periods.height:
        execute(conn, contract_periods_upsert("_periods"),
                _periods=periods.select("kind", "contract_id", "bill_date", "period_end", "business_date", "series_from"))


def ledger_sums(conn: duckdb.DuckDBPyConnection, customer_days: pl.DataFrame) -> pl.DataFrame:
    """Per customer (SPEC 1.4): the ledger entries of facility-days that ran before the home
    facility's run tonight (`run_at`), and the dues / freeze fees posted by facility-days at that
    same instant, in both cases of business dates up to the home's (a facility more than 24
    hours east runs its D+1 before the home's D; `run --date D` has not run it yet). The
    customer's own billing entries of tonight are left out, so a rerun bills what the first
    run billed."""
    return query(conn, f"""
        SELECT l.customer_id,
               coalesce(sum(l.amount_cents) FILTER (WHERE p.run_at < c.run_at), 0)::BIGINT AS ledger_before_cents,
               coalesce(sum(l.amount_cents) FILTER (WHERE p.run_at = c.run_at
                   AND l.kind IN {PERIOD_KINDS_SQL}), 0)::BIGINT AS ledger_dues_today_cents
        FROM ledger l JOIN _days c ON l.customer_id = c.customer_id AND l.business_date <= c.business_date
        JOIN processed_days p ON p.facility_id = l.facility_id AND p.business_date = l.business_date
        GROUP BY l.customer_id""", _days=customer_days.select("customer_id", "business_date", "run_at"))


def last_posted_periods(conn: duckdb.DuckDBPyConnection, contract_days: pl.DataFrame) -> pl.DataFrame:
    """Per contract with a period in the ledger: `last_bill_date`, the latest bill date posted
    before the business date, and `paid_through`, the last day the periods posted before it
    cover (both null if none; for a rerun, paid_through is null too when those entries were
    written before periods had an end); `first_period_date` and `series_from`, the earliest
    bill date and series start of those periods (`dues.early_windows`); and `posted_since`,
    whether a period of it was
    posted on that date or later (a day rerun, or run late). From contract_periods when its
    latest posting is from an earlier date (every night's case); from the contract's ledger
    entries otherwise. (A rerun recomputes its date's periods: those it posted are posted
    already, one it skipped posts now, one standing in for a posted one does not, `dues.stand_ins`.)"""
    return query(conn, f"""
        WITH known AS (SELECT c.contract_id, c.business_date, s.last_bill_date, s.paid_through, s.last_business_date,
                              s.first_period_date, s.series_from
                       FROM _days c JOIN contract_periods s USING (contract_id)),
        rerun AS (SELECT contract_id, business_date FROM known WHERE last_business_date >= business_date),
        found AS (SELECT contract_id, last_bill_date, paid_through, first_period_date, series_from, false AS since
                  FROM known WHERE last_business_date < business_date
                  UNION ALL
                  SELECT contract_id, NULL, NULL, NULL, NULL, true FROM rerun
                  UNION ALL
                  SELECT l.contract_id, l.bill_date, l.period_end, l.bill_date, l.series_from, true
                  FROM ledger l JOIN rerun c USING (contract_id)
                  WHERE l.kind IN {PERIOD_KINDS_SQL} AND l.business_date < c.business_date)
        SELECT contract_id, max(last_bill_date) AS last_bill_date, max(paid_through) AS paid_through,
               min(first_period_date) AS first_period_date, min(series_from) AS series_from,
               bool_or(since) AS posted_since
        FROM found GROUP BY contract_id""", _days=contract_days.select("contract_id", "business_date"))


def ledger_problems(conn: duckdb.DuckDBPyConnection,
                    facility_days: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    """The ledger invariant: balances equal debits minus credits, and no key appears twice.

    With `facility_days`, the check after a run: every customer, period, payment and posting the
    run's facility-days wrote, checked against the whole ledger (what a run did not touch cannot
    have moved). Without, the full audit of every customer, run once a day (`ledger_audit`): at
    33.6M ledger rows (10M contracts) it takes 11 s, a 200-facility window's check 1.4 s
    (`benchmarks.ledger_check`), and a day has some 25 windows.
    """
    scoped = facility_days is not None
    if scoped:
        dates = facility_days.get_column("business_date")
        # The date range lets DuckDB skip row groups of other dates (the ledger grows by date).
        params = {"lo": dates.min(), "hi": dates.max()}
        batch = """SELECT l.* FROM ledger l JOIN _days d USING (facility_id, business_date)
                   WHERE l.business_date BETWEEN $lo AND $hi"""
        batch_attempts = """SELECT a.* FROM billing_attempts a JOIN _days d USING (facility_id, business_date)
                            WHERE a.outcome = 'approved' AND a.business_date BETWEEN $lo AND $hi"""
        batch_postings = "SELECT p.* FROM dues_postings p JOIN _days d USING (facility_id, business_date)"
        touched = "WHERE customer_id IN (SELECT customer_id FROM batch)"
        same = "SEMI JOIN (SELECT DISTINCT {0} FROM batch) USING ({0})"
        paid = "AND business_date BETWEEN $lo AND $hi AND customer_id IN (SELECT customer_id FROM batch)"
        posted = "SEMI JOIN batch_postings USING (contract_id, bill_date)"
        frames = {"_days": facility_days.select("facility_id", "business_date")}
    else:
        params, frames = None, {}
        batch = "SELECT * FROM ledger"
        batch_attempts = "SELECT * FROM billing_attempts WHERE outcome = 'approved'"
        batch_postings = "SELECT * FROM dues_postings"
        touched = same = paid = posted = ""
    ctes = f"WITH batch AS ({batch}), batch_attempts AS ({batch_attempts}), batch_postings AS ({batch_postings})"
    queries = {
        "balance_mismatches": f"""
            {ctes}, sums AS (SELECT customer_id, sum(amount_cents)::BIGINT AS ledger_cents, count(*) AS n
                             FROM ledger {touched} GROUP BY customer_id)
            SELECT coalesce(s.customer_id, b.customer_id) AS customer_id, s.ledger_cents, b.balance_cents
            FROM sums s FULL JOIN (SELECT * FROM customer_balances {touched}) b USING (customer_id)
            WHERE s.ledger_cents IS DISTINCT FROM b.balance_cents OR s.n IS DISTINCT FROM b.entries
            ORDER BY 1 LIMIT 100""",
        "duplicate_periods": f"""
            {ctes} SELECT contract_id, bill_date, count(*) AS n FROM ledger {same.format("contract_id, bill_date")}
            WHERE kind IN {PERIOD_KINDS_SQL} GROUP BY ALL HAVING count(*) > 1 ORDER BY 1, 2 LIMIT 100""",
        "duplicate_payments": f"""
            {ctes} SELECT idempotency_key, kind, count(*) AS n FROM ledger {same.format("idempotency_key")}
            WHERE kind IN ('billing_payment', 'surcharge') GROUP BY ALL HAVING count(*) > 1 ORDER BY 1 LIMIT 100""",
        "duplicate_entry_ids": f"""
            {ctes} SELECT entry_id, count(*) AS n FROM ledger {same.format("entry_id")}
            GROUP BY ALL HAVING count(*) > 1 ORDER BY 1 LIMIT 100""",
        # The ledger against what the other tables say happened: it is not only checked against
        # the code that wrote it.
        "payments_not_matching_approved_charges": f"""
            {ctes} SELECT coalesce(a.idempotency_key, l.idempotency_key) AS idempotency_key,
                   -(a.amount_cents + a.surcharge_cents) AS charged, l.amount_cents AS posted
            FROM batch_attempts a FULL JOIN (SELECT * FROM batch WHERE kind = 'billing_payment') l USING (idempotency_key)
            WHERE l.amount_cents IS DISTINCT FROM -(a.amount_cents + a.surcharge_cents)
            ORDER BY 1 LIMIT 100""",
        "customers_paid_twice_a_day": f"""
            {ctes} SELECT customer_id, business_date, count(*) AS n FROM ledger WHERE kind = 'billing_payment' {paid}
            GROUP BY ALL HAVING count(*) > 1 ORDER BY ALL LIMIT 100""",
        "postings_missing_from_ledger": f"""
            {ctes}, -- the ledger probes the postings: ANTI JOIN ledger hashed every entry id (1.7 s at 33M)
            -- the same entry, kind, amount and end: a posting listed with other values than posted is missing too
            posted AS (SELECT entry_id, kind, amount_cents, period_end FROM ledger SEMI JOIN batch_postings USING (entry_id))
            SELECT p.entry_id FROM batch_postings p ANTI JOIN posted l
              ON p.entry_id = l.entry_id AND p.kind = l.kind AND p.amount_cents = l.amount_cents
                 AND p.period_end IS NOT DISTINCT FROM l.period_end
            ORDER BY 1 LIMIT 100""",
        # The state a night reads instead of the ledger's periods (`last_posted_periods`): after a
        # run, it covers every period the run posted; the daily audit checks it equals the ledger.
        "contract_periods_mismatches": f"""
            {ctes}, periods AS (SELECT contract_id, max(bill_date) AS ledger_bill_date,
                                       max(business_date) AS ledger_business_date,
                                       max({PERIOD_END_SQL}) AS ledger_paid_through,
                                       min(bill_date) AS ledger_first_period, min(series_from) AS ledger_series_from
                                FROM {"batch" if scoped else "ledger"} WHERE kind IN {PERIOD_KINDS_SQL} GROUP BY contract_id)
            SELECT coalesce(p.contract_id, s.contract_id) AS contract_id, p.ledger_bill_date, s.last_bill_date,
                   p.ledger_business_date, s.last_business_date, p.ledger_paid_through, s.paid_through,
                   p.ledger_first_period, s.first_period_date, p.ledger_series_from, s.series_from
            FROM periods p {"LEFT" if scoped else "FULL"} JOIN contract_periods s USING (contract_id)
            WHERE {"s.contract_id IS NULL OR s.last_bill_date < p.ledger_bill_date"
                   " OR s.last_business_date < p.ledger_business_date OR s.paid_through < p.ledger_paid_through"
                   " OR s.first_period_date > p.ledger_first_period"
                   " OR s.series_from IS NULL AND p.ledger_series_from IS NOT NULL"
                   " OR s.series_from > p.ledger_series_from"
                   if scoped else
                   "p.ledger_bill_date IS DISTINCT FROM s.last_bill_date"
                   " OR p.ledger_business_date IS DISTINCT FROM s.last_business_date"
                   " OR p.ledger_paid_through IS DISTINCT FROM s.paid_through"
                   " OR p.ledger_first_period IS DISTINCT FROM s.first_period_date"
                   " OR p.ledger_series_from IS DISTINCT FROM s.series_from"}
            ORDER BY 1 LIMIT 100""",
        # A billing's balance counts the entries of processed facility-days only (`ledger_sums`):
        # an entry of a day that never ran would be owed and billed by no one.
        "entries_of_unprocessed_days": f"""
            {ctes} SELECT facility_id, business_date, count(*) AS entries
            FROM batch ANTI JOIN processed_days USING (facility_id, business_date)
            GROUP BY ALL ORDER BY ALL LIMIT 100""",
        "periods_posted_on_two_days": f"""
            {ctes} SELECT contract_id, bill_date, count(DISTINCT business_date) AS days FROM dues_postings {posted}
            GROUP BY ALL HAVING count(DISTINCT business_date) > 1 ORDER BY ALL LIMIT 100""",
    }
    if scoped:
        # The primary key refuses a second entry id; only the daily audit confirms it, as a scan
        # of every entry id (a third of a window's check at 33M ledger rows).
        del queries["duplicate_entry_ids"]
    return {name: query(conn, sql, params=params, **frames) for name, sql in queries.items()}


def audit(conn: duckdb.DuckDBPyConnection) -> tuple[dict[str, pl.DataFrame], dict]:
    """The full audit: every check over the whole ledger, recorded in `ledger_audits`."""
    problems = ledger_problems(conn)
    counts = {name: frame.height for name, frame in problems.items()}
    (row,) = conn.execute("SELECT count(*), count(DISTINCT customer_id) FROM ledger").fetchall()
    record = {"audited_at": dt.datetime.now(dt.timezone.utc), "ledger_entries": row[0], "customers": row[1],
              "problems": sum(counts.values()), "problems_by_check": json.dumps(counts)}
    conn.execute("INSERT INTO ledger_audits VALUES ($audited_at, $ledger_entries, $customers, $problems, "
                 "$problems_by_check)", record)
    return problems, record
