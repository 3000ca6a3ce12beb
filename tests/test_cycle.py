"""The whole nightly cycle on generated data: reruns, kills, gateway errors, blocks."""

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from billing_pipeline.demo_data import generate
from billing_pipeline.runner import RunOptions, run_dates
from tests.factories import D, card, change, contract, customer, facility, plan, write_export

START = dt.date(2026, 3, 28)
TABLES = ["contract_status_daily", "status_change_errors", "due_contracts", "dues_postings", "dues_posting_errors",
          "billable_customers", "sweep_candidates", "duplicate_contracts", "recurring_dues_without_payment_method",
          "billing_attempts", "failed_billing_events", "billing_blocks"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    generate(out, contracts=3_000, facilities=8, seed=11, start=START, progress=False)
    return out


def snapshot(db: Path) -> dict[str, pl.DataFrame]:
    with duckdb.connect(str(db), read_only=True) as conn:
        tables = {t: conn.sql(f"SELECT * {excluded(t)} FROM {t} ORDER BY ALL").pl() for t in TABLES}
        tables["ledger"] = conn.sql("SELECT * EXCLUDE (posted_at) FROM ledger ORDER BY entry_id").pl()
        tables["customer_balances"] = conn.sql("SELECT * FROM customer_balances ORDER BY customer_id").pl()
    return tables


def assert_a_rerun_changes_nothing(data: Path, db: Path, day: dt.date) -> None:
    before = snapshot(db)
    run(data, db, day, day)
    assert all(before[name].equals(table) for name, table in snapshot(db).items())


def excluded(table: str) -> str:
    """Wall-clock columns, the only ones allowed to differ between a run and its rerun."""
    return {"billing_attempts": "EXCLUDE (completed_at)"}.get(table, "")


def run(data: Path, db: Path, first: dt.date, last: dt.date, **options):
    return run_dates(data, db, first, last, None, RunOptions(**options), echo=lambda _: None)


def test_rerun_of_days_leaves_every_table_identical(demo_data, tmp_path):
    db = tmp_path / "billing.duckdb"
    first = run(demo_data, db, START, START + dt.timedelta(days=3))
    assert sum(s.approved for s in first) > 0 and sum(s.declined for s in first) > 0
    before = snapshot(db)
    captured_before = dict(sqlite3.connect(db.with_name("billing.gateway.sqlite")).execute(
        "SELECT idempotency_key, times_requested FROM charges").fetchall())

    again = run(demo_data, db, START + dt.timedelta(days=1), START + dt.timedelta(days=3))

    after = snapshot(db)
    for name in before:
        assert before[name].equals(after[name]), f"{name} changed on rerun"
    assert all(not any(s.ledger_problems.values()) for s in first + again)
    # The rerun sent nothing: every customer's charge of those days already had an outcome.
    captured_after = dict(sqlite3.connect(db.with_name("billing.gateway.sqlite")).execute(
        "SELECT idempotency_key, times_requested FROM charges").fetchall())
    assert captured_after == captured_before


def test_catch_up_after_missed_days_posts_each_period_once(demo_data, tmp_path):
    """Running day 1 then day 4 (days 2-3 missed) posts what running every day posts."""
    daily, skipping = tmp_path / "daily.duckdb", tmp_path / "skipping.duckdb"
    run(demo_data, daily, START, START + dt.timedelta(days=3))
    run(demo_data, skipping, START, START)
    run(demo_data, skipping, START + dt.timedelta(days=3), START + dt.timedelta(days=3))
    query = ("SELECT contract_id, bill_date, kind, amount_cents FROM ledger WHERE kind IN ('dues', 'freeze_fee') "
             "ORDER BY ALL")
    with duckdb.connect(str(daily), read_only=True) as a, duckdb.connect(str(skipping), read_only=True) as b:
        every_day, caught_up = a.sql(query).pl(), b.sql(query).pl()
        assert b.sql("SELECT count(*) FROM ledger GROUP BY contract_id, bill_date HAVING count(*) > 1 "
                     "AND bool_and(contract_id IS NOT NULL)").fetchall() == []
    assert every_day.height > 0
    assert every_day.equals(caught_up)


def test_gateway_errors_are_retried_then_recorded_and_others_still_charged(tmp_path):
    data = write_export(
        tmp_path / "data",
        customers=[customer("C1"), customer("C2"), customer("C3")],
        contracts=[contract("K1"), contract("K2", customer_id="C2"), contract("K3", customer_id="C3")],
        payment_methods=[card("C1", token="error_timeout"), card("C2"), card("C3", token="decline_do_not_honor")])
    db = tmp_path / "billing.duckdb"
    [summary] = run(data, db, D(2026, 1, 1), D(2026, 1, 1))
    assert (summary.approved, summary.declined, summary.errors) == (1, 1, 1)
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.sql("SELECT a.customer_id, a.outcome, a.decline_code, a.tries, f.reason FROM billing_attempts a "
                        "LEFT JOIN failed_billing_events f USING (idempotency_key) ORDER BY 1").fetchall()
    assert rows[0][:4] == ("C1", "error", None, 3) and "gateway error after 3 tries" in rows[0][4]
    assert rows[1][:4] == ("C2", "approved", None, 1)
    assert rows[2][:4] == ("C3", "declined", "do_not_honor", 1) and rows[2][4] == "do_not_honor"


def test_status_log_keeps_only_changes_and_the_daily_view_every_day(tmp_path):
    """K1 is frozen from Jan 2 and thawed Jan 4; K2 never changes. The log stores a row only
    when a contract's status differs from the facility's previous processed day; the daily view
    still shows every contract on every processed day, and a rerun changes neither."""
    data = write_export(
        tmp_path / "data", customers=[customer("C1"), customer("C2")],
        contracts=[contract("K1"), contract("K2", customer_id="C2")],
        status_changes=[change("S1", "K1", "freeze", D(2026, 1, 2)), change("S2", "K1", "thaw", D(2026, 1, 4))],
        payment_methods=[card("C1"), card("C2")])
    db = tmp_path / "billing.duckdb"
    run(data, db, D(2026, 1, 1), D(2026, 1, 5))
    run(data, db, D(2026, 1, 3), D(2026, 1, 3))  # a rerun of a middle day
    with duckdb.connect(str(db), read_only=True) as conn:
        log = conn.sql("SELECT contract_id, business_date, status FROM contract_status_log ORDER BY ALL").fetchall()
        daily = conn.sql("SELECT contract_id, count(*), string_agg(status, ',' ORDER BY business_date) "
                         "FROM contract_status_daily GROUP BY 1 ORDER BY 1").fetchall()
    assert log == [("K1", D(2026, 1, 1), "active"), ("K1", D(2026, 1, 2), "frozen"), ("K1", D(2026, 1, 4), "active"),
                   ("K2", D(2026, 1, 1), "active")]
    assert daily == [("K1", 5, "active,frozen,frozen,active,active"), ("K2", 5, "active,active,active,active,active")]


def test_a_contract_moved_to_another_facility_is_shown_under_it_from_then_on(tmp_path):
    """K1 is at F1 on Jan 1 and 2; the next export has it at F2: the daily view shows it under F2
    from Jan 3 (a log row there, though its status did not change), and a rerun changes nothing."""
    facilities = [facility(facility_id="F1", timezone="UTC"), facility(facility_id="F2", timezone="UTC")]
    db = tmp_path / "billing.duckdb"
    run(write_export(tmp_path / "data", facilities=facilities, contracts=[contract("K1", facility_id="F1")]),
        db, D(2026, 1, 1), D(2026, 1, 2))
    data = write_export(tmp_path / "data", facilities=facilities, contracts=[contract("K1", facility_id="F2")])
    run(data, db, D(2026, 1, 3), D(2026, 1, 4))
    assert_a_rerun_changes_nothing(data, db, D(2026, 1, 3))
    with duckdb.connect(str(db), read_only=True) as conn:
        daily = conn.sql("SELECT business_date, facility_id, status FROM contract_status_daily ORDER BY 1").fetchall()
    assert daily == [(D(2026, 1, 1), "F1", "active"), (D(2026, 1, 2), "F1", "active"),
                     (D(2026, 1, 3), "F2", "active"), (D(2026, 1, 4), "F2", "active")]


def daily(db: Path, column: str = "status") -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.sql(f"SELECT contract_id, business_date, facility_id, {column} FROM contract_status_daily "
                        "ORDER BY ALL").fetchall()


def test_a_contract_moved_back_is_shown_where_it_is_each_day(tmp_path):
    """K1 at F1 (Jan 1-2), at F2 (Jan 3-4), back at F1 (Jan 5-6), its status never changing: each
    facility shows it on its days, and only there (F1's last row before Jan 5 says it left)."""
    facilities = [facility(facility_id="F1", timezone="UTC"), facility(facility_id="F2", timezone="UTC")]
    db = tmp_path / "billing.duckdb"
    for first, at in ((D(2026, 1, 1), "F1"), (D(2026, 1, 3), "F2"), (D(2026, 1, 5), "F1")):
        data = write_export(tmp_path / "data", facilities=facilities, contracts=[contract("K1", facility_id=at)])
        run(data, db, first, first + dt.timedelta(days=1))
    assert_a_rerun_changes_nothing(data, db, D(2026, 1, 5))
    assert [row[1:3] for row in daily(db)] == [(D(2026, 1, d), f) for d, f in
                                               ((1, "F1"), (2, "F1"), (3, "F2"), (4, "F2"), (5, "F1"), (6, "F1"))]


def test_two_contracts_swapping_facilities_are_each_shown_where_they_are(tmp_path):
    """K1 moves F1 -> F2 and K2 F2 -> F1 the same night: each facility has as many contracts as
    the night before, yet each has one that left."""
    facilities = [facility(facility_id="F1", timezone="UTC"), facility(facility_id="F2", timezone="UTC")]
    customers = [customer("C1"), customer("C2", facility_id="F2")]
    db = tmp_path / "billing.duckdb"
    for first, (k1, k2) in ((D(2026, 1, 1), ("F1", "F2")), (D(2026, 1, 3), ("F2", "F1"))):
        data = write_export(tmp_path / "data", facilities=facilities, customers=customers,
                            contracts=[contract("K1", facility_id=k1), contract("K2", customer_id="C2", facility_id=k2)])
        run(data, db, first, first + dt.timedelta(days=1))
    assert [row[:3] for row in daily(db)] == [
        ("K1", D(2026, 1, 1), "F1"), ("K1", D(2026, 1, 2), "F1"), ("K1", D(2026, 1, 3), "F2"), ("K1", D(2026, 1, 4), "F2"),
        ("K2", D(2026, 1, 1), "F2"), ("K2", D(2026, 1, 2), "F2"), ("K2", D(2026, 1, 3), "F1"), ("K2", D(2026, 1, 4), "F1")]


def test_a_contract_gone_from_the_export_is_no_longer_shown(tmp_path):
    db = tmp_path / "billing.duckdb"
    run(write_export(tmp_path / "data", contracts=[contract("K1"), contract("K2")]), db, D(2026, 3, 1), D(2026, 3, 2))
    data = write_export(tmp_path / "data", contracts=[contract("K1")])
    run(data, db, D(2026, 3, 3), D(2026, 3, 4))
    assert_a_rerun_changes_nothing(data, db, D(2026, 3, 3))
    shown = [row[:2] for row in daily(db)]
    assert shown == [("K1", D(2026, 3, d)) for d in range(1, 5)] + [("K2", D(2026, 3, 1)), ("K2", D(2026, 3, 2))]


def test_a_contract_given_to_another_customer_is_shown_under_them_from_its_next_row(tmp_path):
    """As built: the customer is not compared every night (1-2 s at 10M contracts); K1, given to
    C2 from Mar 3, shows under C2 from its next status change (Mar 4)."""
    db = tmp_path / "billing.duckdb"
    customers = [customer("C1"), customer("C2")]
    run(write_export(tmp_path / "data", customers=customers, contracts=[contract("K1")]), db, D(2026, 3, 1), D(2026, 3, 2))
    run(write_export(tmp_path / "data", customers=customers, contracts=[contract("K1", customer_id="C2")],
                     status_changes=[change("S1", "K1", "freeze", D(2026, 3, 4))]), db, D(2026, 3, 3), D(2026, 3, 4))
    assert [row[3] for row in daily(db, "customer_id")] == ["C1", "C1", "C1", "C2"]


@pytest.mark.parametrize("first_freeze, corrected, expected", [
    (3, 4, "active,active,active,frozen,frozen"),  # the rerun no longer freezes Mar 3: Mar 4-5 stay frozen
    (4, 3, "active,active,frozen,frozen,frozen"),  # the rerun freezes Mar 3: Mar 4-5 stay as they ran
    (None, 3, "active,active,frozen,active,active"),  # a freeze only the corrected export has: Mar 4-5 ran active
])
def test_a_day_rerun_with_a_corrected_export_corrects_that_day_not_the_days_after(tmp_path, first_freeze, corrected,
                                                                                  expected):
    """Mar 1-5 ran; the export is corrected and Mar 3 alone is rerun. The days after it keep the
    status their own runs found (they are rerun, if wanted, one by one)."""
    db = tmp_path / "billing.duckdb"
    base = dict(contracts=[contract("K1")], payment_methods=[card("C1")])
    freeze = [change("S1", "K1", "freeze", D(2026, 3, first_freeze))] if first_freeze else []
    run(write_export(tmp_path / "data", **base, status_changes=freeze), db, D(2026, 3, 1), D(2026, 3, 5))
    data = write_export(tmp_path / "data", **base, status_changes=[change("S1", "K1", "freeze", D(2026, 3, corrected))])
    run(data, db, D(2026, 3, 3), D(2026, 3, 3))
    assert ",".join(row[3] for row in daily(db)) == expected
    assert_a_rerun_changes_nothing(data, db, D(2026, 3, 3))
    run(data, db, D(2026, 3, 4), D(2026, 3, 5))  # rerunning the days after brings them in line with the export
    frozen_from = corrected
    assert [row[3] for row in daily(db)] == ["frozen" if d >= frozen_from else "active" for d in range(1, 6)]


@pytest.mark.parametrize("scenario", ["moved_on_a_later_date", "moved_between_two_runs_of_a_date",
                                      "moved_while_its_facility_missed_a_night"])
def test_an_earlier_versions_status_log_gets_the_end_rows_this_version_writes_once(tmp_path, scenario):
    """An earlier version ended a contract's rows at its next row at any facility and wrote no
    end rows: opening its warehouse adds them, once, where this version writes them: at the
    facility's first processed day after its row and on or after the row elsewhere (in the order
    the days ran: `run --facility` runs of one date; a night the facility missed)."""
    from billing_pipeline.warehouse.store import Warehouse

    facilities = [facility(facility_id="F1", timezone="UTC"), facility(facility_id="F2", timezone="UTC")]
    db = tmp_path / "billing.duckdb"

    def export(at):
        return write_export(tmp_path / f"data-{at}", facilities=facilities, contracts=[contract("K1", facility_id=at)])

    def run_facility(data, day, facility_id):
        run_dates(data, db, day, day, facility_id, RunOptions(), echo=lambda _: None)
    if scenario == "moved_on_a_later_date":
        run(export("F1"), db, D(2026, 1, 1), D(2026, 1, 2))
        run(export("F2"), db, D(2026, 1, 3), D(2026, 1, 4))
    elif scenario == "moved_between_two_runs_of_a_date":
        run_facility(export("F1"), D(2026, 1, 1), "F1")
        run_facility(export("F2"), D(2026, 1, 1), "F2")
        run(export("F2"), db, D(2026, 1, 2), D(2026, 1, 4))
    else:
        run(export("F1"), db, D(2026, 1, 1), D(2026, 1, 2))
        run_facility(export("F2"), D(2026, 1, 3), "F2")
        run(export("F2"), db, D(2026, 1, 4), D(2026, 1, 4))

    def ends():
        with duckdb.connect(str(db), read_only=True) as conn:
            return conn.sql("SELECT * FROM contract_status_log WHERE status IS NULL ORDER BY ALL").fetchall()
    written, before = ends(), daily(db)
    assert len(written) == 1
    with duckdb.connect(str(db)) as conn:  # as the earlier version left it
        conn.execute("DELETE FROM contract_status_log WHERE status IS NULL")
        conn.execute("DELETE FROM warehouse_upgrades")
    Warehouse(db).writer_path.unlink()  # the writer copy is made afresh from it
    for _ in range(2):
        with Warehouse(db).connect(echo=lambda _: None):
            pass
    assert ends() == written
    assert daily(db) == before


def test_a_duplicate_ended_from_its_start_as_its_error_says_catches_up_only_the_other(tmp_path):
    """K1 and K2 (one plan, one customer) are held as duplicates on Jan 1 and Feb 1, and the error
    says how to resolve one entered by mistake; K2 terminated effective its start: Feb 10 posts
    K1's two held periods, none of K2's."""
    contracts = [contract("K1", start_date=D(2024, 1, 1)), contract("K2", start_date=D(2024, 1, 1))]
    fac = [facility(timezone="UTC")]
    db = tmp_path / "billing.duckdb"
    run(write_export(tmp_path / "data", facilities=fac, contracts=contracts), db, D(2024, 1, 1), D(2024, 1, 1))
    run(write_export(tmp_path / "data", facilities=fac, contracts=contracts), db, D(2024, 2, 1), D(2024, 2, 1))
    run(write_export(tmp_path / "data", facilities=fac, contracts=contracts,
                     status_changes=[change("S1", "K2", "terminate", D(2024, 1, 1))]), db, D(2024, 2, 10), D(2024, 2, 10))
    with duckdb.connect(str(db), read_only=True) as conn:
        messages = {m for (m,) in conn.sql("SELECT DISTINCT message FROM dues_posting_errors").fetchall()}
        dues = conn.sql("SELECT contract_id, bill_date, business_date FROM ledger WHERE kind = 'dues' ORDER BY 2").fetchall()
    assert len(messages) == 1 and "terminate a contract entered by mistake effective its start date" in messages.pop()
    assert dues == [("K1", D(2024, 1, 1), D(2024, 2, 10)), ("K1", D(2024, 2, 1), D(2024, 2, 10))]


@pytest.mark.parametrize("rerun", ["whole_date", "facility_alone"])
def test_a_rerun_keeps_what_its_day_posted_though_the_contract_moved(tmp_path, rerun):
    """K1 posts its Jan 1 period at A on Jan 1 and C1 is charged. The next export has K1 at B
    (another time zone): rerunning Jan 1 (the date, or A alone) keeps A's posting, its due row
    and C1's billable row, as the first run wrote them; nothing is posted or charged again."""
    facilities = [facility(facility_id="A", timezone="UTC"), facility(facility_id="B", timezone="America/Los_Angeles")]

    def export(at):
        return write_export(tmp_path / "data", facilities=facilities, customers=[customer("C1", facility_id="A")],
                            contracts=[contract("K1", facility_id=at)])
    db = tmp_path / "billing.duckdb"
    run(export("A"), db, D(2026, 1, 1), D(2026, 1, 1))
    before = snapshot(db)
    data = export("B")
    summary, = run_dates(data, db, D(2026, 1, 1), D(2026, 1, 1), "A" if rerun == "facility_alone" else None,
                         RunOptions(), echo=lambda _: None)
    assert summary.ledger_problems == {name: 0 for name in summary.ledger_problems}
    after = snapshot(db)
    for table in ("dues_postings", "due_contracts", "billable_customers", "billing_attempts"):
        assert after[table].equals(before[table]), table
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.sql("SELECT kind, amount_cents FROM ledger ORDER BY 1").fetchall() == [
            ("billing_payment", -5000), ("dues", 5000)]


@pytest.mark.parametrize("edit", ["first_bill_date", "dues_cents", "freeze", "duplicate"])
def test_a_day_rerun_after_its_export_was_edited_keeps_what_it_posted(tmp_path, edit):
    """Jan 10 posts K1's period (first_bill_date Jan 10, start Jan 8) and charges it. The export
    is edited (the first bill date dropped: the series moves to the 8th; other dues; a freeze
    from Jan 5; a duplicate contract) and Jan 10 is rerun: no second period for the month, and
    its tables still say what the ledger has, once. Feb 8 then bills one period."""
    fac = [facility(timezone="UTC")]
    k1 = dict(start_date=D(2026, 1, 8), first_bill_date=D(2026, 1, 10))
    edited = {"first_bill_date": dict(contracts=[contract("K1", start_date=D(2026, 1, 8))]),
              "dues_cents": dict(contracts=[contract("K1", dues_cents=7000, **k1)]),
              "freeze": dict(contracts=[contract("K1", **k1)], plans=[plan(freeze_fee_cents=1000)],
                             status_changes=[change("S1", "K1", "freeze", D(2026, 1, 5))]),
              "duplicate": dict(contracts=[contract("K1", **k1), contract("K2", **k1)])}[edit]
    db = tmp_path / "billing.duckdb"
    run(write_export(tmp_path / "data", facilities=fac, contracts=[contract("K1", **k1)]), db, D(2026, 1, 10), D(2026, 1, 10))
    data = write_export(tmp_path / "data", facilities=fac, **edited)
    summary, = run(data, db, D(2026, 1, 10), D(2026, 1, 10))
    assert summary.ledger_problems == {name: 0 for name in summary.ledger_problems}
    with duckdb.connect(str(db), read_only=True) as conn:
        ledger = conn.sql("SELECT contract_id, bill_date, kind, amount_cents FROM ledger WHERE contract_id IS NOT NULL").fetchall()
        postings = conn.sql("SELECT contract_id, bill_date, kind, amount_cents FROM dues_postings").fetchall()
        due = conn.sql("SELECT contract_id, bill_date, kind, amount_cents FROM due_contracts WHERE contract_id = 'K1'").fetchall()
    assert ledger == postings == due == [("K1", D(2026, 1, 10), "dues", 5000)]
    if edit == "first_bill_date":
        run(data, db, D(2026, 1, 11), D(2026, 2, 8))
        with duckdb.connect(str(db), read_only=True) as conn:
            charged = conn.sql("SELECT business_date, amount_cents FROM billing_attempts ORDER BY 1").fetchall()
        assert charged == [(D(2026, 1, 10), 5000), (D(2026, 2, 8), 5000)]


@pytest.mark.parametrize("new_day", [29, 30, 31])
def test_a_rerun_after_a_month_end_billing_day_correction_bills_no_interval_twice(tmp_path, new_day):
    """Billing day 28: Jan 28 and Feb 28 post. Corrected to a later day and Feb 28 rerun, then Jan
    29-31 itself (which posted nothing): Jan 29-31 stands in for Jan 28 (posted before) and does
    not post; the next night posts nothing."""
    def export(day):
        return write_export(tmp_path / "data", facilities=[facility(timezone="UTC", monthly_billing_day=day)],
                            plans=[plan(schedule="facility")], contracts=[contract("K1", start_date=D(2026, 1, 20))])
    db = tmp_path / "billing.duckdb"
    run(export(28), db, D(2026, 1, 28), D(2026, 2, 28))
    summary, = run(export(new_day), db, D(2026, 2, 28), D(2026, 2, 28))
    # And a day that posted nothing for K1, rerun: compared with the last period posted before it.
    again, = run(export(new_day), db, D(2026, 1, new_day), D(2026, 1, new_day))
    run(export(new_day), db, D(2026, 3, 1), D(2026, 3, 1))
    assert summary.ledger_problems == again.ledger_problems == {name: 0 for name in summary.ledger_problems}
    with duckdb.connect(str(db), read_only=True) as conn:
        dues = conn.sql("SELECT bill_date FROM ledger WHERE kind = 'dues' ORDER BY 1").fetchall()
        errors = conn.sql("SELECT count(*) FROM dues_posting_errors").fetchall()
    assert dues == [(D(2026, 1, 28),), (D(2026, 2, 28),)] and errors == [(0,)]


def test_stand_ins_are_not_counted_as_missed_periods_nor_posted_by_the_next_night(tmp_path):
    """A weekly first night catches up 12 Sundays; the start date is corrected to the Monday
    before and the night rerun: the Monday Dec 29 posts (one of its 7 days was paid), the 12
    Mondays after it stand in for a posted Sunday (6 of 7 days paid) and are not missed (13 would
    be an error). The next nights do not post the Monday Mar 23 (the window opens after the last
    bill date, Mar 22) but Mar 30."""
    plans = [plan(frequency="weekly")]
    fac = [facility(timezone="UTC")]
    db = tmp_path / "billing.duckdb"
    run(write_export(tmp_path / "data", facilities=fac, plans=plans, contracts=[contract("K1", start_date=D(2026, 1, 4))]),
        db, D(2026, 3, 23), D(2026, 3, 23))
    data = write_export(tmp_path / "data", facilities=fac, plans=plans, contracts=[contract("K1", start_date=D(2025, 12, 29))])
    run(data, db, D(2026, 3, 23), D(2026, 3, 23))
    sundays = [D(2026, 1, 4) + dt.timedelta(weeks=k) for k in range(12)]
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.sql("SELECT count(*) FROM dues_posting_errors").fetchall() == [(0,)]
        assert conn.sql("SELECT bill_date FROM ledger WHERE kind = 'dues' ORDER BY 1").fetchall() == [
            (d,) for d in [D(2025, 12, 29), *sundays]]
    assert_a_rerun_changes_nothing(data, db, D(2026, 3, 23))
    run(data, db, D(2026, 3, 24), D(2026, 3, 30))
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.sql("SELECT bill_date, period_end FROM ledger WHERE kind = 'dues' AND bill_date > $d",
                        params={"d": sundays[-1]}).fetchall() == [(D(2026, 3, 30), D(2026, 4, 5))]


@pytest.mark.parametrize("edit, expected", [
    ("first_bill_date_later", [D(2026, 3, 15), D(2026, 4, 20)]),   # Mar 20: 26 of its 31 days paid
    ("start_date_later", [D(2026, 3, 15), D(2026, 4, 20)]),
    ("moved_to_a_later_billing_day", [D(2026, 3, 15), D(2026, 4, 20)]),
    ("first_bill_date_earlier", [D(2026, 3, 15), D(2026, 4, 13)]),  # Apr 13: 2 of 30 days paid
    ("monthly_to_weekly", [D(2026, 3, 15), D(2026, 4, 12), D(2026, 4, 19)]),  # Apr 12: 3 of 7 paid
])
def test_a_schedule_edited_between_nights_does_not_bill_paid_time_again(tmp_path, edit, expected):
    """Mar 15 posts K1's month (paid through Apr 14); the schedule is edited and the nights run
    on to Apr 20. The series continues from its date nearest to the end of the paid time: a
    period half or more paid already does not post (Mar 20 would bill Mar 20-Apr 14 twice)."""
    facilities = [facility(facility_id="A", timezone="UTC", monthly_billing_day=15),
                  facility(facility_id="B", timezone="UTC", monthly_billing_day=20)]
    schedule = "facility" if edit.startswith("moved") else "contract"
    k1 = dict(start_date=D(2026, 3, 15), facility_id="A")
    edited = {"first_bill_date_later": dict(first_bill_date=D(2026, 3, 20)),
              "start_date_later": dict(start_date=D(2026, 3, 20)),
              "moved_to_a_later_billing_day": dict(facility_id="B"),
              "first_bill_date_earlier": dict(first_bill_date=D(2026, 3, 13))}.get(edit, {})
    frequency = "weekly" if edit == "monthly_to_weekly" else "monthly"

    def export(contract_fields, plan_frequency):
        return write_export(tmp_path / "data", facilities=facilities, customers=[customer("C1", facility_id="A")],
                            plans=[plan(schedule=schedule, frequency=plan_frequency)],
                            contracts=[contract("K1", **contract_fields)])
    db = tmp_path / "billing.duckdb"
    run(export(k1, "monthly"), db, D(2026, 3, 15), D(2026, 3, 15))
    data = export({**k1, **edited}, frequency)
    # Every night near the dates that matter (the nights between are caught up by the next).
    summaries = run(data, db, D(2026, 3, 16), D(2026, 3, 22)) + run(data, db, D(2026, 4, 11), D(2026, 4, 20))
    assert all(s.ledger_problems == {name: 0 for name in s.ledger_problems} for s in summaries)
    with duckdb.connect(str(db), read_only=True) as conn:
        dues = conn.sql("SELECT bill_date FROM ledger WHERE kind = 'dues' ORDER BY 1").fetchall()
        errors = conn.sql("SELECT count(*) FROM dues_posting_errors").fetchall()
    assert dues == [(d,) for d in expected] and errors == [(0,)]
    assert_a_rerun_changes_nothing(data, db, D(2026, 4, 20))


@pytest.mark.parametrize("rerun_first", [False, True])
@pytest.mark.parametrize("edit, expected", [
    # Dec 20-Jan 19: 15 of its 31 days paid (Jan 5-19); Jan 20: 16 of 31 paid, not posted.
    ("start_date", [(D(2025, 12, 20), D(2026, 1, 19)), (D(2026, 1, 5), D(2026, 2, 4)), (D(2026, 2, 20), D(2026, 3, 19))]),
    # Jan 3-Feb 2: 29 of 31 paid (Jan 5-Feb 2), not posted; Feb 3 posts.
    ("first_bill_date", [(D(2026, 1, 5), D(2026, 2, 4)), (D(2026, 2, 3), D(2026, 3, 2))]),
])
def test_a_series_edited_to_start_before_its_first_period_posts_the_unpaid_period_on_any_night(
        tmp_path, edit, expected, rerun_first):
    """K1 starts Jan 5 and posts Jan 5 (paid Jan 5-Feb 4); the export moves its start (or first
    bill date) earlier. The period before the first one posted posts when mostly unpaid (SPEC
    1.3: every bill date up to D not posted), on the next night as on a rerun of a day before
    it: the days run and the export decide what posts, not the order."""
    def export(**fields):
        return write_export(tmp_path / "data", facilities=[facility(timezone="UTC")],
                            plans=[plan(schedule="contract")],
                            contracts=[contract("K1", start_date=fields.pop("start_date", D(2026, 1, 5)), **fields)])
    db = tmp_path / "billing.duckdb"
    run(export(), db, D(2026, 1, 3), D(2026, 1, 6))
    data = export(start_date=D(2025, 12, 20)) if edit == "start_date" else export(start_date=D(2026, 1, 1),
                                                                                 first_bill_date=D(2026, 1, 3))
    if rerun_first:
        run(data, db, D(2026, 1, 4), D(2026, 1, 4))
    # The nights near the dates that matter (the nights between are caught up by the next).
    summaries = run(data, db, D(2026, 1, 7), D(2026, 1, 8)) + run(data, db, D(2026, 2, 19), D(2026, 2, 21))
    assert all(s.ledger_problems == {name: 0 for name in s.ledger_problems} for s in summaries)
    with duckdb.connect(str(db), read_only=True) as conn:
        dues = conn.sql("SELECT bill_date, period_end FROM ledger WHERE kind = 'dues' ORDER BY 1").fetchall()
        errors = conn.sql("SELECT count(*) FROM dues_posting_errors").fetchall()
        owed = conn.sql("SELECT balance_cents FROM customer_balances").fetchall()
        starts = conn.sql("SELECT first_period_date, series_from FROM contract_periods").fetchall()
    assert dues == expected and errors == [(0,)] and owed == [(0,)]
    new_start = D(2025, 12, 20) if edit == "start_date" else D(2026, 1, 3)
    assert starts == [(expected[0][0], new_start if edit == "start_date" else D(2026, 1, 3))]
    assert_a_rerun_changes_nothing(data, db, D(2026, 2, 21))


@pytest.mark.parametrize("schedule, expected", [
    # The month before the week posted (opened back) is the month of the new start: one window
    # holds Jan 1, measured from the first period (Jan 5-11: 7 of 31 days paid), and it posts once.
    ("facility", [(D(2026, 1, 1), D(2026, 1, 31)), (D(2026, 1, 5), D(2026, 1, 11))]),
    # Dec 20-Jan 19: Dec 20-Jan 4 were never paid (7 of 31 paid), so it posts.
    ("contract", [(D(2025, 12, 20), D(2026, 1, 19)), (D(2026, 1, 5), D(2026, 1, 11))]),
])
def test_a_start_moved_earlier_with_the_plan_made_monthly_posts_each_date_once(tmp_path, schedule, expected):
    """Weekly K1 (Mondays) posts Jan 5-11; the export then makes it monthly and starts it Dec 20.
    The window opened back (longer steps) and the one before the first period (an earlier start)
    would both hold the month's date: it is in one only, and the night posts it once."""
    def export(tag, frequency, start_date):
        return write_export(tmp_path / f"data-{tag}",
                            facilities=[facility(timezone="UTC", weekly_billing_day=1, monthly_billing_day=1)],
                            plans=[plan(schedule=schedule, frequency=frequency)],
                            contracts=[contract("K1", start_date=start_date)])
    db = tmp_path / "billing.duckdb"
    run(export("weekly", "weekly", D(2026, 1, 5)), db, D(2026, 1, 5), D(2026, 1, 6))
    data = export("monthly", "monthly", D(2025, 12, 20))
    summaries = run(data, db, D(2026, 1, 7), D(2026, 1, 8))
    dues = posted_periods(db, summaries, "bill_date, period_end")
    assert dues == expected
    assert_a_rerun_changes_nothing(data, db, D(2026, 1, 7))


def test_an_older_ledgers_periods_without_a_series_start_are_not_posted_again(tmp_path):
    """K1 (from Dec 1) posts Dec 1 and Jan 1 in a ledger written before periods kept their
    series start; this version posts Feb 15 (first bill date Jan 15), its start Jan 15. Then the
    export drops the first bill date and makes the plan yearly: Dec 1 (a year, 104 of 365 days
    paid) lies before the start recorded, but is in the ledger already: nothing posts again."""
    from billing_pipeline.warehouse.store import Warehouse

    def export(tag, frequency="monthly", first_bill_date=None):
        return write_export(tmp_path / f"data-{tag}", facilities=[facility(timezone="UTC")],
                            plans=[plan(frequency=frequency)],
                            contracts=[contract("K1", start_date=D(2025, 12, 1), first_bill_date=first_bill_date)])
    db = tmp_path / "billing.duckdb"
    run(export("as-is"), db, D(2025, 12, 1), D(2026, 1, 1))
    with duckdb.connect(str(db)) as conn:  # as an earlier version left it
        conn.execute("UPDATE ledger SET series_from = NULL; ALTER TABLE contract_periods DROP COLUMN series_from")
    Warehouse(db).writer_path.unlink()  # the writer copy is made afresh from it
    run(export("later", first_bill_date=D(2026, 1, 15)), db, D(2026, 2, 15), D(2026, 2, 15))
    summaries = run(export("yearly", frequency="yearly"), db, D(2026, 2, 16), D(2026, 2, 17))
    assert all(s.ledger_problems == {name: 0 for name in s.ledger_problems} for s in summaries)
    with duckdb.connect(str(db), read_only=True) as conn:
        dues = conn.sql("SELECT bill_date, series_from FROM ledger WHERE kind = 'dues' ORDER BY 1").fetchall()
        starts = conn.sql("SELECT first_period_date, series_from FROM contract_periods").fetchall()
    assert dues == [(D(2025, 12, 1), None), (D(2026, 1, 1), None), (D(2026, 2, 15), D(2026, 1, 15))]
    assert starts == [(D(2025, 12, 1), D(2026, 1, 15))]


@pytest.mark.parametrize("edit, expected", [
    # Start Jan 10, billed from the facility's 1st: Feb 1 (paid Feb 1-28). Made weekly: the weeks
    # of Jan 12, 19 and 26 were never owed; Feb 2-Feb 23 are mostly paid; Mar 2 posts.
    ("made_weekly", [D(2026, 2, 1), D(2026, 3, 2)]),
    # Moved to a facility billing on the 15th: not Jan 15 (Jan 15-Feb 14, 14 of 31 days paid);
    # Feb 15 is half paid; Mar 15 posts.
    ("moved_to_the_15th", [D(2026, 2, 1), D(2026, 3, 15)]),
])
def test_a_plan_or_billing_day_changed_bills_nothing_before_the_first_period(tmp_path, edit, expected):
    """Neither moves where the series starts from (its start date, first bill date): the time
    before the first period was never owed, and stays unbilled."""
    facilities = [facility(facility_id="A", timezone="UTC", monthly_billing_day=1),
                  facility(facility_id="B", timezone="UTC", monthly_billing_day=15)]

    def export(frequency, facility_id):
        return write_export(tmp_path / f"data-{frequency}-{facility_id}", facilities=facilities,
                            customers=[customer("C1", facility_id="A")],
                            plans=[plan(schedule="facility", frequency=frequency)],
                            contracts=[contract("K1", start_date=D(2026, 1, 10), facility_id=facility_id)])
    db = tmp_path / "billing.duckdb"
    run(export("monthly", "A"), db, D(2026, 1, 31), D(2026, 2, 1))
    data = export("weekly", "A") if edit == "made_weekly" else export("monthly", "B")
    summaries = run(data, db, D(2026, 2, 2), D(2026, 2, 4)) + run(data, db, expected[-1], expected[-1])
    dues = posted_periods(db, summaries, "bill_date")
    assert dues == [(d,) for d in expected]


def posted_periods(db: Path, summaries: list, columns: str = "bill_date") -> list[tuple]:
    """The dues periods in the ledger (`columns`, by bill date), after runs whose ledger checks
    all found nothing."""
    assert all(s.ledger_problems == {name: 0 for name in s.ledger_problems} for s in summaries)
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.sql(f"SELECT {columns} FROM ledger WHERE kind = 'dues' ORDER BY bill_date").fetchall()


def weekly_from_dec_23_made_monthly_on_the_24th(tmp_path: Path, db: Path, start_date: dt.date) -> Path:
    """Weekly K1 (Mondays) from Tue Dec 23 (first period Dec 29) runs Dec 29-Jan 6 (posting Dec 29
    and Jan 5); returns the export that makes it monthly on the 24th, starting on `start_date`."""
    def export(tag, frequency, monthly_day, start):
        return write_export(tmp_path / f"data-{tag}",
                            facilities=[facility(timezone="UTC", weekly_billing_day=1, monthly_billing_day=monthly_day)],
                            plans=[plan(schedule="facility", frequency=frequency)],
                            contracts=[contract("K1", start_date=start)])
    run(export("weekly", "weekly", 1, D(2025, 12, 23)), db, D(2025, 12, 29), D(2026, 1, 6))
    return export("monthly", "monthly", 24, start_date)


def test_a_plan_made_monthly_does_not_open_back_before_the_first_period(tmp_path):
    """Weekly K1 (Mondays) starts Tue Dec 23, so its first period is Dec 29; it posts Dec 29 and
    Jan 5 (paid through Jan 11). Made monthly on the 24th, its start unchanged: the month of Dec 24
    lies nearer the paid time's start than Jan 24 its end (Dec 24-28 were never owed: the plan
    change does not make them so), and the series goes on Jan 24."""
    db = tmp_path / "billing.duckdb"
    data = weekly_from_dec_23_made_monthly_on_the_24th(tmp_path, db, D(2025, 12, 23))
    summaries = run(data, db, D(2026, 1, 7), D(2026, 1, 8)) + run(data, db, D(2026, 1, 24), D(2026, 1, 24))
    dues = posted_periods(db, summaries, "bill_date")
    assert dues == [(D(2025, 12, 29),), (D(2026, 1, 5),), (D(2026, 1, 24),)]


@pytest.mark.parametrize("rerun_first", [False, True])
def test_a_start_moved_earlier_counts_the_days_before_the_first_period_as_unpaid_as_a_rerun_does(
        tmp_path, rerun_first):
    """Weekly K1 (Mondays) starts Tue Dec 23 (first period Dec 29) and posts Dec 29 and Jan 5;
    the export then starts it Dec 10, monthly on the 24th. The month of Dec 24, opened back, is
    paid Dec 29-Jan 11 only (14 of 31 days): it posts, on the next night as on a rerun of Jan 5
    first. (With the start unchanged, the night counts Dec 24-28 as paid: they were not owed.)"""
    db = tmp_path / "billing.duckdb"
    data = weekly_from_dec_23_made_monthly_on_the_24th(tmp_path, db, D(2025, 12, 10))
    if rerun_first:
        run(data, db, D(2026, 1, 5), D(2026, 1, 5))
    summaries = run(data, db, D(2026, 1, 7), D(2026, 1, 8)) + run(data, db, D(2026, 1, 24), D(2026, 1, 24))
    dues = posted_periods(db, summaries, "bill_date")
    assert dues == [(D(2025, 12, 24),), (D(2025, 12, 29),), (D(2026, 1, 5),), (D(2026, 1, 24),)]


def test_a_series_moved_later_then_before_its_first_period_bills_the_time_before_not_the_gap(tmp_path):
    """K1 (from Jan 1) posts Jan 1 and Feb 1; its first bill date moves to Apr 1 (March left
    unbilled: billing resumes in April); then the export starts it on Dec 1 with no first bill
    date. December, before its first period, posts; March, between two periods posted, stays
    unbilled as the first edit left it."""
    def export(tag, start_date=D(2026, 1, 1), first_bill_date=None):
        return write_export(tmp_path / f"data-{tag}", facilities=[facility(timezone="UTC")],
                            plans=[plan(schedule="contract")],
                            contracts=[contract("K1", start_date=start_date, first_bill_date=first_bill_date)])
    db = tmp_path / "billing.duckdb"
    run(export("as-is"), db, D(2026, 1, 1), D(2026, 2, 1))
    run(export("later", first_bill_date=D(2026, 4, 1)), db, D(2026, 3, 1), D(2026, 4, 1))
    data = export("back", start_date=D(2025, 12, 1))
    summaries = run(data, db, D(2026, 4, 2), D(2026, 4, 3)) + run(data, db, D(2026, 5, 1), D(2026, 5, 1))
    dues = posted_periods(db, summaries, "bill_date, business_date")
    assert dues == [(D(2025, 12, 1), D(2026, 4, 2)), (D(2026, 1, 1), D(2026, 1, 1)), (D(2026, 2, 1), D(2026, 2, 1)),
                    (D(2026, 4, 1), D(2026, 4, 1)), (D(2026, 5, 1), D(2026, 5, 1))]
    assert_a_rerun_changes_nothing(data, db, D(2026, 4, 2))


@pytest.mark.parametrize("monthly_day, expected", [
    (1, [(D(2026, 2, 1), D(2026, 2, 6)), (D(2026, 3, 1), D(2026, 3, 1))]),  # Feb 1: 8 of 28 days paid
    (26, [(D(2026, 2, 26), D(2026, 2, 26))]),  # Jan 26 is a week posted: a bill date posts once
])
def test_weekly_made_monthly_bills_the_month_in_which_the_paid_weeks_end(tmp_path, monthly_day, expected):
    """Weekly K1 (Mondays) posts Jan 5 to Feb 2 (paid through Feb 8); the plan becomes monthly
    from the Feb 6 export. The month whose period runs past the paid time starts before the latest
    week (Feb 2): it posts on the next night when mostly unpaid, not a month later. On the 26th,
    that month's bill date is a week already posted, and the next month bills."""
    def export(frequency):
        return write_export(tmp_path / f"data-{frequency}",
                            facilities=[facility(timezone="UTC", weekly_billing_day=1, monthly_billing_day=monthly_day)],
                            plans=[plan(frequency=frequency, schedule="facility")],
                            contracts=[contract("K1", start_date=D(2026, 1, 5))])
    db = tmp_path / "billing.duckdb"
    run(export("weekly"), db, D(2026, 1, 5), D(2026, 2, 5))
    data = export("monthly")
    summaries = run(data, db, D(2026, 2, 6), D(2026, 3, 2))
    assert all(s.ledger_problems == {name: 0 for name in s.ledger_problems} for s in summaries)
    with duckdb.connect(str(db), read_only=True) as conn:
        monthly = conn.sql("SELECT bill_date, business_date FROM ledger WHERE kind = 'dues' AND business_date > DATE "
                           "'2026-02-05' ORDER BY 1").fetchall()
        weeks = conn.sql("SELECT count(*) FROM ledger WHERE kind = 'dues' AND business_date <= DATE '2026-02-05'").fetchall()
        listed = conn.sql("SELECT bill_date FROM dues_postings WHERE business_date > DATE '2026-02-05' ORDER BY 1").fetchall()
    assert monthly == expected and weeks == [(5,)]
    assert listed == [(b,) for b, _ in expected]
    assert_a_rerun_changes_nothing(data, db, D(2026, 2, 6))


def test_a_month_whose_bill_date_is_a_week_posted_is_not_listed_nor_counted_as_missed(tmp_path):
    """Weekly K1 (Mondays) posts Jan 5 to Feb 2; monthly on the 26th from then, held as a
    duplicate (K2) on Feb 6, and the next night run is Jan 27 2027. Jan 26 2026 is a week in the
    ledger: it is never listed as due, and the 12 months Feb 26 to Jan 26 2027 post (not 13:
    too many)."""
    def export(frequency, *extra):
        return write_export(tmp_path / f"data-{frequency}-{len(extra)}",
                            facilities=[facility(timezone="UTC", weekly_billing_day=1, monthly_billing_day=26)],
                            plans=[plan(frequency=frequency, schedule="facility")],
                            contracts=[contract("K1", start_date=D(2026, 1, 5)), *extra])
    db = tmp_path / "billing.duckdb"
    run(export("weekly"), db, D(2026, 1, 5), D(2026, 2, 5))
    run(export("monthly", contract("K2", start_date=D(2026, 1, 5))), db, D(2026, 2, 6), D(2026, 2, 6))
    summary, = run(export("monthly"), db, D(2027, 1, 27), D(2027, 1, 27))
    assert summary.ledger_problems == {name: 0 for name in summary.ledger_problems}
    with duckdb.connect(str(db), read_only=True) as conn:
        listed = conn.sql("SELECT count(*) FROM due_contracts WHERE business_date = DATE '2026-02-06' "
                          "AND contract_id = 'K1'").fetchall()
        errors = conn.sql("SELECT error_code FROM dues_posting_errors WHERE contract_id = 'K1' "
                          "AND business_date = DATE '2027-01-27'").fetchall()
        posted = conn.sql("SELECT min(bill_date), max(bill_date), count(*) FROM ledger WHERE kind = 'dues' "
                          "AND business_date = DATE '2027-01-27'").fetchall()
    assert listed == [(0,)] and errors == []
    assert posted == [(D(2026, 2, 26), D(2027, 1, 26), 12)]


def test_a_frequency_changed_then_an_old_day_rerun_bills_no_week_of_a_paid_month(tmp_path):
    """Monthly K1 posts Jan 10 (paid through Feb 9); the plan becomes weekly and Jan 31 is rerun:
    the weeks of Jan 17, 24 and 31 are paid already and do not post. Feb 7 (3 of 7 days paid)
    does, on its night."""
    def export(frequency):
        return write_export(tmp_path / "data", facilities=[facility(timezone="UTC")], plans=[plan(frequency=frequency)],
                            contracts=[contract("K1", start_date=D(2026, 1, 10))])
    db = tmp_path / "billing.duckdb"
    run(export("monthly"), db, D(2026, 1, 10), D(2026, 2, 5))
    data = export("weekly")
    summary, = run(data, db, D(2026, 1, 31), D(2026, 1, 31))
    run(data, db, D(2026, 2, 6), D(2026, 2, 7))
    assert summary.ledger_problems == {name: 0 for name in summary.ledger_problems}
    with duckdb.connect(str(db), read_only=True) as conn:
        dues = conn.sql("SELECT bill_date, period_end, business_date FROM ledger WHERE kind = 'dues' ORDER BY 1").fetchall()
    assert dues == [(D(2026, 1, 10), D(2026, 2, 9), D(2026, 1, 10)), (D(2026, 2, 7), D(2026, 2, 13), D(2026, 2, 7))]


def test_a_rerun_does_not_bill_a_month_the_weeks_its_date_posted_paid_together(tmp_path):
    """Feb 2 catches up K1's weeks Jan 5 to Feb 2 (paid through Feb 8); the plan becomes monthly
    and Feb 2 is rerun. January (Jan 1-31) is paid 27 of 31 days by the weeks together, though by
    no single one: it stands in. February (8 of 28 days paid) posts."""
    def export(frequency):
        return write_export(tmp_path / "data", facilities=[facility(timezone="UTC")],
                            plans=[plan(frequency=frequency, schedule="facility")],
                            contracts=[contract("K1", start_date=D(2026, 1, 1))])
    db = tmp_path / "billing.duckdb"
    run(export("weekly"), db, D(2026, 2, 2), D(2026, 2, 2))
    data = export("monthly")
    summary, = run(data, db, D(2026, 2, 2), D(2026, 2, 2))
    assert summary.ledger_problems == {name: 0 for name in summary.ledger_problems}
    with duckdb.connect(str(db), read_only=True) as conn:
        dues = conn.sql("SELECT bill_date FROM ledger WHERE kind = 'dues' ORDER BY 1").fetchall()
    assert dues == [(d,) for d in [D(2026, 1, 5), D(2026, 1, 12), D(2026, 1, 19), D(2026, 1, 26), D(2026, 2, 1),
                                   D(2026, 2, 2)]]
    assert_a_rerun_changes_nothing(data, db, D(2026, 2, 2))


def test_an_old_day_rerun_after_an_edit_counts_what_later_days_posted(tmp_path):
    """K1 posts Jan 1 and Feb 1 on their nights; its first bill date is edited to Jan 20 and
    Jan 20 is rerun: Jan 20-Feb 19 is paid by Jan 1 and Feb 1 together (posted before it and
    after it) and does not post."""
    def export(**fields):
        return write_export(tmp_path / "data", facilities=[facility(timezone="UTC")],
                            contracts=[contract("K1", start_date=D(2026, 1, 1), **fields)])
    db = tmp_path / "billing.duckdb"
    run(export(), db, D(2026, 1, 1), D(2026, 2, 5))
    summary, = run(export(first_bill_date=D(2026, 1, 20)), db, D(2026, 1, 20), D(2026, 1, 20))
    assert summary.ledger_problems == {name: 0 for name in summary.ledger_problems}
    with duckdb.connect(str(db), read_only=True) as conn:
        dues = conn.sql("SELECT bill_date FROM ledger WHERE kind = 'dues' ORDER BY 1").fetchall()
        listed = conn.sql("SELECT count(*) FROM due_contracts WHERE business_date = DATE '2026-01-20'").fetchall()
    assert dues == [(D(2026, 1, 1),), (D(2026, 2, 1),)] and listed == [(0,)]


def test_a_rerun_over_periods_posted_before_they_had_an_end_takes_them_to_end_a_step_later(tmp_path):
    """Mar 15 posts K1's month; its end is then removed, as in a warehouse written before periods
    had one (contract_periods made again at the next open). The first bill date is corrected to
    Mar 13 and Mar 15 rerun: Mar 13 is within a month of the posted Mar 15 and does not post,
    as before ends were kept."""
    def export(**fields):
        return write_export(tmp_path / "data", facilities=[facility(timezone="UTC")],
                            contracts=[contract("K1", start_date=D(2026, 3, 15), **fields)])
    db = tmp_path / "billing.duckdb"
    run(export(), db, D(2026, 3, 15), D(2026, 3, 15))
    with duckdb.connect(str(db.with_name("billing.writer.duckdb"))) as writer:
        writer.execute("UPDATE ledger SET period_end = NULL; UPDATE dues_postings SET period_end = NULL; "
                       "UPDATE due_contracts SET period_end = NULL; DROP TABLE contract_periods")
    summary, = run(export(first_bill_date=D(2026, 3, 13)), db, D(2026, 3, 15), D(2026, 3, 15))
    assert summary.ledger_problems == {name: 0 for name in summary.ledger_problems}
    with duckdb.connect(str(db), read_only=True) as conn:
        dues = conn.sql("SELECT bill_date, period_end FROM ledger WHERE kind = 'dues'").fetchall()
        state = conn.sql("SELECT last_bill_date, paid_through FROM contract_periods").fetchall()
    assert dues == [(D(2026, 3, 15), None)] and state == [(D(2026, 3, 15), D(2026, 3, 15))]


@pytest.mark.parametrize("fix", ["freeze_removed", "freeze_removed_month_end", "freeze_removed_13_weekly",
                                 "first_bill_date_earlier"])
def test_a_day_rerun_after_its_export_was_fixed_posts_a_period_it_skipped(tmp_path, fix):
    """The first run skipped a period: a wrong freeze over Nov 5 (no freeze fee) on a first night
    catching up from Oct 5 (over Jan 31 on an anchor of 31, caught up on Feb 28; over one of 13
    weekly dates, the 12 others posted), or a first bill date a month late. Fixed and rerun, the
    day posts it: a period a whole step from the posted ones is its own, not a stand-in, and
    periods its date posted are not counted as missed."""
    fac = [facility(timezone="UTC")]
    if fix.startswith("freeze_removed"):
        start, skipped, day, freq = {"freeze_removed": (D(2025, 10, 5), D(2025, 11, 5), D(2026, 1, 5), "monthly"),
                                     "freeze_removed_month_end": (D(2026, 1, 31), D(2026, 1, 31), D(2026, 2, 28), "monthly"),
                                     "freeze_removed_13_weekly": (D(2026, 1, 1), D(2026, 1, 15), D(2026, 3, 26), "weekly")}[fix]
        k1 = dict(start_date=start)
        wrong = dict(status_changes=[change("S1", "K1", "freeze", skipped - dt.timedelta(days=1)),
                                     change("S2", "K1", "thaw", skipped + dt.timedelta(days=1))])
        step = dt.timedelta(days=7) if freq == "weekly" else None
        expected = ([start + k * step for k in range(13)] if step else
                    {"freeze_removed": [D(2025, 10, 5), D(2025, 11, 5), D(2025, 12, 5), D(2026, 1, 5)],
                     "freeze_removed_month_end": [D(2026, 1, 31), D(2026, 2, 28)]}[fix])
        fac_plans = dict(plans=[plan(frequency=freq)])
    else:
        k1, day = dict(start_date=D(2025, 12, 10)), D(2026, 1, 10)
        wrong = dict(contracts=[contract("K1", first_bill_date=D(2026, 1, 10), **k1)])
        expected = [D(2025, 12, 10), D(2026, 1, 10)]
        fac_plans = {}
    db = tmp_path / "billing.duckdb"
    run(write_export(tmp_path / "data", facilities=fac, **fac_plans, **{"contracts": [contract("K1", **k1)], **wrong}),
        db, day, day)
    data = write_export(tmp_path / "data", facilities=fac, **fac_plans, contracts=[contract("K1", **k1)])
    summary, = run(data, db, day, day)
    assert summary.ledger_problems == {name: 0 for name in summary.ledger_problems}
    with duckdb.connect(str(db), read_only=True) as conn:
        ledger = conn.sql("SELECT bill_date FROM ledger WHERE kind = 'dues' ORDER BY 1").fetchall()
        postings = conn.sql("SELECT bill_date FROM dues_postings ORDER BY 1").fetchall()
        errors = conn.sql("SELECT error_code FROM dues_posting_errors").fetchall()
    assert ledger == postings == [(d,) for d in expected]
    assert errors == []
    assert_a_rerun_changes_nothing(data, db, day)


@pytest.mark.parametrize("later_days_first", [False, True])
def test_a_period_a_rerun_posts_after_its_day_charged_is_billed_by_the_next_billing(tmp_path, later_days_first):
    """C1's K2 was exported frozen by mistake: Jan 1 charged K1's 50.00. The export is fixed and
    Jan 1 rerun: K2's 30.00 posts, but Jan 1 resends its first charge (one per customer and day).
    The home's next billing to run (Jan 2, or Jan 3 if Jan 2 had billed already) bills the 30.00
    as dues posted; no later day bills it again. C2's only contract was the frozen one: the
    rerun charges C2 itself (declined), and no later day bills C2 for it before a retry would."""
    db = tmp_path / "billing.duckdb"

    def export(status):
        return write_export(tmp_path / "data", facilities=[facility(timezone="UTC")],
                            customers=[customer("C1"), customer("C2")],
                            plans=[plan(), plan(plan_id="B", dues_cents=3000)],
                            contracts=[contract("K1"), contract("K2", plan_id="B", status=status),
                                       contract("K3", customer_id="C2", plan_id="B", status=status)],
                            payment_methods=[card("C1"), card("C2", token="decline_do_not_honor")])
    run(export("frozen"), db, D(2026, 1, 1), D(2026, 1, 2) if later_days_first else D(2026, 1, 1))
    data = export("active")
    run(data, db, D(2026, 1, 1), D(2026, 1, 1))
    run(data, db, D(2026, 1, 3) if later_days_first else D(2026, 1, 2), D(2026, 1, 10))
    billed_on = D(2026, 1, 3) if later_days_first else D(2026, 1, 2)
    assert_a_rerun_changes_nothing(data, db, billed_on)
    with duckdb.connect(str(db), read_only=True) as conn:
        attempts = conn.sql("SELECT business_date, customer_id, amount_cents, outcome FROM billing_attempts "
                            "ORDER BY ALL").fetchall()
        reasons = conn.sql("SELECT reasons FROM billable_customers WHERE business_date = $d",
                           params={"d": billed_on}).fetchall()
        balances = conn.sql("SELECT customer_id, balance_cents FROM customer_balances ORDER BY 1").fetchall()
    assert attempts == [(D(2026, 1, 1), "C1", 5000, "approved"), (D(2026, 1, 1), "C2", 3000, "declined"),
                        (billed_on, "C1", 3000, "approved")]
    assert reasons == [(["dues_posted"],)]
    assert balances == [("C1", 0), ("C2", 3000)]


def charged_and_owed(db: Path) -> tuple[list[tuple], list[tuple]]:
    """(business_date, amount_cents) of every charge, and every customer's balance."""
    with duckdb.connect(str(db), read_only=True) as conn:
        return (conn.sql("SELECT business_date, amount_cents FROM billing_attempts ORDER BY ALL").fetchall(),
                conn.sql("SELECT balance_cents FROM customer_balances ORDER BY customer_id").fetchall())


def test_a_period_posted_late_at_a_facility_west_of_home_is_billed_by_the_homes_next_billing(tmp_path):
    """C1 (home New York) has K1 at New York and K2 at Los Angeles, both exported frozen by
    mistake. Jan 1 and 2 ran; the export is fixed and Jan 1 rerun: New York's Jan 1 charges C1
    for the first time, 50.00, a balance that cannot hold Los Angeles' Jan 1 (it runs three
    hours later). That charge was written after K2 posted, yet did not bill it: Jan 3 does."""
    facilities = [facility(facility_id="NY", timezone="America/New_York"),
                  facility(facility_id="LA", timezone="America/Los_Angeles")]
    db = tmp_path / "billing.duckdb"

    def export(status):
        return write_export(tmp_path / "data", facilities=facilities, customers=[customer("C1", facility_id="NY")],
                            plans=[plan(), plan(plan_id="B", dues_cents=3000)],
                            contracts=[contract("K1", facility_id="NY", status=status),
                                       contract("K2", facility_id="LA", plan_id="B", status=status)],
                            payment_methods=[card("C1")])
    run(export("frozen"), db, D(2026, 1, 1), D(2026, 1, 2))
    data = export("active")
    run(data, db, D(2026, 1, 1), D(2026, 1, 1))
    run(data, db, D(2026, 1, 3), D(2026, 1, 10))
    attempts, balances = charged_and_owed(db)
    assert attempts == [(D(2026, 1, 1), 5000), (D(2026, 1, 3), 3000)]
    assert balances == [(0,)]


def test_a_period_posted_late_between_a_days_billing_and_its_charging_is_billed_next(tmp_path):
    """Jan 2's billing step worked out C1's balance (K4's 20.00) before a rerun of Jan 1 posted
    K2's 30.00 late, and its charging step wrote the charge after: the charge bills the balance
    its billing step saw, so Jan 3 bills the 30.00."""
    from billing_pipeline.cycle import charge, maintenance, post_dues, select_billable
    from billing_pipeline.facility_clock import facility_days_for_date
    from billing_pipeline.gateway import SimulatedGateway
    from billing_pipeline.inputs.load import load_inputs
    from billing_pipeline.night import Night
    from billing_pipeline.warehouse.store import Warehouse

    db = tmp_path / "billing.duckdb"

    def export(status):
        return write_export(tmp_path / "data", facilities=[facility(timezone="UTC")],
                            plans=[plan(), plan(plan_id="B", dues_cents=3000), plan(plan_id="E", dues_cents=2000)],
                            contracts=[contract("K1"), contract("K2", plan_id="B", status=status),
                                       contract("K4", plan_id="E", start_date=D(2026, 1, 2))],
                            payment_methods=[card("C1")])
    old = export("frozen")
    run(old, db, D(2026, 1, 1), D(2026, 1, 1))
    inputs = load_inputs(old)
    night = Night(inputs, facility_days_for_date(inputs.facilities, D(2026, 1, 2)))
    settings = RunOptions().cycle_settings()
    warehouse = Warehouse(db)
    with warehouse.connect(echo=lambda _: None) as conn:
        maintenance(conn, night)
        post_dues(conn, night)
        select_billable(conn, night, settings)
    data = export("active")
    run(data, db, D(2026, 1, 1), D(2026, 1, 1))
    gateway = SimulatedGateway(warehouse.gateway_record_path)
    try:
        with warehouse.connect(echo=lambda _: None) as conn:
            charge(conn, night, gateway, settings)
    finally:
        gateway.close()
    run(data, db, D(2026, 1, 3), D(2026, 1, 10))
    attempts, balances = charged_and_owed(db)
    assert attempts == [(D(2026, 1, 1), 5000), (D(2026, 1, 2), 2000), (D(2026, 1, 3), 3000)]
    assert balances == [(0,)]


class ChargingCrashed(BaseException):
    """Stands for the process dying in the gateway call, after its requests were written."""


def test_dues_held_behind_a_killed_days_charge_are_billed_once_that_day_is_rerun(tmp_path, monkeypatch):
    """Jan 2's charging dies after writing C1's request. Jan 3 posts K4's dues and holds C1
    (`charge_pending`: Jan 2's charge may have gone through). Jan 2 is rerun and settles its
    charge; the next billing, Jan 4, bills K4's dues held on Jan 3, once."""
    import billing_pipeline.cycle as cycle

    db = tmp_path / "billing.duckdb"
    data = write_export(tmp_path / "data", facilities=[facility(timezone="UTC")],
                        plans=[plan(), plan(plan_id="E", dues_cents=2000), plan(plan_id="W", dues_cents=700)],
                        contracts=[contract("K1"), contract("K3", plan_id="E", start_date=D(2026, 1, 2)),
                                   contract("K4", plan_id="W", start_date=D(2026, 1, 3))],
                        payment_methods=[card("C1")])
    run(data, db, D(2026, 1, 1), D(2026, 1, 1))

    def crash(*args, **kwargs):
        raise ChargingCrashed
    with monkeypatch.context() as patched:
        patched.setattr(cycle, "run_charges", crash)
        with pytest.raises(ChargingCrashed):
            run(data, db, D(2026, 1, 2), D(2026, 1, 2))
    run(data, db, D(2026, 1, 3), D(2026, 1, 3))
    run(data, db, D(2026, 1, 2), D(2026, 1, 2))
    run(data, db, D(2026, 1, 4), D(2026, 1, 10))
    assert_a_rerun_changes_nothing(data, db, D(2026, 1, 4))
    with duckdb.connect(str(db), read_only=True) as conn:
        held = conn.sql("SELECT hold_reason FROM billable_customers WHERE business_date = '2026-01-03'").fetchall()
    attempts, balances = charged_and_owed(db)
    assert held == [("charge_pending",)]
    assert attempts == [(D(2026, 1, 1), 5000), (D(2026, 1, 2), 2000), (D(2026, 1, 4), 700)]
    assert balances == [(0,)]


@pytest.mark.parametrize("gateway_can_tell", [True, False])
def test_a_killed_days_requests_are_settled_by_the_gateways_record_when_the_export_changed(tmp_path, monkeypatch,
                                                                                            gateway_can_tell):
    """Jan 1's charging dies after the gateway took C1's and C2's charges (5000 each) and before
    it heard of C3-C5's. Before the rerun the export changes: C2 and C3 paid 5000 at the desk,
    C4 paid 2000, C5 replaced their card. A gateway that can tell which keys it answered: C1 and
    C2 are recorded as it charged them (C2 has paid twice, and its ledger says so); C3 is not
    charged, C4 is charged 3000 and C5 on the new card, under the same keys. A gateway that
    cannot tell is sent every request as written: any of them may have gone through."""
    from billing_pipeline.gateway.simulated import SimulatedGateway

    customers = ["C1", "C2", "C3", "C4", "C5"]
    rows = dict(facilities=[facility(timezone="UTC")], customers=[customer(c) for c in customers],
                contracts=[contract(f"K{c}", customer_id=c) for c in customers],
                payment_methods=[card(c) for c in customers])
    data = write_export(tmp_path / "data", **rows)
    db = tmp_path / "billing.duckdb"
    original = SimulatedGateway.charge

    async def dies_after_c1_and_c2(self, requests):
        await original(self, requests.filter(pl.col("customer_id").is_in(["C1", "C2"])))
        raise ChargingCrashed
    with monkeypatch.context() as patched:
        patched.setattr(SimulatedGateway, "charge", dies_after_c1_and_c2)
        with pytest.raises(ChargingCrashed):
            run(data, db, D(2026, 1, 1), D(2026, 1, 1))
    if not gateway_can_tell:
        monkeypatch.delattr(SimulatedGateway, "answered")

    def paid(customer_id, cents):
        return dict(payment_id=f"P{customer_id}", customer_id=customer_id, facility_id="F1", amount_cents=cents,
                    paid_date=D(2026, 1, 1), channel="terminal")
    write_export(tmp_path / "data", **{**rows, "payments": [paid("C2", 5000), paid("C3", 5000), paid("C4", 2000)],
                                       "payment_methods": [card(c) for c in customers[:4]]
                                       + [card("C5", removed=True), card("C5", payment_method_id="PM-C5-new")]})
    run(data, db, D(2026, 1, 1), D(2026, 1, 1))

    gateway = sqlite3.connect(db.with_name("billing.gateway.sqlite"))
    captured = {(c, m): cents for c, m, cents in gateway.execute(
        "SELECT customer_id, payment_method_id, amount_cents FROM charges WHERE outcome = 'approved'")}
    with duckdb.connect(str(db), read_only=True) as conn:
        attempts = {(c, m): cents for c, m, cents in conn.execute(
            "SELECT customer_id, payment_method_id, amount_cents FROM billing_attempts WHERE outcome = 'approved'")
            .fetchall()}
        unanswered = conn.execute("SELECT count(*) FROM charge_requests ANTI JOIN billing_attempts "
                                  "USING (idempotency_key)").fetchone()[0]
        billable = dict(conn.execute("SELECT customer_id, coalesce(hold_reason, balance_cents::VARCHAR) "
                                     "FROM billable_customers").fetchall())
        payments = dict(conn.execute("SELECT customer_id, -sum(amount_cents) FROM ledger WHERE kind = 'billing_payment' "
                                     "GROUP BY ALL").fetchall())
    assert captured == attempts  # what the gateway took, recorded once each
    assert payments == {c: cents for (c, _), cents in attempts.items()}
    assert unanswered == 0
    if gateway_can_tell:
        assert billable == {"C1": "5000", "C4": "3000", "C5": "5000"}
        assert attempts == {("C1", "PM-C1"): 5000, ("C2", "PM-C2"): 5000, ("C4", "PM-C4"): 3000,
                            ("C5", "PM-C5-new"): 5000}
    else:
        assert attempts == {(c, f"PM-{c}"): 5000 for c in customers}
    assert_a_rerun_changes_nothing(data, db, D(2026, 1, 1))


def test_the_ledger_check_finds_a_posting_listed_with_other_values_than_posted(tmp_path):
    """dues_postings edited by hand to another amount: the check after the run's day finds it, and
    a rerun of the day puts it right."""
    db = tmp_path / "billing.duckdb"
    run(write_export(tmp_path / "data", facilities=[facility(timezone="UTC")]), db, D(2026, 1, 1), D(2026, 1, 1))
    from billing_pipeline.warehouse.ledger import ledger_problems
    from billing_pipeline.warehouse.store import Warehouse

    days = pl.DataFrame({"facility_id": ["F1"], "business_date": [D(2026, 1, 1)]})
    with Warehouse(db).connect() as conn:
        conn.execute("UPDATE dues_postings SET amount_cents = 7000")
        assert ledger_problems(conn, days)["postings_missing_from_ledger"].height == 1
    # A rerun of the day lists the posting as the ledger has it again.
    summary, = run(tmp_path / "data", db, D(2026, 1, 1), D(2026, 1, 1))
    assert summary.ledger_problems["postings_missing_from_ledger"] == 0


def test_surcharge_posted_only_when_approved(tmp_path):
    data = write_export(
        tmp_path / "data",
        facilities=[facility(surcharge_enabled=True, surcharge_product_id="SUR", surcharge_percent=2.5)],
        customers=[customer("C1"), customer("C2")],
        contracts=[contract("K1", dues_cents=1010), contract("K2", customer_id="C2", dues_cents=1010)],
        payment_methods=[card("C1"), card("C2", token="decline_insufficient_funds")])
    db = tmp_path / "billing.duckdb"
    run(data, db, D(2026, 1, 1), D(2026, 1, 1))
    with duckdb.connect(str(db), read_only=True) as conn:
        ledger = conn.sql("SELECT customer_id, kind, amount_cents, product_id FROM ledger ORDER BY 1, 2").fetchall()
        balances = dict(conn.sql("SELECT customer_id, balance_cents FROM customer_balances").fetchall())
    # 2.5 % of 1010 = 25.25 -> 25; the payment is balance + surcharge, leaving nothing due.
    assert ("C1", "surcharge", 25, "SUR") in ledger and ("C1", "billing_payment", -1035, None) in ledger
    assert not any(c == "C2" and k in ("surcharge", "billing_payment") for c, k, _, _ in ledger)
    assert balances == {"C1": 0, "C2": 1010}


@pytest.mark.parametrize("credit", [3000, 0])
def test_dues_held_as_duplicates_on_another_date_charge_no_credit_back(tmp_path, credit):
    """C1's home is Berlin; K1 and K2, for one plan at Los Angeles, are duplicates on the 1st
    (K2 ends that day): LA's 1st holds both, and Berlin's 2nd counts those held dues as due,
    though no duplicate is in effect on its own date. C1 owes nothing posted (a credit, or
    nothing): held, not charged -credit or 0. On the 3rd, the dues posted once the duplicate had
    ended (the 1st's periods of K1 and K2, caught up on LA's 2nd) are charged less the credit."""
    data = write_export(
        tmp_path / "data", facilities=[facility(facility_id="H", timezone="Europe/Berlin"),
                                       facility(facility_id="W", timezone="America/Los_Angeles")],
        customers=[customer("C1", facility_id="H")],
        contracts=[contract("K1", facility_id="W"), contract("K2", facility_id="W", end_date=D(2026, 1, 1))],
        payment_methods=[card("C1")],
        payments=[dict(payment_id="P1", customer_id="C1", facility_id="H", amount_cents=credit,
                       paid_date=D(2025, 12, 20), channel="manual")] if credit else [])
    db = tmp_path / "billing.duckdb"
    run(data, db, D(2026, 1, 1), D(2026, 1, 3), max_flagged_share=1.0)
    with duckdb.connect(str(db), read_only=True) as conn:
        billed = conn.sql("SELECT business_date, balance_cents, hold_reason FROM billable_customers ORDER BY 1").fetchall()
        charged = conn.sql("SELECT business_date, amount_cents, outcome FROM billing_attempts ORDER BY 1").fetchall()
        ((payments,),) = conn.sql("SELECT sum(amount_cents) FROM ledger WHERE kind = 'billing_payment'").fetchall()
        dues = conn.sql("SELECT contract_id, bill_date, business_date, amount_cents FROM ledger WHERE kind = 'dues' "
                        "ORDER BY 1").fetchall()
    assert (D(2026, 1, 2), -credit, "duplicate_contract") in billed
    assert dues == [("K1", D(2026, 1, 1), D(2026, 1, 2), 5000), ("K2", D(2026, 1, 1), D(2026, 1, 2), 5000)]
    assert charged == [(D(2026, 1, 3), 10000 - credit, "approved")]
    assert payments == -(10000 - credit)


def test_a_charge_of_zero_or_less_is_never_sent(tmp_path):
    """The last line before the gateway: a request of zero or less stops charging before any call."""
    from billing_pipeline.charging import ChargeSettings, run_charges
    from billing_pipeline.gateway import SimulatedGateway

    gateway = SimulatedGateway(tmp_path / "gw.sqlite")
    requests = pl.DataFrame({"idempotency_key": ["k1", "k2"], "customer_id": ["C1", "C2"],
                             "payment_method_id": ["PM1", "PM2"], "token": ["tok", "tok"], "charge_cents": [1000, -3000]})
    recorded = []
    with pytest.raises(ValueError, match="1 charge requests of zero or less, none sent: k2"):
        run_charges(requests, gateway, ChargeSettings(), recorded.append)
    assert gateway.captured() == {} and recorded == []


@pytest.mark.parametrize("card_from", [D(2026, 1, 2), None])
def test_a_hold_counts_for_the_rolling_sweep_only_while_it_applies(tmp_path, card_from):
    """Rolling sweeps every 7 days. C1 owes an open charge and has no card on the 1st (held
    no_payment_method). Given a card from the 2nd, the 2nd sweeps and charges C1: the hold no
    longer applies, and a hold is not an attempt (SPEC 1.4). Still without one, C1 is swept every
    7 days (the 1st, the 8th), not every night, where a few stuck members would keep a quiet
    night's flagged share over the block limit."""
    fac = [facility(sweep_mode="rolling", rolling_sweep_days=7, timezone="UTC")]
    contracts = [contract("K1", start_date=D(2026, 2, 20))]
    charges = [dict(charge_id="CH1", customer_id="C1", facility_id="F1", product_id="RETAIL", amount_cents=5000,
                    posted_date=D(2025, 12, 20), due_date=D(2025, 12, 31))]
    db = tmp_path / "billing.duckdb"
    run(write_export(tmp_path / "data", facilities=fac, contracts=contracts, charges=charges, payment_methods=[]),
        db, D(2026, 1, 1), D(2026, 1, 1))
    run(write_export(tmp_path / "data", facilities=fac, contracts=contracts, charges=charges,
                     payment_methods=[card("C1")] if card_from else []), db, D(2026, 1, 2), D(2026, 1, 9))
    with duckdb.connect(str(db), read_only=True) as conn:
        billed = conn.sql("SELECT business_date, reasons, hold_reason FROM billable_customers ORDER BY 1").fetchall()
        charged = conn.sql("SELECT business_date, amount_cents, outcome FROM billing_attempts").fetchall()
    first = (D(2026, 1, 1), ["sweep_rolling"], "no_payment_method")
    if card_from:
        assert billed == [first, (D(2026, 1, 2), ["sweep_rolling"], None)]
        assert charged == [(D(2026, 1, 2), 5000, "approved")]
    else:
        assert billed == [first, (D(2026, 1, 8), ["sweep_rolling"], "no_payment_method")]
        assert charged == []


def test_block_posts_dues_and_charges_no_one(tmp_path):
    """Two billable customers, one flagged (no payment method): 50 % > 2 %, the window blocks."""
    data = write_export(tmp_path / "data", customers=[customer("C1"), customer("C2")],
                        contracts=[contract("K1"), contract("K2", customer_id="C2")], payment_methods=[card("C1")])
    db = tmp_path / "billing.duckdb"
    [summary] = run(data, db, D(2026, 1, 1), D(2026, 1, 1))
    assert summary.blocked_facility_days == ["F1 2026-01-01"]
    assert summary.dues_posted == 2 and summary.approved == summary.declined == 0
    with duckdb.connect(str(db), read_only=True) as conn:
        holds = dict(conn.sql("SELECT customer_id, hold_reason FROM billable_customers").fetchall())
        assert conn.execute("SELECT count(*) FROM charge_requests").fetchone() == (0,)
    assert holds == {"C1": "billing_blocked", "C2": "no_payment_method"}
    # The command line says which facility-days were blocked and exits 3.
    from click.testing import CliRunner

    from billing_pipeline.cli import main

    result = CliRunner().invoke(main, ["run", "--data", str(data), "--db", str(db), "--date", "2026-01-01"])
    assert result.exit_code == 3, result.output
    assert "billing blocked by the pre-billing checks for 1 facility-day (F1 2026-01-01)" in result.output
    assert "the other" not in result.output
    # With a facility of another window that bills, the message says so.
    both = write_export(tmp_path / "both", facilities=[facility(), facility(facility_id="F2", timezone="America/New_York")],
                        customers=[customer("C1"), customer("C2"), customer("C3", facility_id="F2")],
                        contracts=[contract("K1"), contract("K2", customer_id="C2"),
                                   contract("K3", customer_id="C3", facility_id="F2")],
                        payment_methods=[card("C1"), card("C3")])
    result = CliRunner().invoke(main, ["run", "--data", str(both), "--db", str(tmp_path / "both.duckdb"),
                                       "--date", "2026-01-01"])
    assert result.exit_code == 3, result.output
    assert "for 1 facility-day (F1 2026-01-01): their dues posted, none of their customers charged (the other 1 " \
           "billed)" in result.output
    # With a higher threshold the same day bills C1; C2 stays held.
    [summary] = run(data, db, D(2026, 1, 1), D(2026, 1, 1), max_flagged_share=0.6)
    assert summary.blocked_facility_days == [] and summary.approved == 1


def test_duplicates_not_fixed_count_in_the_block_share_every_night_their_held_dues_are_due_again(tmp_path):
    """20 of the 50 customers due Feb 10 hold two contracts of one plan (a broken export). Their
    held periods are due again, and held again, each night until fixed: Feb 11, with 30 others
    due, is blocked too (20 of 50), not billed as though the export were mended."""
    stuck = [f"A{i:02d}" for i in range(20)]
    others = {day: [f"B{day}{i:02d}" for i in range(30)] for day in (10, 11)}
    everyone = [*stuck, *(c for day in others.values() for c in day)]
    data = write_export(
        tmp_path / "data", facilities=[facility(timezone="UTC")], customers=[customer(c) for c in everyone],
        contracts=[*(contract(f"K{c}{n}", customer_id=c, start_date=D(2026, 2, 10)) for c in stuck for n in (1, 2)),
                   *(contract(f"K{c}", customer_id=c, start_date=D(2026, 2, day))
                     for day, customers in others.items() for c in customers)],
        payment_methods=[card(c) for c in everyone])
    db = tmp_path / "billing.duckdb"
    nights = run(data, db, D(2026, 2, 10), D(2026, 2, 11))
    assert [n.blocked_facility_days for n in nights] == [["F1 2026-02-10"], ["F1 2026-02-11"]]
    assert [n.approved for n in nights] == [0, 0]
    with duckdb.connect(str(db), read_only=True) as conn:
        counted = conn.sql("SELECT business_date, billable_customers, flagged_customers FROM billing_blocks "
                           "ORDER BY 1").fetchall()
    assert counted == [(D(2026, 2, 10), 50, 20), (D(2026, 2, 11), 50, 20)]


def test_one_facility_run_alone_is_blocked_or_billed_as_its_window_decides(tmp_path):
    """F1 alone: 1 flagged of 2 (50 %); with F2's 50 customers in its window: 1 of 52 (under 2 %).
    `run --facility F1` counts F2 as F2's last run stored it, as the whole window would."""
    big = [customer(f"B{i:02d}", facility_id="F2") for i in range(50)]
    data = write_export(
        tmp_path / "data", facilities=[facility(), facility(facility_id="F2", name="Second")],
        customers=[customer("C1"), customer("C2"), *big],
        contracts=[contract("K1"), contract("K2", customer_id="C2"),
                   *[contract(f"KB{c['customer_id']}", customer_id=c["customer_id"], facility_id="F2") for c in big]],
        payment_methods=[card("C1"), *[card(c["customer_id"]) for c in big]])
    day = D(2026, 1, 1)

    def run_one(db, facility_id):
        return run_dates(data, db, day, day, facility_id, RunOptions(), echo=lambda _: None)

    def blocks(db):
        with duckdb.connect(str(db), read_only=True) as conn:
            return conn.sql("SELECT * FROM billing_blocks WHERE facility_id = 'F1'").fetchall()

    whole = tmp_path / "whole.duckdb"
    [summary] = run_one(whole, None)
    assert summary.blocked_facility_days == [] and summary.approved == 51

    apart = tmp_path / "apart.duckdb"
    run_one(apart, "F2")
    [summary] = run_one(apart, "F1")
    assert summary.blocked_facility_days == [] and summary.approved == 1
    assert blocks(apart) == blocks(whole)  # window_billable 52, window_flagged 1

    alone = tmp_path / "alone.duckdb"  # F2 has not run: F1's window holds F1 alone
    [summary] = run_one(alone, "F1")
    assert summary.blocked_facility_days == ["F1 2026-01-01"] and summary.approved == 0


KILL_SCRIPT = """
import sys, datetime as dt
from pathlib import Path
from billing_pipeline.runner import RunOptions, run_dates
run_dates(Path(sys.argv[1]), Path(sys.argv[2]), dt.date(2026, 3, 28), dt.date(2026, 3, 28), None,
          RunOptions(latency_s=float(sys.argv[3]), max_in_flight=4), echo=print)
"""


def test_killed_while_charging_then_rerun_charges_no_one_twice_and_misses_no_one(demo_data, tmp_path):
    db = tmp_path / "billing.duckdb"
    gateway_state = db.with_name("billing.gateway.sqlite")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # 20 ms a charge, 4 in flight: a few hundred charges take seconds, so the kill lands mid-way.
    victim = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(demo_data), str(db), "0.02"], env=env,
                              start_new_session=True)
    charged = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if gateway_state.exists():
            try:
                charged = sqlite3.connect(gateway_state).execute("SELECT count(*) FROM charges").fetchone()[0]
            except sqlite3.OperationalError:
                charged = 0
            if charged >= 40:
                break
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()

    with duckdb.connect(str(db.with_name("billing.writer.duckdb")), read_only=True) as conn:
        requested = conn.execute("SELECT count(*) FROM charge_requests").fetchone()[0]
        recorded = conn.execute("SELECT count(*) FROM billing_attempts").fetchone()[0]
    assert recorded < requested, "the kill must leave requests without an outcome"

    rerun = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(demo_data), str(db), "0"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr

    gateway = sqlite3.connect(gateway_state)
    at_gateway = dict(gateway.execute("SELECT idempotency_key, outcome FROM charges").fetchall())
    with duckdb.connect(str(db), read_only=True) as conn:
        requests = conn.sql("SELECT idempotency_key FROM charge_requests").pl().get_column("idempotency_key")
        attempts = dict(conn.sql("SELECT idempotency_key, outcome FROM billing_attempts WHERE outcome <> 'error'")
                        .fetchall())
        payments = conn.sql("SELECT idempotency_key, count(*) AS n FROM ledger WHERE kind = 'billing_payment' "
                            "GROUP BY 1").pl()
        billable = conn.execute("SELECT count(*) FROM billable_customers WHERE hold_reason IS NULL").fetchone()[0]
    # Missed no one: every billable customer not on hold has a request and a final outcome.
    assert requests.len() == billable > 0
    assert set(attempts) | set(conn_errors(db)) == set(requests)
    # Charged no one twice: one record per key at the gateway, and it agrees with ours.
    assert attempts == {k: v for k, v in at_gateway.items()}
    assert payments.get_column("n").max() == 1
    assert set(payments.get_column("idempotency_key")) == {k for k, v in at_gateway.items() if v == "approved"}


