"""Maintenance (SPEC 1.1): contract status as of D from the export plus status_changes, and the
changes that do not apply, reported once (SPEC 4)."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_pipeline.night import Night
from billing_pipeline.inputs.contract import TABLES
from billing_pipeline.inputs.load import Inputs
from billing_pipeline.rules import contract_status
from tests.factories import D, change, contract, customer, frames


def at(hour: int, day: dt.date, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute))


def tables(contracts: list[dict], changes: list[dict]) -> dict[str, pl.DataFrame]:
    customers = sorted({c["customer_id"] for c in contracts})
    return frames(contracts=contracts, status_changes=changes, customers=[customer(c) for c in customers])


def status_by_date(contracts: list[dict], changes: list[dict], dates: list[dt.date]) -> dict[tuple[str, dt.date], str]:
    """(contract_id, D) -> status on D, wired as the nightly cycle wires the rules."""
    t = tables(contracts, changes)
    keyed = contract_status.with_contract_key(t["contracts"])
    applied = contract_status.applied_changes(keyed.lazy(), t["status_changes"].lazy())
    timeline = contract_status.status_timeline(keyed.lazy(), applied)
    pairs = pl.DataFrame([(c["contract_id"], d) for c in contracts for d in dates], orient="row",
                         schema={"contract_id": pl.String, "business_date": pl.Date})
    pairs = pairs.join(keyed.select("contract_id", "contract_key", pl.col("status").alias("exported_status"),
                                    "start_date", "end_date"), on="contract_id")
    out = contract_status.status_on(timeline, pairs.lazy(), "business_date").collect()
    return {(r["contract_id"], r["business_date"]): r["status"] for r in out.iter_rows(named=True)}


def status(contract_row: dict, changes: list[dict], day: dt.date) -> str:
    return status_by_date([contract_row], changes, [day])[(contract_row["contract_id"], day)]


def reported(contracts: list[dict], changes: list[dict], processed: list[dt.date]) -> list[tuple[dt.date, str]]:
    """(business_date, change_id) of not_applicable errors over nightly runs on the processed dates."""
    t = tables(contracts, changes)
    keyed = contract_status.with_contract_key(t["contracts"])
    applied = contract_status.applied_changes(keyed.lazy(), t["status_changes"].lazy())
    with_facility = applied.join(t["contracts"].lazy().select("contract_id", "facility_id"), on="contract_id")
    # Night after night, each seeing the reports stored by the nights before.
    errors = pl.DataFrame(schema={"business_date": pl.Date, "change_id": pl.String, "facility_id": pl.String})
    for day in processed:
        night = pl.DataFrame({"facility_id": ["F1"], "business_date": [day]})
        errors = pl.concat([errors, contract_status.status_change_errors(with_facility, night.lazy(), errors.lazy())
                            .collect()], how="diagonal_relaxed")
    assert set(errors["error_code"]) <= {"not_applicable"}
    assert all(m for m in errors["message"])
    out = list(zip(errors["business_date"], errors["change_id"]))
    return sorted(out)


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


# --- the transitions --------------------------------------------------------------------------------

def test_freeze_makes_an_active_contract_frozen_from_its_effective_date():
    k = contract("K1", start_date=D(2026, 1, 1))
    changes = [change("X1", "K1", "freeze", D(2026, 3, 10))]
    got = status_by_date([k], changes, [D(2026, 3, 9), D(2026, 3, 10), D(2026, 4, 1)])
    assert got == {("K1", D(2026, 3, 9)): "active", ("K1", D(2026, 3, 10)): "frozen", ("K1", D(2026, 4, 1)): "frozen"}


def test_thaw_makes_a_frozen_contract_active_again():
    k = contract("K1")
    changes = [change("X1", "K1", "freeze", D(2026, 3, 10)), change("X2", "K1", "thaw", D(2026, 4, 5))]
    got = status_by_date([k], changes, [D(2026, 4, 4), D(2026, 4, 5)])
    assert got == {("K1", D(2026, 4, 4)): "frozen", ("K1", D(2026, 4, 5)): "active"}


def test_thaw_of_an_exported_frozen_contract():
    k = contract("K1", status="frozen")
    assert status(k, [], D(2026, 3, 1)) == "frozen"
    assert status(k, [change("X1", "K1", "thaw", D(2026, 3, 2))], D(2026, 3, 2)) == "active"


def test_terminate_is_final():
    k = contract("K1")
    changes = [change("X1", "K1", "terminate", D(2026, 3, 10)), change("X2", "K1", "thaw", D(2026, 3, 12)),
               change("X3", "K1", "freeze", D(2026, 3, 13))]
    got = status_by_date([k], changes, [D(2026, 3, 9), D(2026, 3, 10), D(2026, 3, 12), D(2026, 3, 20)])
    assert [got[("K1", d)] for d in (D(2026, 3, 9), D(2026, 3, 10), D(2026, 3, 12), D(2026, 3, 20))] == [
        "active", "terminated", "terminated", "terminated"]


def test_terminate_a_frozen_contract():
    k = contract("K1")
    changes = [change("X1", "K1", "freeze", D(2026, 3, 1)), change("X2", "K1", "terminate", D(2026, 3, 5))]
    assert status(k, changes, D(2026, 3, 5)) == "terminated"


def test_pending_becomes_active_on_its_start_date():
    k = contract("K1", status="pending", start_date=D(2026, 3, 10))
    got = status_by_date([k], [], [D(2026, 3, 1), D(2026, 3, 9), D(2026, 3, 10), D(2026, 3, 11)])
    assert [got[("K1", d)] for d in (D(2026, 3, 1), D(2026, 3, 9), D(2026, 3, 10), D(2026, 3, 11))] == [
        "pending", "pending", "active", "active"]


def test_concluded_after_end_date():
    k = contract("K1", end_date=D(2026, 3, 31))
    got = status_by_date([k], [], [D(2026, 3, 30), D(2026, 3, 31), D(2026, 4, 1), D(2026, 6, 1)])
    assert [got[("K1", d)] for d in (D(2026, 3, 30), D(2026, 3, 31), D(2026, 4, 1), D(2026, 6, 1))] == [
        "active", "active", "concluded", "concluded"]


def test_a_frozen_contract_concludes_after_its_end_date_too():
    k = contract("K1", end_date=D(2026, 3, 31))
    assert status(k, [change("X1", "K1", "freeze", D(2026, 3, 1))], D(2026, 4, 1)) == "concluded"


def test_pending_contract_with_a_past_end_date_is_concluded():
    k = contract("K1", status="pending", start_date=D(2026, 1, 1), end_date=D(2026, 2, 28))
    assert status(k, [], D(2026, 2, 1)) == "active"
    assert status(k, [], D(2026, 3, 1)) == "concluded"


def test_a_contract_dated_before_1900_follows_the_same_rules():
    """The timeline starts before any date an export holds: a pending contract that started in
    1899 is active, whether or not a later change puts it on the timeline."""
    k1 = contract("K1", status="pending", start_date=D(1899, 12, 5))
    k2 = contract("K2", status="pending", start_date=D(1899, 12, 5))
    got = status_by_date([k1, k2], [change("X1", "K2", "freeze", D(2026, 2, 1))], [D(2026, 1, 5), D(2026, 2, 5)])
    assert got == {("K1", D(2026, 1, 5)): "active", ("K2", D(2026, 1, 5)): "active",
                   ("K1", D(2026, 2, 5)): "active", ("K2", D(2026, 2, 5)): "frozen"}
    assert status(contract("K3", start_date=D(1899, 12, 1), end_date=D(1899, 12, 10)), [], D(1899, 12, 20)) == "concluded"


def test_exported_terminal_statuses_stay():
    for s in ("terminated", "concluded"):
        k = contract("K1", status=s)
        assert status(k, [change("X1", "K1", "thaw", D(2026, 3, 1))], D(2026, 3, 5)) == s


def test_freeze_of_a_pending_contract_on_or_after_start_applies():
    k = contract("K1", status="pending", start_date=D(2026, 3, 10))
    assert status(k, [change("X1", "K1", "freeze", D(2026, 3, 12))], D(2026, 3, 12)) == "frozen"


def test_freeze_of_a_pending_contract_before_start_does_not_apply():
    k = contract("K1", status="pending", start_date=D(2026, 3, 10))
    changes = [change("X1", "K1", "freeze", D(2026, 3, 5))]
    assert status(k, changes, D(2026, 3, 5)) == "pending"
    assert status(k, changes, D(2026, 3, 10)) == "active"


# --- same-day ordering and the start of the effective date ------------------------------------------------

def test_freeze_then_thaw_on_the_same_day_leaves_it_active():
    k = contract("K1")
    day = D(2026, 3, 10)
    changes = [change("X2", "K1", "thaw", day, at(11, day)), change("X1", "K1", "freeze", day, at(9, day))]
    assert status(k, changes, day) == "active"
    assert reported([k], changes, [day]) == []


def test_thaw_then_freeze_on_the_same_day_leaves_it_frozen_and_reports_the_thaw():
    k = contract("K1")
    day = D(2026, 3, 10)
    changes = [change("X1", "K1", "freeze", day, at(11, day)), change("X2", "K1", "thaw", day, at(9, day))]
    assert status(k, changes, day) == "frozen"
    assert reported([k], changes, [day]) == [(day, "X2")]


def test_order_is_effective_date_before_requested_at():
    k = contract("K1")
    # The thaw was requested first but is effective later: freeze (Mar 10) then thaw (Mar 12).
    changes = [change("X1", "K1", "thaw", D(2026, 3, 12), at(8, D(2026, 3, 1))),
               change("X2", "K1", "freeze", D(2026, 3, 10), at(8, D(2026, 3, 9)))]
    got = status_by_date([k], changes, [D(2026, 3, 11), D(2026, 3, 12)])
    assert (got[("K1", D(2026, 3, 11))], got[("K1", D(2026, 3, 12))]) == ("frozen", "active")
    assert reported([k], changes, days(D(2026, 3, 1), D(2026, 3, 15))) == []


def test_terminate_then_thaw_the_same_day_reports_the_thaw():
    k = contract("K1", status="frozen")
    day = D(2026, 3, 10)
    changes = [change("X1", "K1", "terminate", day, at(8, day)), change("X2", "K1", "thaw", day, at(9, day))]
    assert status(k, changes, day) == "terminated"
    assert reported([k], changes, [day]) == [(day, "X2")]


def test_a_change_takes_effect_from_the_start_of_its_effective_date_even_if_requested_late():
    k = contract("K1")
    day = D(2026, 3, 10)
    changes = [change("X1", "K1", "freeze", day, at(23, day, 59))]
    assert status(k, changes, day) == "frozen"
    assert status(k, changes, day - dt.timedelta(days=1)) == "active"


def test_terminate_effective_on_the_start_date_of_a_pending_contract():
    k = contract("K1", status="pending", start_date=D(2026, 3, 10))
    assert status(k, [change("X1", "K1", "terminate", D(2026, 3, 10))], D(2026, 3, 10)) == "terminated"


# --- not_applicable, reported exactly once -------------------------------------------------------------

def test_thaw_of_an_active_contract_is_reported_once_on_its_effective_date():
    k = contract("K1")
    changes = [change("X1", "K1", "thaw", D(2026, 3, 10))]
    assert status(k, changes, D(2026, 3, 10)) == "active"
    assert reported([k], changes, days(D(2026, 3, 1), D(2026, 3, 20))) == [(D(2026, 3, 10), "X1")]


def test_anything_after_termination_is_reported_once():
    k = contract("K1")
    changes = [change("X1", "K1", "terminate", D(2026, 3, 5)), change("X2", "K1", "freeze", D(2026, 3, 8)),
               change("X3", "K1", "thaw", D(2026, 3, 9)), change("X4", "K1", "terminate", D(2026, 3, 12))]
    assert reported([k], changes, days(D(2026, 3, 1), D(2026, 3, 20))) == [
        (D(2026, 3, 8), "X2"), (D(2026, 3, 9), "X3"), (D(2026, 3, 12), "X4")]


def test_freeze_of_a_pending_contract_before_its_start_is_reported_once():
    k = contract("K1", status="pending", start_date=D(2026, 3, 10))
    changes = [change("X1", "K1", "freeze", D(2026, 3, 5))]
    assert reported([k], changes, days(D(2026, 3, 1), D(2026, 3, 20))) == [(D(2026, 3, 5), "X1")]


def test_change_after_the_end_date_is_reported():
    k = contract("K1", end_date=D(2026, 3, 31))
    changes = [change("X1", "K1", "freeze", D(2026, 4, 2))]
    assert status(k, changes, D(2026, 4, 2)) == "concluded"
    assert reported([k], changes, days(D(2026, 3, 28), D(2026, 4, 5))) == [(D(2026, 4, 2), "X1")]


def test_error_for_a_missed_night_is_reported_on_the_next_processed_date():
    k = contract("K1")
    changes = [change("X1", "K1", "thaw", D(2026, 3, 10))]
    processed = [D(2026, 3, 8), D(2026, 3, 9), D(2026, 3, 12), D(2026, 3, 13)]  # 10 and 11 missed
    assert reported([k], changes, processed) == [(D(2026, 3, 12), "X1")]


def test_a_rerun_of_the_reporting_date_reports_it_again_for_that_date_only():
    """A rerun of D replaces D's rows: it must find the same error for D (previous date unchanged)."""
    k = contract("K1")
    changes = [change("X1", "K1", "thaw", D(2026, 3, 10))]
    first = reported([k], changes, [D(2026, 3, 9), D(2026, 3, 10)])
    assert first == reported([k], changes, [D(2026, 3, 9), D(2026, 3, 10)]) == [(D(2026, 3, 10), "X1")]


