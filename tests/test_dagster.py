"""The Dagster code location: loads, materializes a partition, schedules, blocks billing."""

import datetime as dt

import dagster as dg
import duckdb
import pytest

from assets.definitions import build_definitions
from assets.schedules import NIGHTLY_JOB
from billing_pipeline.facility_clock import partition_key, run_instant
from billing_pipeline.runner import RunOptions, run_dates
from tests.factories import D, card, contract, customer, facility, plan, write_export

BERLIN_2026_03_02 = "2026-03-02-01:00"  # 03:00 CET = 02:00 UTC, the window (01:00, 02:00]


def export(tmp_path, with_card_for_c2=True):
    cards = [card("C1"), card("C2")] if with_card_for_c2 else [card("C1")]
    return write_export(tmp_path / "data", customers=[customer("C1"), customer("C2")],
                        contracts=[contract("K1"), contract("K2", customer_id="C2", start_date=D(2026, 2, 2))],
                        payment_methods=cards)


def execute(defs, key, instance=None):
    job = defs.resolve_job_def(NIGHTLY_JOB)
    return job.execute_in_process(partition_key=key, instance=instance or dg.DagsterInstance.ephemeral(),
                                  raise_on_error=False)


def test_definitions_load_from_the_workspace_module():
    from assets.definitions import defs

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"contracts", "contract_status_daily", "due_contracts", "dues_postings", "billable_customers",
            "sweep_candidates", "duplicate_contracts", "recurring_dues_without_payment_method",
            "billing_attempts", "failed_billing_events"} <= keys
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert {"no_duplicate_contracts", "recurring_dues_have_payment_method", "ledger_balances"} <= checks
    assert defs.resolve_job_def(NIGHTLY_JOB) is not None


def test_partition_materializes_against_a_duckdb_file(tmp_path):
    assert partition_key(run_instant("Europe/Berlin", D(2026, 3, 2))) == BERLIN_2026_03_02
    db = tmp_path / "billing.duckdb"
    result = execute(build_definitions(str(export(tmp_path)), str(db)), BERLIN_2026_03_02)
    assert result.success
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {("billable_customers", "no_duplicate_contracts"): True,
                      ("billable_customers", "recurring_dues_have_payment_method"): True,
                      ("dues_postings", "ledger_balances"): True, ("billing_attempts", "ledger_balances"): True}
    counts = {m.asset_key.to_user_string(): m.materialization.metadata["dagster/row_count"].value
              for m in result.get_asset_materialization_events()}
    # K1 bills monthly from Jan 1: Jan 1, Feb 1, Mar 1 catch up; K2 from Feb 2: Feb 2 and Mar 2 (= D).
    assert counts["dues_postings"] == 5 and counts["billing_attempts"] == 2
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT sum(amount_cents) FROM ledger WHERE kind = 'dues'").fetchone() == (25000,)
        assert conn.execute("SELECT count(*) FROM billing_attempts WHERE outcome = 'approved'").fetchone() == (2,)


def test_partition_and_cli_give_identical_results(tmp_path):
    data = export(tmp_path)
    by_dagster, by_cli = tmp_path / "dagster.duckdb", tmp_path / "cli.duckdb"
    execute(build_definitions(str(data), str(by_dagster)), BERLIN_2026_03_02)
    run_dates(data, by_cli, D(2026, 3, 2), D(2026, 3, 2), None, RunOptions(), echo=lambda _: None)
    query = ("SELECT * EXCLUDE (posted_at) FROM ledger ORDER BY entry_id",
             "SELECT * EXCLUDE (completed_at) FROM billing_attempts ORDER BY 1",
             "SELECT * FROM billable_customers ORDER BY customer_id",
             "SELECT * FROM contract_status_daily ORDER BY contract_id")
    with duckdb.connect(str(by_dagster), read_only=True) as a, duckdb.connect(str(by_cli), read_only=True) as b:
        for sql in query:
            assert a.sql(sql).fetchall() == b.sql(sql).fetchall(), sql


def test_blocking_check_stops_billing_in_the_ui_and_dues_still_post(tmp_path):
    db = tmp_path / "billing.duckdb"
    result = execute(build_definitions(str(export(tmp_path, with_card_for_c2=False)), str(db)), BERLIN_2026_03_02)
    assert not result.success  # the run shows red in the UI
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"recurring_dues_have_payment_method"}  # no duplicates: that check passes
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "billable" in started and "charging" not in started
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM dues_postings").fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM billing_attempts").fetchone() == (0,)


def test_rerun_of_a_partition_changes_nothing(tmp_path):
    db = tmp_path / "billing.duckdb"
    defs = build_definitions(str(export(tmp_path)), str(db))
    instance = dg.DagsterInstance.ephemeral()
    execute(defs, BERLIN_2026_03_02, instance)
    with duckdb.connect(str(db), read_only=True) as conn:
        before = conn.sql("SELECT entry_id, amount_cents FROM ledger ORDER BY 1").fetchall()
    result = execute(defs, BERLIN_2026_03_02, instance)
    assert result.success
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.sql("SELECT entry_id, amount_cents FROM ledger ORDER BY 1").fetchall() == before