def conn_errors(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return [k for (k,) in conn.sql("SELECT idempotency_key FROM billing_attempts WHERE outcome = 'error'")
                .fetchall()]


def test_a_skipped_day_run_after_a_later_day_is_refused_and_charges_no_one_twice(tmp_path):
    """Day 2 is skipped, day 3 catches it up and bills; running day 2 afterwards would bill again."""
    data = write_export(tmp_path / "data", contracts=[contract("K1", start_date=D(2026, 3, 2))])
    db = tmp_path / "billing.duckdb"
    run(data, db, D(2026, 3, 1), D(2026, 3, 1))
    run(data, db, D(2026, 3, 3), D(2026, 3, 3))
    before = snapshot(db)
    from click.testing import CliRunner

    from billing_pipeline.cli import main

    result = CliRunner().invoke(main, ["run", "--data", str(data), "--db", str(db), "--date", "2026-03-02"])
    assert result.exit_code == 2
    assert "F1 2026-03-02, caught up by 2026-03-03" in result.output
    after = snapshot(db)
    assert all(before[name].equals(after[name]) for name in before)
    # Rerunning a day that did run stays allowed and changes nothing.
    run(data, db, D(2026, 3, 1), D(2026, 3, 1))
    assert snapshot(db)["ledger"].equals(before["ledger"])


@pytest.mark.parametrize("the_15th", ["billed", "missed", "billing_never_finished", "first_billing_never_finished",
                                      "first_night_killed_after_maintenance"])
def test_a_fixed_sweep_day_that_did_not_bill_is_swept_by_the_next_billing(tmp_path, the_15th):
    """Sweeps on the 15th; C1 owes an open charge and has no dues in April. Whether the 15th's
    night was missed or its billing never finished (and is refused once the 16th has billed),
    even on the facility's first night, the 16th sweeps C1, once; a rerun of the 16th again."""
    data = write_export(tmp_path / "data", facilities=[facility(sweep_mode="fixed", fixed_sweep_days="15")],
                        contracts=[contract("K1", start_date=D(2026, 4, 20))],
                        charges=[dict(charge_id="CH1", customer_id="C1", facility_id="F1", product_id="RETAIL",
                                      amount_cents=1000, posted_date=D(2026, 4, 1), due_date=D(2026, 4, 5))])
    db = tmp_path / "billing.duckdb"
    if not the_15th.startswith("first"):
        run(data, db, D(2026, 4, 14), D(2026, 4, 14))
    if the_15th == "billed":
        run(data, db, D(2026, 4, 15), D(2026, 4, 15))
    elif the_15th != "missed":  # killed after posting its dues, or after maintenance
        from billing_pipeline import cycle
        from billing_pipeline.facility_clock import facility_days_for_date
        from billing_pipeline.inputs.load import load_inputs
        from billing_pipeline.night import Night
        from billing_pipeline.warehouse.store import Warehouse

        inputs = load_inputs(data)
        night = Night(inputs, facility_days_for_date(inputs.facilities, D(2026, 4, 15)))
        with Warehouse(db).connect() as conn:
            cycle.maintenance(conn, night)
            if the_15th != "first_night_killed_after_maintenance":
                cycle.post_dues(conn, night)
    run(data, db, D(2026, 4, 16), D(2026, 4, 16))
    assert_a_rerun_changes_nothing(data, db, D(2026, 4, 16))
    with duckdb.connect(str(db), read_only=True) as conn:
        billed = conn.sql("SELECT business_date, reasons, balance_cents FROM billable_customers ORDER BY 1").fetchall()
        swept = conn.sql("SELECT business_date, reason, sweep_day FROM sweep_candidates ORDER BY 1").fetchall()
        charged = conn.sql("SELECT business_date, amount_cents, outcome FROM billing_attempts ORDER BY 1").fetchall()
    sweep_day = D(2026, 4, 15) if the_15th == "billed" else D(2026, 4, 16)
    assert billed == [(sweep_day, ["sweep_fixed"], 1000)]
    assert swept == [(sweep_day, "sweep_fixed", D(2026, 4, 15))]  # the 16th names the sweep day it makes up
    assert charged == [(sweep_day, 1000, "approved")]


def test_a_warehouse_from_before_the_billing_stamps_makes_up_no_sweep(tmp_path):
    """Its days billed (billing_blocks rows) but carry no billed_first_at: the first night after
    the upgrade sweeps only if D is a sweep day, not for every sweep day of its history."""
    data = write_export(tmp_path / "data", facilities=[facility(sweep_mode="fixed", fixed_sweep_days="10")],
                        contracts=[contract("K1", start_date=D(2026, 4, 20))],
                        charges=[dict(charge_id="CH1", customer_id="C1", facility_id="F1", product_id="RETAIL",
                                      amount_cents=1000, posted_date=D(2026, 4, 11), due_date=D(2026, 4, 12))])
    db = tmp_path / "billing.duckdb"
    run(data, db, D(2026, 4, 9), D(2026, 4, 14))
    from billing_pipeline.warehouse.store import Warehouse

    with Warehouse(db).connect() as conn:
        conn.execute("UPDATE processed_days SET billed_first_at = NULL, dues_first_posted_at = NULL")
    run(data, db, D(2026, 4, 15), D(2026, 4, 15))
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.sql("SELECT count(*) FROM billable_customers").fetchall() == [(0,)]


def writer_after_a_clean_day(tmp_path):
    """The writer file after Jan 1 ran on the default export, its ledger check clean."""
    from billing_pipeline.warehouse.ledger import ledger_problems

    db = tmp_path / "billing.duckdb"
    run(write_export(tmp_path / "data"), db, D(2026, 1, 1), D(2026, 1, 1))
    writer = duckdb.connect(str(db.with_name("billing.writer.duckdb")))
    assert not any(f.height for f in ledger_problems(writer).values())
    return writer


def test_ledger_check_compares_the_ledger_with_what_happened(tmp_path):
    """A payment posted twice under another key, or a posting that never reached the ledger,
    is found even though customer_balances moved with the ledger."""
    from billing_pipeline.warehouse.ledger import ledger_problems, post_entries

    writer = writer_after_a_clean_day(tmp_path)
    payment = writer.sql("SELECT * EXCLUDE (posted_at) FROM ledger WHERE kind = 'billing_payment'").pl()
    post_entries(writer, payment.with_columns(pl.lit("payment|forged").alias("entry_id"),
                                              pl.lit("forged").alias("idempotency_key")))
    writer.execute("INSERT INTO dues_postings SELECT business_date, facility_id, contract_id, customer_id, "
                   "DATE '2026-02-01', kind, amount_cents, 'period|K1|2026-02-01', DATE '2026-02-28', series_from "
                   "FROM dues_postings")
    problems = {name: frame.height for name, frame in ledger_problems(writer).items()}
    day = pl.DataFrame({"facility_id": ["F1"], "business_date": [D(2026, 1, 1)]})
    scoped = {name: frame.height for name, frame in ledger_problems(writer, day).items()}
    writer.close()
    for found in (problems, scoped):  # the daily audit, and the check after the day's run
        assert found["payments_not_matching_approved_charges"] == 1
        assert found["customers_paid_twice_a_day"] == 1
        assert found["postings_missing_from_ledger"] == 1
        assert found["balance_mismatches"] == 0  # the balances moved with the forged entry: not enough alone


def test_ledger_check_finds_entries_of_a_facility_day_that_never_ran(tmp_path):
    """An entry dated on a facility-day with no processed_days row is in no balance a billing
    sees: the daily audit and the check of that day find it, though customer_balances moved with it."""
    from billing_pipeline.warehouse.ledger import ledger_problems, post_entries

    writer = writer_after_a_clean_day(tmp_path)
    period = writer.sql("SELECT * EXCLUDE (posted_at) FROM ledger WHERE kind = 'dues' LIMIT 1").pl()
    post_entries(writer, period.with_columns(pl.lit(D(2026, 1, 5)).alias("business_date"),
                                             pl.lit("period|stray").alias("entry_id"),
                                             pl.lit(D(2026, 1, 5)).alias("bill_date")))
    day = pl.DataFrame({"facility_id": period.get_column("facility_id"), "business_date": [D(2026, 1, 5)]})
    problems, scoped = ledger_problems(writer), ledger_problems(writer, day)
    writer.close()
    for found in (problems, scoped):
        assert found["entries_of_unprocessed_days"].rows() == [(period.item(0, "facility_id"), D(2026, 1, 5), 1)]
        assert found["balance_mismatches"].height == 0


def test_a_change_exported_after_its_date_ran_and_one_of_an_unknown_contract_are_reported_once(tmp_path):
    """Apr 1 and 2 ran; the next export adds a thaw of K1 effective Mar 5 (K1 was never frozen)
    and a freeze of K9, which does not exist. Apr 10 reports both (K9's under the export's first
    facility, F1); Apr 11 does not again, nor does a rerun of Apr 2."""
    facilities = [facility(facility_id="F1", timezone="UTC"), facility(facility_id="F2", timezone="UTC")]
    customers = [customer("C1", facility_id="F2")]
    contracts = [contract("K1", facility_id="F2")]
    db = tmp_path / "billing.duckdb"
    run(write_export(tmp_path / "data", facilities=facilities, customers=customers, contracts=contracts),
        db, D(2026, 4, 1), D(2026, 4, 2))
    data = write_export(tmp_path / "data", facilities=facilities, customers=customers, contracts=contracts,
                        status_changes=[change("S1", "K1", "thaw", D(2026, 3, 5)),
                                        change("S9", "K9", "freeze", D(2026, 3, 20))])
    run(data, db, D(2026, 4, 10), D(2026, 4, 11))
    run(data, db, D(2026, 4, 2), D(2026, 4, 2))
    with duckdb.connect(str(db), read_only=True) as conn:
        errors = conn.execute("SELECT business_date, facility_id, change_id, contract_id, error_code, message "
                              "FROM status_change_errors ORDER BY change_id").fetchall()
    assert errors == [
        (D(2026, 4, 10), "F2", "S1", "K1", "not_applicable", "thaw effective 2026-03-05 does not apply: the contract is active then"),
        (D(2026, 4, 10), "F1", "S9", "K9", "not_applicable", "freeze effective 2026-03-20 does not apply: contract K9 is not in the export")]


def test_a_status_change_error_follows_its_contract_to_another_facility_on_a_rerun(tmp_path):
    """X1 (a thaw of an active K1) is reported at A on Jan 5; the export moves K1 to B. A rerun of
    Jan 5 reports it at B, once, and a second rerun leaves it so."""
    fac = [facility(facility_id="A", timezone="UTC"), facility(facility_id="B", timezone="America/Los_Angeles")]

    def export(at):
        return write_export(tmp_path / "data", facilities=fac, customers=[customer("C1", facility_id="A")],
                            contracts=[contract("K1", facility_id=at, start_date=D(2026, 1, 1))],
                            status_changes=[change("X1", "K1", "thaw", D(2026, 1, 5))])
    db = tmp_path / "billing.duckdb"

    def errors():
        with duckdb.connect(str(db), read_only=True) as conn:
            return conn.sql("SELECT business_date, facility_id, change_id FROM status_change_errors").fetchall()
    run(export("A"), db, D(2026, 1, 5), D(2026, 1, 5))
    assert errors() == [(D(2026, 1, 5), "A", "X1")]
    for _ in range(2):
        run(export("B"), db, D(2026, 1, 5), D(2026, 1, 5))
        assert errors() == [(D(2026, 1, 5), "B", "X1")]


def test_a_status_change_of_a_contract_at_an_unknown_facility_is_reported_at_the_customers_home(tmp_path):
    """K1's facility FX does not exist: its dues error and its thaw that does not apply (it was
    never frozen) are both reported under F1, its customer's home facility."""
    data = write_export(tmp_path / "data", contracts=[contract("K1", facility_id="FX")],
                        status_changes=[change("S1", "K1", "thaw", D(2026, 3, 1))])
    db = tmp_path / "billing.duckdb"
    run(data, db, D(2026, 3, 1), D(2026, 3, 2))
    with duckdb.connect(str(db), read_only=True) as conn:
        errors = conn.execute("SELECT business_date, facility_id, change_id, error_code FROM status_change_errors").fetchall()
        dues = conn.execute("SELECT DISTINCT facility_id, error_code FROM dues_posting_errors").fetchall()
    assert errors == [(D(2026, 3, 1), "F1", "S1", "not_applicable")]
    assert dues == [("F1", "unknown_facility")]