def test_a_report_stored_by_another_facility_day_is_not_made_again_but_a_rerun_makes_its_own():
    """X1 does not apply on Mar 10 at F1. Stored by F1's Mar 10 (the rerun of that day): reported
    again there. Stored by another date, or by another facility on that date (the contract moved,
    or arrived in the export between two windows): not again."""
    t = tables([contract("K1")], [change("X1", "K1", "thaw", D(2026, 3, 10))])
    keyed = contract_status.with_contract_key(t["contracts"])
    changes = (contract_status.applied_changes(keyed.lazy(), t["status_changes"].lazy())
               .join(t["contracts"].lazy().select("contract_id", "facility_id"), on="contract_id"))
    night = pl.DataFrame({"facility_id": ["F1"], "business_date": [D(2026, 3, 10)]})

    def again(stored_on: dt.date, stored_at: str) -> bool:
        stored = pl.DataFrame({"change_id": ["X1"], "business_date": [stored_on], "facility_id": [stored_at]})
        return contract_status.status_change_errors(changes, night.lazy(), stored.lazy()).collect().height == 1

    assert again(D(2026, 3, 10), "F1")
    assert not again(D(2026, 3, 9), "F1") and not again(D(2026, 3, 11), "F1") and not again(D(2026, 3, 10), "F0")