@pytest.mark.parametrize("now, expected", [
    (dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.timezone.utc), BERLIN_2026_03_02),
    (dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone.utc), None),
])
def test_schedule_runs_the_window_that_just_ended(tmp_path, now, expected):
    defs = build_definitions(str(export(tmp_path)), str(tmp_path / "billing.duckdb"))
    schedule = defs.get_schedule_def("facility_nights")
    with dg.build_schedule_context(scheduled_execution_time=now, repository_def=defs.get_repository_def(),
                                   resources={"export": defs.resources["export"]}) as context:
        result = schedule.evaluate_tick(context)
    if expected is None:
        assert result.run_requests == [] and "no facility" in result.skip_message
    else:
        assert [r.partition_key for r in result.run_requests] == [expected]


def test_the_first_business_date_has_a_window_in_every_zone():
    """2026-01-01 runs first at 03:00 UTC+14 (Kiritimati), 13:00 UTC the day before: every zone's
    first facility-day is in a partition, and none before it is needed."""
    import zoneinfo

    from assets.partitions import facility_day_windows

    keys = {partition_key(run_instant(zone, D(2026, 1, 1))) for zone in zoneinfo.available_timezones()}
    assert all(facility_day_windows.has_partition_key(key) for key in keys)
    assert min(keys) == facility_day_windows.get_first_partition_key() == "2025-12-31-12:00"


def test_half_hour_zone_facility_lands_in_its_own_window(tmp_path):
    data = write_export(tmp_path / "data", facilities=[facility(timezone="Asia/Kolkata")])
    defs = build_definitions(str(data), str(tmp_path / "billing.duckdb"))
    # 03:00 IST = 21:30 UTC the evening before: window (21:00, 22:00].
    result = execute(defs, "2026-03-01-21:00")
    assert result.success
    counts = {m.asset_key.to_user_string(): m.materialization.metadata["dagster/row_count"].value
              for m in result.get_asset_materialization_events()}
    assert counts["contract_status_daily"] == 1
    assert execute(defs, "2026-03-01-22:00").success


@pytest.mark.parametrize("home, away, start, home_start, billed_on", [
    (("NY", "America/New_York"), ("LA", "America/Los_Angeles"), D(2026, 3, 2), None, [D(2026, 3, 3)]),
    (("PPG", "Pacific/Pago_Pago"), ("KIR", "Pacific/Kiritimati"), D(2026, 3, 3), None, [D(2026, 3, 3)]),
    # Billed on D for a home contract: the balance of D must not include Kiritimati's D+1 dues.
    (("PPG", "Pacific/Pago_Pago"), ("KIR", "Pacific/Kiritimati"), D(2026, 3, 3), D(2026, 3, 2),
     [D(2026, 3, 2), D(2026, 3, 3)]),
], ids=["away_three_hours_west", "away_more_than_a_day_east", "away_more_than_a_day_east_with_home_dues"])
def test_contract_in_another_time_zone_than_the_home_is_billed_once_and_alike(tmp_path, home, away, start,
                                                                               home_start, billed_on):
    """C1 lives at `home` and holds a contract at `away`. Los Angeles's day D runs three hours
    after New York's, so its dues of D are billed by New York's next run. Kiritimati (UTC+14)
    runs its D+1 an hour before Pago Pago (UTC-11) runs D, and its dues of D+1 wait for Pago
    Pago's D+1 (also out of the balance billed on D). In Dagster (windows in order) and with
    `run` (a date at a time) alike: each period billed once, with the reason dues_posted."""
    (home_id, home_tz), (away_id, away_tz) = home, away
    contracts = [contract("K1", facility_id=away_id, start_date=start)]
    if home_start is not None:  # another plan: two contracts for one plan would be a duplicate
        contracts.append(contract("K0", facility_id=home_id, plan_id="PT", start_date=home_start))
    data = write_export(
        tmp_path / "data",
        facilities=[facility(facility_id=home_id, timezone=home_tz), facility(facility_id=away_id, timezone=away_tz)],
        plans=[plan(), plan(plan_id="PT", name="Personal training", contract_type="program")],
        customers=[customer("C1", facility_id=home_id)], contracts=contracts, payment_methods=[card("C1")])
    day, next_day = D(2026, 3, 2), D(2026, 3, 3)
    windows = sorted({partition_key(run_instant(tz, d)) for tz in (home_tz, away_tz) for d in (day, next_day)})
    assert len(windows) == 4
    by_dagster, by_cli = tmp_path / "dagster.duckdb", tmp_path / "cli.duckdb"
    defs = build_definitions(str(data), str(by_dagster))
    for key in windows:
        assert execute(defs, key).success, key
    run_dates(data, by_cli, day, next_day, None, RunOptions(), echo=lambda _: None)
    for db in (by_dagster, by_cli):
        with duckdb.connect(str(db), read_only=True) as conn:
            billed = conn.sql("SELECT business_date, facility_id, customer_id, reasons, balance_cents "
                              "FROM billable_customers ORDER BY 1").fetchall()
            charged = conn.sql("SELECT business_date, facility_id, amount_cents, outcome FROM billing_attempts "
                               "ORDER BY 1").fetchall()
        assert billed == [(d, home_id, "C1", ["dues_posted"], 5000) for d in billed_on], db.name
        assert charged == [(d, home_id, 5000, "approved") for d in billed_on], db.name



