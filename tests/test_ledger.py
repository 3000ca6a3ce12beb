"""The ledger's write path: an entry id is posted once, whatever comes in again, and balances
move by exactly what was posted."""

import datetime as dt
from importlib import resources

import duckdb
import polars as pl
import pytest

from billing_pipeline.warehouse import ledger
from billing_pipeline.warehouse.store import transaction

DAY = dt.date(2026, 3, 2)


def warehouse(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    conn.execute(resources.files("billing_pipeline.warehouse").joinpath("schema.sql").read_text())
    return conn


def entries(*rows):
    """rows: (entry_id, customer_id, amount_cents)"""
    return pl.DataFrame([{"entry_id": e, "business_date": DAY, "facility_id": "F1", "customer_id": c, "kind": "dues",
                          "amount_cents": a, "contract_id": None, "bill_date": None, "idempotency_key": None,
                          "product_id": None} for e, c, a in rows],
                        schema_overrides={"contract_id": pl.String, "bill_date": pl.Date, "idempotency_key": pl.String,
                                          "product_id": pl.String})


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
    assert ledger.ledger_problems(conn)["balance_mismatches"].height == 0


def test_the_primary_key_refuses_a_second_posting_that_bypasses_the_check(tmp_path):
    conn = warehouse(tmp_path)
    with transaction(conn):
        ledger.post_entries(conn, entries(("e1", "C1", 500)))
    with pytest.raises(duckdb.ConstraintException):
        conn.execute("INSERT INTO ledger (entry_id, business_date, facility_id, customer_id, kind, amount_cents) "
                     "VALUES ('e1', DATE '2026-03-02', 'F1', 'C1', 'dues', 500)")
    assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (1,)