def test_changes_that_apply_are_never_reported():
    k = contract("K1")
    changes = [change("X1", "K1", "freeze", D(2026, 3, 2)), change("X2", "K1", "thaw", D(2026, 3, 4)),
               change("X3", "K1", "freeze", D(2026, 3, 6)), change("X4", "K1", "terminate", D(2026, 3, 8))]
    assert reported([k], changes, days(D(2026, 3, 1), D(2026, 3, 10))) == []
    assert status(k, changes, D(2026, 3, 10)) == "terminated"


# --- the cycle's view of D ----------------------------------------------------------------------------

def inputs(t: dict[str, pl.DataFrame]) -> Inputs:
    return Inputs(**{name: t.get(name, pl.DataFrame(schema=spec.dtypes)) for name, spec in TABLES.items()})


def night_statuses(contracts: list[dict], changes: list[dict], day: dt.date) -> dict[str, str]:
    night = Night(inputs(tables(contracts, changes)),
                  pl.DataFrame({"facility_id": ["F1"], "business_date": [day], "partition_key": ["k"]}))
    return dict(zip(night.contracts["contract_id"], night.contracts["status"]))


def test_night_contracts_status_is_the_status_on_d_not_the_exported_status():
    """The cycle's `Night.contracts` feeds contract_status_daily, the duplicate and payment-method
    checks and active_contracts_only: its `status` must be the status derived for D."""
    contracts = [contract("K1"), contract("K2", status="pending", start_date=D(2026, 3, 1)),
                 contract("K3", end_date=D(2026, 2, 28)), contract("K4")]
    changes = [change("X1", "K4", "freeze", D(2026, 3, 5))]
    assert night_statuses(contracts, changes, D(2026, 3, 10)) == {
        "K1": "active", "K2": "active", "K3": "concluded", "K4": "frozen"}