def new_york_member_with_a_los_angeles_contract(tmp_path, days: int, **new_york):
    """C1 lives in New York; their monthly contract at Los Angeles starts (bills) on 2026-03-02."""
    data = write_export(
        tmp_path / "data",
        facilities=[facility(facility_id="NY", timezone="America/New_York", **new_york),
                    facility(facility_id="LA", timezone="America/Los_Angeles")],
        customers=[customer("C1", facility_id="NY")],
        contracts=[contract("K1", facility_id="LA", start_date=D(2026, 3, 2))],
        payment_methods=[card("C1", token="decline_insufficient_funds" if new_york else "tok_ok")])
    dates = [D(2026, 3, 2) + dt.timedelta(days=n) for n in range(days)]
    ny = [partition_key(run_instant("America/New_York", d)) for d in dates]
    la = [partition_key(run_instant("America/Los_Angeles", d)) for d in dates]
    db = tmp_path / "billing.duckdb"
    return build_definitions(str(data), str(db)), dg.DagsterInstance.ephemeral(), dates, ny, la, db


def billed_and_charged(db):
    with duckdb.connect(str(db), read_only=True) as conn:
        return (conn.execute("SELECT business_date, customer_id, reasons, balance_cents FROM billable_customers "
                             "ORDER BY 1").fetchall(),
                conn.execute("SELECT business_date, amount_cents, outcome FROM billing_attempts ORDER BY 1").fetchall())


def test_dues_of_a_window_run_late_are_billed_by_the_homes_next_run(tmp_path):
    """Los Angeles's window of D fails and is rerun the next day, after New York's D+1 (which,
    on schedule, would have billed its dues). New York's D+2 bills them: dues_posted, once, and
    a rerun of New York's D+2 changes nothing."""
    defs, instance, dates, ny, la, db = new_york_member_with_a_los_angeles_contract(tmp_path, 3)
    for key in [ny[0], ny[1], la[0], la[1], ny[2]]:
        assert execute(defs, key, instance).success, key
    first = billed_and_charged(db)
    assert first == ([(dates[2], "C1", ["dues_posted"], 5000)], [(dates[2], 5000, "approved")])
    assert execute(defs, ny[2], instance).success
    assert billed_and_charged(db) == first


