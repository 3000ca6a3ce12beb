"""State tables (`contract_periods`, `unanswered_charge_days`) catch up with the history at
every open of the warehouse (`store.create_schema`): filled whole for a warehouse written before
they existed, redone whole when that fill was interrupted, and taking in rows written by
anything that did not keep them (an older version of the pipeline)."""

import datetime as dt

import duckdb
import polars as pl
import pytest

from billing_pipeline.warehouse import ledger
from billing_pipeline.warehouse.state import CATCH_UPS
from billing_pipeline.warehouse.store import create_schema, transaction

DAY = dt.date(2026, 3, 2)


def period(entry_id, contract_id, bill_date, business_date=DAY):
    return pl.DataFrame([{"entry_id": entry_id, "business_date": business_date, "facility_id": "F1",
                          "customer_id": "C1", "kind": "dues", "amount_cents": 500, "contract_id": contract_id,
                          "bill_date": bill_date, "period_end": bill_date, "idempotency_key": None,
                          "product_id": None, "series_from": bill_date}],
                        schema_overrides={"idempotency_key": pl.String, "product_id": pl.String})


def request_without_outcome(conn, facility_id, business_date, customer_id="C1"):
    """What a charge killed before the gateway answered leaves, written without the listing."""
    conn.execute("""INSERT INTO charge_requests (idempotency_key, business_date, facility_id, customer_id,
                        payment_method_id, token, amount_cents, surcharge_cents, requested_at)
                    VALUES ($k, $d, $f, $c, 'PM1', 'tok', 500, 0, now())""",
                 {"k": f"bill:{customer_id}:{business_date}", "d": business_date, "f": facility_id, "c": customer_id})


def state(conn):
    return (conn.execute("SELECT * FROM contract_periods ORDER BY ALL").fetchall(),
            conn.execute("SELECT * FROM unanswered_charge_days ORDER BY ALL").fetchall())


@pytest.fixture
def conn(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    create_schema(conn)
    for entry_id, contract_id in (("p0", "K0"), ("p1", "K1")):  # two transactions: p0 posted before p1
        with transaction(conn):
            ledger.post_entries(conn, period(entry_id, contract_id, DAY))
    create_schema(conn)  # caught up to p1
    assert conn.execute("SELECT state_table FROM state_caught_up ORDER BY 1").fetchall() == [("contract_periods",)]
    yield conn
    conn.close()


def test_a_warehouse_from_before_the_state_tables_gets_them_from_its_history(conn):
    request_without_outcome(conn, "F1", DAY)
    conn.execute("DROP TABLE contract_periods; DROP TABLE unanswered_charge_days")  # as written before they existed
    create_schema(conn)
    assert state(conn) == ([("K0", DAY, DAY, DAY, DAY, DAY), ("K1", DAY, DAY, DAY, DAY, DAY)], [("F1", DAY)])
    create_schema(conn)  # nothing new: nothing changes
    assert state(conn) == ([("K0", DAY, DAY, DAY, DAY, DAY), ("K1", DAY, DAY, DAY, DAY, DAY)], [("F1", DAY)])


def test_an_interrupted_fill_is_redone_whole(conn, monkeypatch):
    request_without_outcome(conn, "F1", DAY)
    conn.execute("DROP TABLE contract_periods; DROP TABLE unanswered_charge_days")
    real = CATCH_UPS["unanswered_charge_days"]
    monkeypatch.setitem(CATCH_UPS, "unanswered_charge_days", (real[0], "SELECT error('killed') WHERE $since IS NULL"))
    with pytest.raises(duckdb.Error, match="killed"):
        create_schema(conn)
    tables = {name for (name,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "contract_periods" not in tables and "unanswered_charge_days" not in tables  # nothing half done
    monkeypatch.setitem(CATCH_UPS, "unanswered_charge_days", real)
    create_schema(conn)
    assert state(conn) == ([("K0", DAY, DAY, DAY, DAY, DAY), ("K1", DAY, DAY, DAY, DAY, DAY)], [("F1", DAY)])


def test_rows_written_without_keeping_the_state_are_taken_in_at_the_next_open(conn):
    """An older pipeline run against the warehouse posts a period and leaves a request without
    an outcome, keeping neither state table."""
    later = dt.date(2026, 4, 1)
    conn.execute("""INSERT INTO ledger (entry_id, business_date, facility_id, customer_id, kind, amount_cents,
                                        contract_id, bill_date, posted_at)
                    VALUES ('p2', $d, 'F1', 'C1', 'dues', 500, 'K1', $d, now())""", {"d": later})
    request_without_outcome(conn, "F2", later)
    assert state(conn) == ([("K0", DAY, DAY, DAY, DAY, DAY), ("K1", DAY, DAY, DAY, DAY, DAY)], [])
    create_schema(conn)
    assert state(conn) == ([("K0", DAY, DAY, DAY, DAY, DAY), ("K1", later, later, later, DAY, DAY)], [("F2", later)])
    assert not ledger.ledger_problems(conn)["contract_periods_mismatches"].height