# --- property: the set-based rule agrees with a step-by-step replay ------------------------------------------

ALIVE = ("pending", "active", "frozen")


def replay(base: str, start: dt.date, end: dt.date | None, changes: list[dict],
           day: dt.date) -> tuple[str, set[str]]:
    """Reference model written from SPEC 1.1: walk the changes in order, one at a time.
    Returns the status on `day` and the ids of the changes up to it that did not apply."""

    def on(state: str, date: dt.date) -> str:  # what the calendar alone does by `date`
        if state == "pending" and date >= start:
            state = "active"
        if state in ALIVE and end is not None and end < date:
            state = "concluded"
        return state

    state, ignored = base, set()
    for c in sorted((c for c in changes if c["effective_date"] <= day),
                    key=lambda c: (c["effective_date"], c["requested_at"])):
        state = on(state, c["effective_date"])
        after = {"freeze": {"active": "frozen"}, "thaw": {"frozen": "active"},
                 "terminate": {s: "terminated" for s in ALIVE}}[c["kind"]].get(state)
        if after is None:
            ignored.add(c["change_id"])
        else:
            state = after
    return on(state, day), ignored


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(["pending", "active", "frozen", "terminated", "concluded"]),
       start_offset=st.integers(0, 20), end_offset=st.none() | st.integers(0, 30),
       events=st.lists(st.tuples(st.sampled_from(["freeze", "thaw", "terminate"]), st.integers(0, 30),
                                 st.integers(0, 23)), max_size=6))