def test_dues_of_a_window_whose_dues_step_failed_are_billed_after_its_rerun(tmp_path, monkeypatch):
    """Los Angeles's window of D gets through maintenance, then its dues step fails; it is rerun
    after New York's D+1. Its dues count from when they first posted, not from its maintenance."""
    from billing_pipeline import cycle

    defs, instance, dates, ny, la, db = new_york_member_with_a_los_angeles_contract(tmp_path, 3)
    assert execute(defs, ny[0], instance).success
    post_dues = cycle.post_dues
    monkeypatch.setattr(cycle, "post_dues", lambda *a: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert not execute(defs, la[0], instance).success
    monkeypatch.setattr(cycle, "post_dues", post_dues)
    for key in [ny[1], la[0], la[1], ny[2]]:
        assert execute(defs, key, instance).success, key
    assert billed_and_charged(db) == ([(dates[2], "C1", ["dues_posted"], 5000)], [(dates[2], 5000, "approved")])


def test_a_home_day_rerun_after_a_late_day_does_not_count_its_dues_twice(tmp_path):
    """New York's D+1 is rerun after Los Angeles's late D: the rerun counts what its first run
    counted, so the dues give one dues_posted (D+2) and one declined charge, not a second charge
    a day later that skips the 3-day retry wait."""
    defs, instance, dates, ny, la, db = new_york_member_with_a_los_angeles_contract(
        tmp_path, 3, retry_declined_after_days=3)
    for key in [ny[0], ny[1], la[0], ny[1], la[1], ny[2]]:
        assert execute(defs, key, instance).success, key
    assert billed_and_charged(db) == ([(dates[2], "C1", ["dues_posted"], 5000)], [(dates[2], 5000, "declined")])


def test_dues_of_a_backfill_days_late_are_billed_by_the_homes_next_run(tmp_path):
    defs, instance, dates, ny, la, db = new_york_member_with_a_los_angeles_contract(tmp_path, 6)
    for key in ny[:5] + la[:5] + ny[5:]:
        assert execute(defs, key, instance).success, key
    assert billed_and_charged(db) == ([(dates[5], "C1", ["dues_posted"], 5000)], [(dates[5], 5000, "approved")])


def test_window_with_two_business_dates_blocks_each_date_apart_and_alike(tmp_path):
    """03:00 at Kiritimati (UTC+14) on D+1 and at Honolulu (UTC-10) on D are the same instant, so
    one window holds two business dates. One of Kiritimati's two members has no payment method
    (50 % flagged); Honolulu's one is clean. Kiritimati's day is blocked, Honolulu's is billed: in the
    Dagster window, and with `run` a date at a time."""
    data = write_export(
        tmp_path / "data",
        facilities=[facility(facility_id="HNL", timezone="Pacific/Honolulu"),
                    facility(facility_id="KIR", timezone="Pacific/Kiritimati")],
        customers=[customer("C1", facility_id="HNL"), customer("C2", facility_id="KIR"),
                   customer("C3", facility_id="KIR")],
        contracts=[contract("K1", facility_id="HNL", start_date=D(2026, 3, 2)),
                   contract("K2", customer_id="C2", facility_id="KIR", start_date=D(2026, 3, 3)),
                   contract("K3", customer_id="C3", facility_id="KIR", start_date=D(2026, 3, 3))],
        payment_methods=[card("C1"), card("C3")])
    day, next_day = D(2026, 3, 2), D(2026, 3, 3)
    window = partition_key(run_instant("Pacific/Honolulu", day))
    assert partition_key(run_instant("Pacific/Kiritimati", next_day)) == window
    by_dagster, by_cli = tmp_path / "dagster.duckdb", tmp_path / "cli.duckdb"
    result = execute(build_definitions(str(data), str(by_dagster)), window)
    assert result.success  # one date blocked of two: the check warns, billing runs
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    check = evaluations["recurring_dues_have_payment_method"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["blocked"].value == "KIR 2026-03-03"  # named in the UI
    assert "charging" in {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    # `run` a date at a time, every facility: the window's two facility-days are in two runs.
    summaries = run_dates(data, by_cli, day, next_day, None, RunOptions(), echo=lambda _: None)
    assert [s.blocked_facility_days for s in summaries] == [[], [f"KIR {next_day}"]]  # `run` exits 3
    window_days = "(facility_id, business_date) IN (('HNL', DATE '2026-03-02'), ('KIR', DATE '2026-03-03'))"
    for db in (by_dagster, by_cli):
        with duckdb.connect(str(db), read_only=True) as conn:
            blocks = conn.sql("SELECT facility_id, business_date, window_flagged_share, blocked "
                              f"FROM billing_blocks WHERE {window_days} ORDER BY 1").fetchall()
            held = conn.sql("SELECT facility_id, customer_id, hold_reason FROM billable_customers "
                            f"WHERE {window_days} ORDER BY 1, 2").fetchall()
            charged = conn.sql(f"SELECT facility_id, customer_id, outcome FROM billing_attempts WHERE {window_days}").fetchall()
        assert blocks == [("HNL", day, 0.0, False), ("KIR", next_day, 0.5, True)], db.name
        assert held == [("HNL", "C1", None), ("KIR", "C2", "no_payment_method"), ("KIR", "C3", "billing_blocked")], db.name
        assert charged == [("HNL", "C1", "approved")], db.name


def test_daily_ledger_audit_checks_what_no_window_touched(tmp_path):
    """A window's ledger check covers what its facility-days wrote; a balance edited by hand for a
    customer of another facility is found by the daily audit (job and CLI), recorded in ledger_audits."""
    from click.testing import CliRunner

    from assets.audit import AUDIT_JOB
    from billing_pipeline.cli import main

    berlin, new_york = facility(), facility(facility_id="F2", name="New York", timezone="America/New_York")
    data = write_export(tmp_path / "data", facilities=[berlin, new_york],
                        customers=[customer("C1"), customer("C2", facility_id="F2")],
                        contracts=[contract("K1"), contract("K2", customer_id="C2", facility_id="F2")],
                        payment_methods=[card("C1"), card("C2")])
    db = tmp_path / "billing.duckdb"
    defs, instance = build_definitions(str(data), str(db)), dg.DagsterInstance.ephemeral()
    new_york_2026_03_02 = partition_key(run_instant("America/New_York", D(2026, 3, 2)))
    assert execute(defs, new_york_2026_03_02, instance).success
    audit = defs.resolve_job_def(AUDIT_JOB)
    first = audit.execute_in_process(instance=instance, raise_on_error=False)
    assert [e.passed for e in first.get_asset_check_evaluations()] == [True]

    with duckdb.connect(str(db.with_name("billing.writer.duckdb"))) as writer:  # outside the pipeline
        writer.execute("UPDATE customer_balances SET balance_cents = balance_cents + 1 WHERE customer_id = 'C2'")
    berlin_window = execute(defs, BERLIN_2026_03_02, instance)
    assert berlin_window.success
    assert {e.passed for e in berlin_window.get_asset_check_evaluations() if e.check_name == "ledger_balances"} == {True}

    second = audit.execute_in_process(instance=instance, raise_on_error=False)
    (evaluation,) = second.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["balance_mismatches"].value == 1
    assert "C2" in evaluation.metadata["balance_mismatches_sample"].value
    cli = CliRunner().invoke(main, ["audit-ledger", "--db", str(db)])
    assert cli.exit_code == 4 and "balance_mismatches 1" in cli.output
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT problems FROM ledger_audits ORDER BY audited_at").fetchall() == [(0,), (1,), (1,)]


def test_a_windows_ledger_check_finds_a_bad_balance_of_a_customer_it_posted_to(tmp_path):
    db = tmp_path / "billing.duckdb"
    defs, instance = build_definitions(str(export(tmp_path)), str(db)), dg.DagsterInstance.ephemeral()
    assert execute(defs, BERLIN_2026_03_02, instance).success
    with duckdb.connect(str(db.with_name("billing.writer.duckdb"))) as writer:
        writer.execute("UPDATE customer_balances SET balance_cents = balance_cents + 1 WHERE customer_id = 'C1'")
    rerun = execute(defs, BERLIN_2026_03_02, instance)
    failed = {(e.asset_key.to_user_string(), e.check_name) for e in rerun.get_asset_check_evaluations() if not e.passed}
    assert failed == {("dues_postings", "ledger_balances"), ("billing_attempts", "ledger_balances")}


def failing(monkeypatch, name):
    """Makes cycle.<name> fail (a crash, a full disk) until the returned function restores it."""
    from billing_pipeline import cycle

    real = getattr(cycle, name)
    monkeypatch.setattr(cycle, name, lambda *a: (_ for _ in ()).throw(RuntimeError("disk full")))
    return lambda: monkeypatch.setattr(cycle, name, real)


def step_errors(result) -> str:
    """Every failed step's error messages, causes included."""
    messages = []
    for event in result.all_events:
        error = event.step_failure_data.error if event.is_step_failure else None
        while error is not None:
            messages.append(error.message)
            error = error.cause
    return " ".join(messages)


def new_york_member_billed_on_two_days(tmp_path):
    """C1 at New York: 5000 due on D (K1) and 5000 on D+1 (K2, another plan)."""
    data = write_export(
        tmp_path / "data", facilities=[facility(facility_id="NY", timezone="America/New_York")],
        plans=[plan(), plan(plan_id="PT", name="Personal training", contract_type="program")],
        customers=[customer("C1", facility_id="NY")],
        contracts=[contract("K1", facility_id="NY", start_date=D(2026, 3, 2)),
                   contract("K2", facility_id="NY", plan_id="PT", start_date=D(2026, 3, 3))],
        payment_methods=[card("C1")])
    db = tmp_path / "billing.duckdb"
    ny = [partition_key(run_instant("America/New_York", d)) for d in (D(2026, 3, 2), D(2026, 3, 3))]
    return build_definitions(str(data), str(db)), dg.DagsterInstance.ephemeral(), ny, db


def next_day_ran_after_d_failed_in(tmp_path, monkeypatch, step: str):
    """`new_york_member_billed_on_two_days`, D failed in cycle.<step>, then D+1 ran whole."""
    defs, instance, ny, db = new_york_member_billed_on_two_days(tmp_path)
    restore = failing(monkeypatch, step)
    assert not execute(defs, ny[0], instance).success
    restore()
    assert execute(defs, ny[1], instance).success
    return defs, instance, ny, db


def holds(db):
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute("SELECT business_date, customer_id, hold_reason, balance_cents FROM billable_customers "
                            "ORDER BY 1, 2").fetchall()


def test_a_home_day_whose_billing_failed_is_refused_after_the_next_day_billed(tmp_path, monkeypatch):
    """New York's D fails in billing after its dues posted; D+1 counts D's dues and bills C1's
    whole balance (10000). Billing D now would charge D's 5000 again: refused, with the reason."""
    defs, instance, ny, db = next_day_ran_after_d_failed_in(tmp_path, monkeypatch, "select_billable")
    rerun = execute(defs, ny[0], instance)
    assert not rerun.success and "a later day of their facility already billed" in step_errors(rerun)
    assert billed_and_charged(db)[1] == [(D(2026, 3, 3), 10000, "approved")]


def test_a_home_day_whose_charging_failed_holds_whom_the_next_day_charged(tmp_path, monkeypatch):
    """New York's D bills C1 (5000), then its charging fails before writing a request; D+1
    charges C1's whole balance (10000). Rerunning D holds C1 (billed_later): one charge."""
    defs, instance, ny, db = next_day_ran_after_d_failed_in(tmp_path, monkeypatch, "charge")
    assert execute(defs, ny[0], instance).success
    assert holds(db) == [(D(2026, 3, 2), "C1", "billed_later", 5000), (D(2026, 3, 3), "C1", None, 10000)]
    assert billed_and_charged(db)[1] == [(D(2026, 3, 3), 10000, "approved")]


def charging_alone(defs, key, instance):
    """Re-executes only a partition's charging step (Dagster's re-execute from failure)."""
    from assets.billing import BILLING_ATTEMPTS, FAILED_BILLING_EVENTS

    return defs.resolve_job_def(NIGHTLY_JOB).execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False,
        asset_selection=[BILLING_ATTEMPTS, FAILED_BILLING_EVENTS])


def charged_in_all(db) -> int:
    return sum(amount for _, amount, outcome in billed_and_charged(db)[1] if outcome == "approved")


def test_charging_retried_alone_after_the_next_day_charged_holds_whom_it_charged(tmp_path, monkeypatch):
    """As above, but only D's failed charging step is re-executed, not its billable customers:
    C1 is held there too, charged once, and a full rerun of D afterwards changes nothing."""
    from tests.test_cycle import snapshot

    defs, instance, ny, db = next_day_ran_after_d_failed_in(tmp_path, monkeypatch, "charge")
    result = charging_alone(defs, ny[0], instance)
    assert result.success
    [materialized] = [m for m in result.asset_materializations_for_node("charging")
                      if m.asset_key.to_user_string() == "billing_attempts"]
    assert materialized.metadata["held_at_charging"].value == 1
    assert holds(db) == [(D(2026, 3, 2), "C1", "billed_later", 5000), (D(2026, 3, 3), "C1", None, 10000)]
    assert billed_and_charged(db)[1] == [(D(2026, 3, 3), 10000, "approved")]
    before = snapshot(db)
    assert execute(defs, ny[0], instance).success
    assert all(before[name].equals(table) for name, table in snapshot(db).items())


@pytest.mark.parametrize("d_again", ["charging_alone", "whole_partition", "cli_facility"])
def test_a_day_charged_after_the_next_day_selected_its_customers_does_not_charge_them(tmp_path, monkeypatch, d_again):
    """D and D+1 both fail in charging before writing a request; D+1's billable customers count
    C1's whole balance (10000, D's 5000 included). D is then charged (its charging step alone, the
    whole partition, or `run --date D --facility NY`), then D+1's charging step: 10000 in all."""
    defs, instance, ny, db = new_york_member_billed_on_two_days(tmp_path)
    restore = failing(monkeypatch, "charge")
    assert not execute(defs, ny[0], instance).success
    assert not execute(defs, ny[1], instance).success
    restore()
    if d_again == "charging_alone":
        assert charging_alone(defs, ny[0], instance).success
    elif d_again == "whole_partition":
        assert execute(defs, ny[0], instance).success
    else:
        run_dates(tmp_path / "data", db, D(2026, 3, 2), D(2026, 3, 2), "NY", RunOptions(), echo=lambda _: None)
    assert charging_alone(defs, ny[1], instance).success
    assert charged_in_all(db) == 10000, billed_and_charged(db)[1]
    assert holds(db)[0] == (D(2026, 3, 2), "C1", "billed_later", 5000)


def test_a_run_of_d_between_the_next_nights_steps_does_not_charge_twice(tmp_path, monkeypatch):
    """No failure of D+1: while D+1's nightly run goes from its billable step to its charging
    step, `billing-pipeline run --date D --facility NY` (waiting on the lock) charges D."""
    import assets.resources as resources
    from billing_pipeline.gateway import SimulatedGateway

    defs, instance, ny, db = new_york_member_billed_on_two_days(tmp_path)
    restore = failing(monkeypatch, "charge")
    assert not execute(defs, ny[0], instance).success
    restore()
    ran = []

    def gateway(*args, **kwargs):  # the charging step opens the gateway, then takes the warehouse lock
        if not ran:
            ran.append(run_dates(tmp_path / "data", db, D(2026, 3, 2), D(2026, 3, 2), "NY", RunOptions(),
                                 echo=lambda _: None))
        return SimulatedGateway(*args, **kwargs)

    monkeypatch.setattr(resources, "SimulatedGateway", gateway)
    assert execute(defs, ny[1], instance).success and ran
    assert charged_in_all(db) == 10000, billed_and_charged(db)[1]


def test_a_killed_days_requests_wait_while_its_rerun_is_blocked_in_dagster_and_run_alike(tmp_path, monkeypatch):
    """Mar 2's charging dies after writing C1's and C2's requests. Before the rerun C2's card is
    removed: the rerun is blocked (1 flagged of 2). Dagster skips the charging step; `run` charges
    no one and sends or settles nothing written before either: the requests wait, unanswered, for
    a rerun of the fixed day, which charges both (C2 on its new card)."""
    def export_with(c2_card):
        return write_export(tmp_path / "data", customers=[customer("C1"), customer("C2")],
                            contracts=[contract("K1", start_date=D(2026, 3, 2)),
                                       contract("K2", customer_id="C2", start_date=D(2026, 3, 2))],
                            payment_methods=[card("C1"), *([c2_card] if c2_card else [])])

    def state(db):
        with duckdb.connect(str(db), read_only=True) as conn:
            return (conn.sql("SELECT customer_id, payment_method_id, amount_cents FROM charge_requests ORDER BY 1").fetchall(),
                    conn.sql("SELECT customer_id, payment_method_id, outcome FROM billing_attempts ORDER BY 1").fetchall(),
                    conn.sql("SELECT * FROM unanswered_charge_days").fetchall())

    by_dagster, by_cli = tmp_path / "dagster.duckdb", tmp_path / "cli.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    data = export_with(card("C2"))
    restore = failing(monkeypatch, "run_charges")
    assert not execute(build_definitions(str(data), str(by_dagster)), BERLIN_2026_03_02, instance).success
    with pytest.raises(RuntimeError, match="disk full"):
        run_dates(data, by_cli, D(2026, 3, 2), D(2026, 3, 2), None, RunOptions(), echo=lambda _: None)
    restore()
    data = export_with(None)
    execute(build_definitions(str(data), str(by_dagster)), BERLIN_2026_03_02, instance)
    [summary] = run_dates(data, by_cli, D(2026, 3, 2), D(2026, 3, 2), None, RunOptions(), echo=lambda _: None)
    assert summary.blocked_facility_days == ["F1 2026-03-02"]
    waiting = ([("C1", "PM-C1", 5000), ("C2", "PM-C2", 5000)], [], [("F1", D(2026, 3, 2))])
    assert state(by_dagster) == state(by_cli) == waiting
    data = export_with(card("C2", payment_method_id="PM-C2-new"))
    execute(build_definitions(str(data), str(by_dagster)), BERLIN_2026_03_02, instance)
    run_dates(data, by_cli, D(2026, 3, 2), D(2026, 3, 2), None, RunOptions(), echo=lambda _: None)
    charged = ([("C1", "PM-C1", 5000), ("C2", "PM-C2-new", 5000)],
               [("C1", "PM-C1", "approved"), ("C2", "PM-C2-new", "approved")], [])
    assert state(by_dagster) == state(by_cli) == charged


def test_billing_of_a_day_whose_dues_never_posted_is_refused(tmp_path):
    """D's billable and charging steps materialized alone, its maintenance and dues never run:
    refused, nothing charged (a later day would not know what it billed)."""
    from assets.billing import (BILLABLE_CUSTOMERS, BILLING_ATTEMPTS, DUPLICATE_CONTRACTS, FAILED_BILLING_EVENTS,
                                SWEEP_CANDIDATES, WITHOUT_PAYMENT_METHOD)

    defs, instance, ny, db = new_york_member_billed_on_two_days(tmp_path)
    assert execute(defs, ny[0], instance).success
    result = defs.resolve_job_def(NIGHTLY_JOB).execute_in_process(
        partition_key=ny[1], instance=instance, raise_on_error=False,
        asset_selection=[BILLABLE_CUSTOMERS, SWEEP_CANDIDATES, DUPLICATE_CONTRACTS, WITHOUT_PAYMENT_METHOD,
                         BILLING_ATTEMPTS, FAILED_BILLING_EVENTS])
    assert not result.success
    assert "their maintenance and dues posting have not finished (e.g. NY 2026-03-03)" in step_errors(result)
    assert billed_and_charged(db)[1] == [(D(2026, 3, 2), 5000, "approved")]


def test_dues_of_a_day_whose_maintenance_never_ran_are_refused(tmp_path):
    """D's dues step materialized alone, its maintenance never run: refused, nothing posted (a
    day not processed is counted by no billing, so its dues would be owed and never billed);
    the whole day, run after, posts and charges them once."""
    from assets.dues import DUE_CONTRACTS, DUES_POSTING_ERRORS, DUES_POSTINGS
    from billing_pipeline.warehouse.store import Warehouse

    defs, instance, ny, db = new_york_member_billed_on_two_days(tmp_path)
    result = defs.resolve_job_def(NIGHTLY_JOB).execute_in_process(
        partition_key=ny[0], instance=instance, raise_on_error=False,
        asset_selection=[DUE_CONTRACTS, DUES_POSTINGS, DUES_POSTING_ERRORS])
    assert not result.success
    assert "dues posting of 1 facility-days refused: their maintenance has not run (e.g. NY 2026-03-02)" \
        in step_errors(result)
    with duckdb.connect(str(Warehouse(db).writer_path), read_only=True) as conn:  # not published: read the writer's
        assert conn.sql("SELECT count(*) FROM ledger").fetchall() == [(0,)]
    assert execute(defs, ny[0], instance).success
    assert billed_and_charged(db)[1] == [(D(2026, 3, 2), 5000, "approved")]


def test_a_payment_method_changed_between_billable_and_charging_is_held_and_said(tmp_path, monkeypatch):
    """C1 replaces the card after D's billable step; D's charging, retried alone on the new
    export, holds C1 (no_payment_method) and says so; a rerun of the whole day charges the new card."""
    defs, instance, ny, db = new_york_member_billed_on_two_days(tmp_path)
    restore = failing(monkeypatch, "charge")
    assert not execute(defs, ny[0], instance).success
    restore()
    data = tmp_path / "data"
    write_export(data, facilities=[facility(facility_id="NY", timezone="America/New_York")],
                 plans=[plan(), plan(plan_id="PT", name="Personal training", contract_type="program")],
                 customers=[customer("C1", facility_id="NY")],
                 contracts=[contract("K1", facility_id="NY", start_date=D(2026, 3, 2)),
                            contract("K2", facility_id="NY", plan_id="PT", start_date=D(2026, 3, 3))],
                 payment_methods=[card("C1", removed=True), card("C1", payment_method_id="PM-C1-new")])
    defs = build_definitions(str(data), str(db))
    result = charging_alone(defs, ny[0], instance)
    assert result.success
    [materialized] = [m for m in result.asset_materializations_for_node("charging")
                      if m.asset_key.to_user_string() == "billing_attempts"]
    assert materialized.metadata["held_at_charging"].value == 1
    assert holds(db) == [(D(2026, 3, 2), "C1", "no_payment_method", 5000)]
    assert billed_and_charged(db)[1] == []
    assert execute(defs, ny[0], instance).success
    assert holds(db) == [(D(2026, 3, 2), "C1", None, 5000)]
    assert billed_and_charged(db)[1] == [(D(2026, 3, 2), 5000, "approved")]


def test_a_day_rerun_late_charges_whom_the_next_day_did_not_bill(tmp_path, monkeypatch):
    """C1's only dues are D's; New York's D fails in charging, D+1 (no reason to bill C1) runs,
    then D is rerun: C1 is charged then, once (not left owing until dues that never come)."""
    data = write_export(
        tmp_path / "data", facilities=[facility(facility_id="NY", timezone="America/New_York")],
        customers=[customer("C1", facility_id="NY")],
        contracts=[contract("K1", facility_id="NY", start_date=D(2026, 3, 2), end_date=D(2026, 3, 20))],
        payment_methods=[card("C1")])
    db = tmp_path / "billing.duckdb"
    defs, instance = build_definitions(str(data), str(db)), dg.DagsterInstance.ephemeral()
    ny = [partition_key(run_instant("America/New_York", d)) for d in (D(2026, 3, 2), D(2026, 3, 3))]
    restore = failing(monkeypatch, "charge")
    assert not execute(defs, ny[0], instance).success
    restore()
    assert execute(defs, ny[1], instance).success
    assert execute(defs, ny[0], instance).success
    assert billed_and_charged(db)[1] == [(D(2026, 3, 2), 5000, "approved")]


def unanswered_days(path):
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute("SELECT facility_id, business_date FROM unanswered_charge_days ORDER BY ALL").fetchall()


def test_a_warehouse_from_before_unanswered_days_were_listed_still_holds_the_customer(tmp_path, monkeypatch):
    """The holds read only the requests of days listed in unanswered_charge_days. A warehouse
    written before that table existed gets it filled from its history when it is opened: New
    York's D, killed while charging, is listed again, and D+1 still holds C1 (charge_pending);
    a day struck off once its charging recorded every outcome."""
    defs, instance, ny, db = new_york_member_billed_on_two_days(tmp_path)
    writer = db.with_name("billing.writer.duckdb")
    restore = failing(monkeypatch, "run_charges")
    assert not execute(defs, ny[0], instance).success
    restore()
    assert unanswered_days(writer) == [("NY", D(2026, 3, 2))]
    with duckdb.connect(str(writer)) as conn:
        conn.execute("DROP TABLE unanswered_charge_days")
    assert execute(defs, ny[1], instance).success
    assert holds(db) == [(D(2026, 3, 2), "C1", None, 5000), (D(2026, 3, 3), "C1", "charge_pending", 10000)]
    assert unanswered_days(db) == [("NY", D(2026, 3, 2))]
    assert execute(defs, ny[0], instance).success
    assert unanswered_days(db) == []
    assert billed_and_charged(db)[1] == [(D(2026, 3, 2), 5000, "approved")]


def test_a_blocked_day_fixed_after_the_next_day_ran_charges_its_customers(tmp_path):
    """New York's D is blocked (C2 of 2 has no card); D+1 runs before the export is fixed. After
    the fix, rerunning D charges C1 and C2 their dues of D, which D+1 had no reason to bill."""
    def export(c2_card):
        return write_export(
            tmp_path / "data", facilities=[facility(facility_id="NY", timezone="America/New_York")],
            customers=[customer("C1", facility_id="NY"), customer("C2", facility_id="NY")],
            contracts=[contract("K1", facility_id="NY", start_date=D(2026, 3, 2)),
                       contract("K2", customer_id="C2", facility_id="NY", start_date=D(2026, 3, 2))],
            payment_methods=[card("C1"), *([card("C2")] if c2_card else [])])
    data = export(c2_card=False)
    db = tmp_path / "billing.duckdb"
    defs, instance = build_definitions(str(data), str(db)), dg.DagsterInstance.ephemeral()
    ny = [partition_key(run_instant("America/New_York", d)) for d in (D(2026, 3, 2), D(2026, 3, 3))]
    assert not execute(defs, ny[0], instance).success  # blocked: charging does not run
    assert execute(defs, ny[1], instance).success
    export(c2_card=True)
    assert execute(defs, ny[0], instance).success
    assert billed_and_charged(db)[1] == [(D(2026, 3, 2), 5000, "approved"), (D(2026, 3, 2), 5000, "approved")]


def test_dues_counted_by_a_home_day_are_not_counted_again_by_its_late_rerun(tmp_path, monkeypatch):
    """New York's D+1 fails in billing; D+2 counts from D (the last day that billed); Los Angeles's
    D runs late and D+3 bills it. D+1's rerun is refused: one dues_posted, one charge."""
    defs, instance, dates, ny, la, db = new_york_member_with_a_los_angeles_contract(tmp_path, 4)
    assert execute(defs, ny[0], instance).success
    restore = failing(monkeypatch, "select_billable")
    assert not execute(defs, ny[1], instance).success
    restore()
    for key in [ny[2], la[0], ny[3]]:
        assert execute(defs, key, instance).success, key
    assert not execute(defs, ny[1], instance).success
    assert billed_and_charged(db) == ([(dates[3], "C1", ["dues_posted"], 5000)], [(dates[3], 5000, "approved")])


def test_a_homes_first_night_counts_the_dues_of_an_earlier_day_east_of_it(tmp_path):
    """Berlin's D ran (`run --facility BER`) before New York ever did: New York's first night, D+1,
    bills C1's Berlin dues of D."""
    data = write_export(
        tmp_path / "data", facilities=[facility(facility_id="NY", timezone="America/New_York"),
                                       facility(facility_id="BER", timezone="Europe/Berlin")],
        customers=[customer("C1", facility_id="NY")],
        contracts=[contract("K1", facility_id="BER", start_date=D(2026, 3, 2))], payment_methods=[card("C1")])
    db = tmp_path / "billing.duckdb"
    run_dates(data, db, D(2026, 3, 2), D(2026, 3, 2), "BER", RunOptions(), echo=lambda _: None)
    run_dates(data, db, D(2026, 3, 3), D(2026, 3, 4), None, RunOptions(), echo=lambda _: None)
    assert billed_and_charged(db) == ([(D(2026, 3, 3), "C1", ["dues_posted"], 5000)],
                                      [(D(2026, 3, 3), 5000, "approved")])


def test_a_charge_written_but_not_answered_holds_the_customer_until_its_day_is_rerun(tmp_path, monkeypatch):
    """New York's D dies while charging, after writing C1's request (it may have reached the
    gateway). D+1 would bill the whole balance, D's dues included: C1 is held (charge_pending).
    Rerunning D sends D's request; C1 pays D's 5000 once."""
    defs, instance, ny, db = next_day_ran_after_d_failed_in(tmp_path, monkeypatch, "run_charges")
    assert holds(db) == [(D(2026, 3, 2), "C1", None, 5000), (D(2026, 3, 3), "C1", "charge_pending", 10000)]
    assert execute(defs, ny[0], instance).success
    assert billed_and_charged(db)[1] == [(D(2026, 3, 2), 5000, "approved")]