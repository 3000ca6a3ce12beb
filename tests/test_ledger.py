"""The ledger's write path: an entry id is posted once, whatever comes in again, and balances
move by exactly what was posted."""

import datetime as dt
from importlib import resources

import duckdb
import polars as pl
import pytest

from billing_pipeline.warehouse import ledger
from billing_pipeline.warehouse.store import TransactionAborted, create_schema, transaction

DAY = dt.date(2026, 3, 2)


def warehouse(tmp_path):
    """A warehouse in which F1 ran every day of 2026 (the ledger check finds entries of a
    facility-day that never ran)."""
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    conn.execute(resources.files("billing_pipeline.warehouse").joinpath("schema.sql").read_text())
    conn.execute("INSERT INTO processed_days (facility_id, business_date) "
                 "SELECT 'F1', d::DATE FROM range(DATE '2026-01-01', DATE '2027-01-01', INTERVAL 1 DAY) t(d)")
    return conn


def entries(*rows, day=DAY):
    """rows: (entry_id, customer_id, amount_cents), dues of contract K-<entry_id> for `day`'s period;
    or (entry_id, customer_id, amount_cents, contract_id, bill_date[, period_end]). A period ends
    a month after its bill date unless given."""
    rows = [r if len(r) >= 5 else (*r, f"K-{r[0]}", day) for r in rows]
    rows = [r if len(r) == 6 else (*r, month_end(r[4])) for r in rows]
    return pl.DataFrame([{"entry_id": e, "business_date": day, "facility_id": "F1", "customer_id": c, "kind": "dues",
                          "amount_cents": a, "contract_id": k, "bill_date": b, "period_end": end,
                          "idempotency_key": None, "product_id": None, "series_from": b}
                         for e, c, a, k, b, end in rows],
                        schema_overrides={"idempotency_key": pl.String, "product_id": pl.String,
                                          "period_end": pl.Date})