def test_status_matches_a_replay_of_the_changes(base, start_offset, end_offset, events):
    origin = D(2026, 3, 1)
    start = origin + dt.timedelta(days=start_offset)
    end = None if end_offset is None else start + dt.timedelta(days=end_offset)
    k = contract("K1", status=base, start_date=start, end_date=end)
    changes = [change(f"X{i}", "K1", kind, origin + dt.timedelta(days=d), at(h, origin + dt.timedelta(days=d), i))
               for i, (kind, d, h) in enumerate(events)]
    dates = days(origin, origin + dt.timedelta(days=40))
    # K2, the same contract without changes, is off the timeline: its status is worked out from
    # its own columns, in the same call.
    got = status_by_date([k, contract("K2", status=base, start_date=start, end_date=end)], changes, dates)
    for day in dates:
        assert got[("K1", day)] == replay(base, start, end, changes, day)[0], day
        assert got[("K2", day)] == replay(base, start, end, [], day)[0], day
    # Each change that does not apply is reported exactly once, on its effective date (nightly runs).
    not_applied = reported([k], changes, dates)
    assert sorted(cid for _, cid in not_applied) == sorted(replay(base, start, end, changes, dates[-1])[1])
    for day, cid in not_applied:
        assert changes[int(cid[1:])]["effective_date"] == day