def month_end(bill_date: dt.date) -> dt.date:
    """The day before the same day next month (bill dates here are early in the month)."""
    following = dt.date(bill_date.year + bill_date.month // 12, bill_date.month % 12 + 1, bill_date.day)
    return following - dt.timedelta(days=1)


def balances(conn):
    return {c: (b, n) for c, b, n in conn.execute("SELECT * FROM customer_balances").fetchall()}


def test_an_entry_posted_again_is_left_out_and_moves_no_balance(tmp_path):
    conn = warehouse(tmp_path)
    with transaction(conn):
        assert ledger.post_entries(conn, entries(("e1", "C1", 500), ("e2", "C1", 300), ("e3", "C2", 100))) == 3
    assert balances(conn) == {"C1": (800, 2), "C2": (100, 1)}
    # e2 and e3 again (e3 with another amount: the id decides, not the content), e4 new, e4 twice in one batch
    with transaction(conn):
        assert ledger.post_entries(conn, entries(("e2", "C1", 300), ("e3", "C2", 999), ("e4", "C2", 50),
                                                 ("e4", "C2", 50))) == 1
    assert balances(conn) == {"C1": (800, 2), "C2": (150, 2)}
    assert conn.execute("SELECT entry_id, amount_cents FROM ledger ORDER BY 1").fetchall() == [
        ("e1", 500), ("e2", 300), ("e3", 100), ("e4", 50)]
    with transaction(conn):
        assert ledger.post_entries(conn, entries(("e1", "C1", 500))) == 0
    assert balances(conn) == {"C1": (800, 2), "C2": (150, 2)}
    assert not any(frame.height for frame in ledger.ledger_problems(conn).values())


def test_the_primary_key_refuses_a_second_posting_that_bypasses_the_check(tmp_path):
    conn = warehouse(tmp_path)
    with transaction(conn):
        ledger.post_entries(conn, entries(("e1", "C1", 500)))
    with pytest.raises(duckdb.ConstraintException):
        conn.execute("INSERT INTO ledger (entry_id, business_date, facility_id, customer_id, kind, amount_cents) "
                     "VALUES ('e1', DATE '2026-03-02', 'F1', 'C1', 'dues', 500)")
    assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (1,)


def last_posted(conn, *contract_days):
    """{contract: last day paid by the periods posted before the date} of the contracts with one."""
    frame = pl.DataFrame(list(contract_days), schema=["contract_id", "business_date"], orient="row")
    found = ledger.last_posted_periods(conn, frame).filter(pl.col("paid_through").is_not_null())
    return dict(found.select("contract_id", "paid_through").iter_rows())


def posted_since(conn, contract_id, business_date):
    frame = pl.DataFrame({"contract_id": [contract_id], "business_date": [business_date]})
    return dict(ledger.last_posted_periods(conn, frame).select("contract_id", "posted_since").iter_rows())


def test_the_last_posted_period_comes_from_the_state_or_for_a_rerun_from_the_ledger(tmp_path):
    """K1: the March period posted on March 2 (paid through April 1), April's on April 1 (paid
    through April 30). The next day reads contract_periods; a rerun of April 1 (its posting is
    from that date) reads the ledger's periods before it; so does a day run late. A warehouse
    written before contract_periods existed gets it from its ledger when opened; the audit finds
    a state edited by hand."""
    conn = warehouse(tmp_path)
    april, april_end, march_end = dt.date(2026, 4, 1), dt.date(2026, 4, 30), dt.date(2026, 4, 1)
    with transaction(conn):
        ledger.post_entries(conn, entries(("p1", "C1", 500, "K1", DAY)))
    with transaction(conn):
        ledger.post_entries(conn, entries(("p2", "C1", 500, "K1", april), day=april))
    assert conn.execute("SELECT * FROM contract_periods").fetchall() == [("K1", april, april, april_end, DAY, DAY)]
    assert last_posted(conn, ("K1", dt.date(2026, 4, 2))) == {"K1": april_end}
    assert last_posted(conn, ("K1", april)) == {"K1": march_end}  # a rerun of April 1
    assert last_posted(conn, ("K1", dt.date(2026, 3, 15))) == {"K1": march_end}  # a day run late
    assert last_posted(conn, ("K1", DAY)) == {}
    assert last_posted(conn, ("K2", april)) == {}
    # whether a period of the contract was posted on the date or later: its new periods may exist
    assert posted_since(conn, "K1", dt.date(2026, 4, 2)) == {"K1": False}
    assert posted_since(conn, "K1", april) == posted_since(conn, "K1", DAY) == {"K1": True}
    assert posted_since(conn, "K2", april) == {}
    # a contract asked for twice (two dates) gets one row, the latest of both, as from the ledger
    twice = pl.DataFrame({"contract_id": ["K1", "K1"], "business_date": [april, dt.date(2026, 4, 2)]})
    assert ledger.last_posted_periods(conn, twice).rows() == [("K1", april, april_end, DAY, DAY, True)]

    conn.execute("DROP TABLE contract_periods")
    create_schema(conn)
    assert conn.execute("SELECT * FROM contract_periods").fetchall() == [("K1", april, april, april_end, DAY, DAY)]
    assert not any(frame.height for frame in ledger.ledger_problems(conn).values())

    day = pl.DataFrame({"facility_id": ["F1"], "business_date": [april]})
    for edit in ("last_bill_date = DATE '2026-03-02'", f"paid_through = DATE '{march_end}'",
                 "first_period_date = DATE '2026-04-02'", "series_from = DATE '2026-04-02'", "series_from = NULL"):
        conn.execute(f"UPDATE contract_periods SET {edit}")
        assert ledger.ledger_problems(conn)["contract_periods_mismatches"].height == 1, edit
        # the check after the April 1 run (its periods only) finds it too
        assert ledger.ledger_problems(conn, day)["contract_periods_mismatches"].height == 1, edit
        conn.execute("DROP TABLE contract_periods")
        create_schema(conn)  # made again from the ledger


@pytest.mark.parametrize("old_columns", [
    "last_bill_date DATE NOT NULL, last_business_date DATE NOT NULL",  # before periods had an end
    "last_bill_date DATE NOT NULL, last_business_date DATE NOT NULL, paid_through DATE NOT NULL",  # no series start
])
def test_periods_of_an_older_ledger_without_an_end_are_paid_through_their_bill_date(tmp_path, old_columns):
    """A file written before periods had an end (or before their series start was kept): its
    contract_periods is made again from the ledger at the next open, and an entry without an end
    counts its bill date as paid (the window opens after it, as that version did). An entry
    without a series start (K2's earlier one) leaves the start to those that have one."""
    conn = warehouse(tmp_path)
    earlier = DAY - dt.timedelta(days=28)
    with transaction(conn):
        ledger.post_entries(conn, entries(("p1", "C1", 500, "K1", DAY, None), ("p2", "C2", 500, "K2", DAY),
                                          ("p3", "C2", 500, "K2", earlier)))
    conn.execute("UPDATE ledger SET series_from = NULL WHERE entry_id IN ('p1', 'p3')")  # as written before it existed
    conn.execute("DROP TABLE contract_periods")
    conn.execute(f"CREATE TABLE contract_periods (contract_id VARCHAR PRIMARY KEY, {old_columns})")
    conn.execute(f"INSERT INTO contract_periods VALUES ('K1', {', '.join(['$d'] * (old_columns.count(',') + 1))})",
                 {"d": DAY})
    create_schema(conn)
    assert conn.execute("SELECT * FROM contract_periods ORDER BY 1").fetchall() == [
        ("K1", DAY, DAY, DAY, DAY, None), ("K2", DAY, DAY, month_end(DAY), earlier, DAY)]
    assert last_posted(conn, ("K1", DAY + dt.timedelta(days=1))) == {"K1": DAY}
    assert not any(frame.height for frame in ledger.ledger_problems(conn).values())


def test_new_entries_go_in_plainly_and_a_second_posting_fails_the_transaction(tmp_path):
    """Payments are posted with their charge's outcome, which billing_attempts takes once: a
    plain INSERT. Should an id come again anyway, the transaction fails and nothing of it stays."""
    conn = warehouse(tmp_path)
    with transaction(conn):
        assert ledger.post_new_entries(conn, entries(("e1", "C1", 500), ("e2", "C2", -300))) == 2
    assert balances(conn) == {"C1": (500, 1), "C2": (-300, 1)}
    with pytest.raises(duckdb.ConstraintException), transaction(conn):
        ledger.post_new_entries(conn, entries(("e3", "C1", 100), ("e1", "C1", 500)))
    assert balances(conn) == {"C1": (500, 1), "C2": (-300, 1)}
    assert conn.execute("SELECT entry_id FROM ledger ORDER BY 1").fetchall() == [("e1",), ("e2",)]


def test_a_transaction_whose_failed_statement_was_caught_is_refused_not_silently_dropped(tmp_path):
    # DuckDB commits nothing of such a transaction and says nothing: the writer must hear of it.
    conn = warehouse(tmp_path)
    with pytest.raises(TransactionAborted):
        with transaction(conn):
            ledger.post_new_entries(conn, entries(("e1", "C1", 500)))
            with pytest.raises(duckdb.ConstraintException):
                ledger.post_new_entries(conn, entries(("e1", "C1", 500)))
    assert conn.execute("SELECT count(*) FROM ledger").fetchall() == [(0,)]
    with transaction(conn):  # the connection is usable again
        ledger.post_new_entries(conn, entries(("e2", "C1", 300)))
    assert balances(conn) == {"C1": (300, 1)}
