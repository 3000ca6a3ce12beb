"""Dues posting (SPEC 1.3): periods up to D post once, catch-up, freeze fees, and the dues posting
errors that stop one contract without stopping the rest.

The rules are wired as the nightly cycle wires them (`night.Night` + `rules.dues.post_dues`), on
tiny hand-built exports; `last_posted` stands for what the ledger already holds.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_pipeline.night import Night
from billing_pipeline.inputs.contract import TABLES
from billing_pipeline.inputs.load import Inputs
from billing_pipeline.rules import dues
from tests.factories import D, card, change, contract, customer, facility, facility_days, frames, plan

ERROR_CODES = {"duplicate_contract", "unknown_plan", "unknown_customer", "unknown_facility", "negative_amount",
               "invalid_dates", "too_many_missed_periods"}


def inputs(**tables: list[dict]) -> Inputs:
    t = frames(**tables)
    return Inputs(**{name: t.get(name, pl.DataFrame(schema=spec.dtypes)) for name, spec in TABLES.items()})


def post(day: dt.date, last_posted: dict[str, dt.date] | None = None, **tables: list[dict]) -> dict[str, pl.DataFrame]:
    """One night of dues posting for every facility on `day`."""
    facility_ids = [f["facility_id"] for f in tables.get("facilities", [facility()])]
    return post_days({fid: day for fid in facility_ids}, last_posted, **tables)


def post_days(days: dict[str, dt.date], last_posted: dict[str, dt.date | tuple[dt.date, dt.date]] | None = None,
              ledger: set[tuple[str, dt.date]] | None = None, **tables: list[dict]) -> dict[str, pl.DataFrame]:
    """One batch of facility-days (facility -> its business date), as one vectorized pass.
    last_posted: contract -> its latest bill date posted, or (that date, the last day paid), or
    (those, its first period posted, the earliest series start they were posted under; else
    unknown, as in a ledger written before it was kept);
    ledger: the (contract, bill date) posted, for the rules' lookup."""
    i = inputs(**tables)
    night = Night(i, facility_days(i.facilities, days))
    rows = [(k, *(v if isinstance(v, tuple) else (v, v))) for k, v in (last_posted or {}).items()]
    last = pl.DataFrame([(*r, None, None) if len(r) == 3 else r for r in rows], orient="row",
                        schema={"contract_id": pl.String, "last_bill_date": pl.Date, "paid_through": pl.Date,
                                "first_period_date": pl.Date, "posted_from": pl.Date})
    def in_ledger(keys: pl.DataFrame) -> pl.DataFrame:
        return keys.filter([key in (ledger or set()) for key in keys.select("contract_id", "bill_date").iter_rows()])
    out = dues.post_dues(night.contracts.lazy(), last.lazy(), night.timeline.lazy(),
                         night.duplicates.lazy(), in_ledger=in_ledger)
    result = dict(zip(out, pl.collect_all(list(out.values()))))
    errors = result["dues_posting_errors"]
    assert set(errors["error_code"]) <= ERROR_CODES
    assert all(isinstance(m, str) and len(m) > 10 for m in errors["message"]), "a message a person understands"
    assert set(errors.select("facility_id", "business_date").iter_rows()) <= set(days.items())
    return result


def posted(out: dict[str, pl.DataFrame], contract_id: str | None = None) -> list[tuple]:
    """(contract_id, bill_date, kind, amount_cents) posted, sorted."""
    p = out["dues_postings"]
    if contract_id is not None:
        p = p.filter(pl.col("contract_id") == contract_id)
    return sorted(p.select("contract_id", "bill_date", "kind", "amount_cents").iter_rows())


def errors(out: dict[str, pl.DataFrame]) -> list[tuple[str, str]]:
    return sorted(out["dues_posting_errors"].select("contract_id", "error_code").unique().iter_rows())


def monthly(contract_id: str, months: list[tuple[int, int]], day: int = 1, amount: int = 5000,
            kind: str = "dues") -> list[tuple]:
    return [(contract_id, D(y, m, day), kind, amount) for y, m in months]


# --- periods and catch-up ------------------------------------------------------------------------------

def test_first_night_posts_the_period_starting_that_day():
    out = post(D(2026, 1, 1))
    assert posted(out) == [("K1", D(2026, 1, 1), "dues", 5000)]
    row = out["dues_postings"].row(0, named=True)
    assert (row["business_date"], row["facility_id"], row["customer_id"]) == (D(2026, 1, 1), "F1", "C1")


def test_nothing_posts_between_bill_dates():
    assert posted(post(D(2026, 3, 31), {"K1": D(2026, 3, 1)})) == []
    assert posted(post(D(2025, 12, 31))) == []  # before the contract's first bill date


def test_catch_up_posts_every_missed_period_once():
    out = post(D(2026, 4, 1), {"K1": D(2026, 1, 1)})
    assert posted(out) == monthly("K1", [(2026, 2), (2026, 3), (2026, 4)])
    assert set(out["dues_postings"]["business_date"]) == {D(2026, 4, 1)}


def test_catch_up_without_any_posting_starts_at_the_first_bill_date():
    assert posted(post(D(2026, 3, 15))) == monthly("K1", [(2026, 1), (2026, 2), (2026, 3)])


def test_exactly_twelve_missed_periods_still_post():
    out = post(D(2027, 1, 1), {"K1": D(2026, 1, 1)})
    assert len(posted(out)) == 12
    assert errors(out) == []


def test_more_than_twelve_missed_periods_is_an_error_and_nothing_posts():
    out = post(D(2027, 2, 1), {"K1": D(2026, 1, 1), "K2": D(2027, 1, 1)},
               customers=[customer("C1"), customer("C2")],
               contracts=[contract("K1"), contract("K2", customer_id="C2")])
    assert errors(out) == [("K1", "too_many_missed_periods")]
    assert posted(out, "K1") == []
    assert posted(out) == [("K2", D(2027, 2, 1), "dues", 5000)], "other contracts still post"
    assert "K1" not in out["due_contracts"]["contract_id"].to_list()


def test_too_many_missed_periods_repeats_until_first_bill_date_is_set_then_catches_up():
    old = dict(start_date=D(2024, 1, 1))
    for day in (D(2026, 3, 1), D(2026, 3, 2)):
        assert errors(post(day, contracts=[contract("K1", **old)])) == [("K1", "too_many_missed_periods")]
    fixed = post(D(2026, 3, 3), contracts=[contract("K1", first_bill_date=D(2026, 1, 1), **old)])
    assert errors(fixed) == []
    assert posted(fixed) == monthly("K1", [(2026, 1), (2026, 2), (2026, 3)])


def test_weekly_catch_up_counts_periods_not_days():
    out = post(D(2026, 3, 30), {"K1": D(2026, 3, 2)}, plans=[plan(frequency="weekly", schedule="facility")],
               facilities=[facility(weekly_billing_day=1)], contracts=[contract("K1", start_date=D(2026, 3, 2))])
    assert [r[1] for r in posted(out)] == [D(2026, 3, 9), D(2026, 3, 16), D(2026, 3, 23), D(2026, 3, 30)]


# --- amounts ---------------------------------------------------------------------------------------------

def test_contract_dues_override_the_plan():
    out = post(D(2026, 1, 1), customers=[customer("C1"), customer("C2")],
               contracts=[contract("K1", dues_cents=3900), contract("K2", customer_id="C2")])
    assert posted(out) == [("K1", D(2026, 1, 1), "dues", 3900), ("K2", D(2026, 1, 1), "dues", 5000)]


def test_due_contracts_list_the_amounts_too():
    out = post(D(2026, 1, 1), contracts=[contract("K1", dues_cents=3900)])
    due = out["due_contracts"].select("contract_id", "bill_date", "amount_cents").rows()
    assert due == [("K1", D(2026, 1, 1), 3900)]


# --- freezes -----------------------------------------------------------------------------------------------

FREEZE = [change("X1", "K1", "freeze", D(2026, 2, 15)), change("X2", "K1", "thaw", D(2026, 4, 10))]


def test_frozen_bill_dates_post_nothing_without_a_freeze_fee_and_no_catch_up_after_thaw():
    # K1's plan has no freeze fee, K2's a fee of 0: both frozen Feb 15 .. Apr 10.
    tables = dict(plans=[plan(freeze_fee_cents=None), plan(plan_id="ZERO", freeze_fee_cents=0)],
                  customers=[customer("C1"), customer("C2")],
                  contracts=[contract("K1"), contract("K2", customer_id="C2", plan_id="ZERO")],
                  status_changes=FREEZE + [dict(c, change_id=c["change_id"] + "b", contract_id="K2") for c in FREEZE])
    last = {"K1": D(2026, 2, 1), "K2": D(2026, 2, 1)}
    assert posted(post(D(2026, 3, 1), last, **tables)) == []
    assert posted(post(D(2026, 4, 10), last, **tables)) == [], "no catch-up on the thaw"
    assert posted(post(D(2026, 5, 1), last, **tables)) == monthly("K1", [(2026, 5)]) + monthly("K2", [(2026, 5)])


def test_frozen_bill_dates_post_the_freeze_fee_when_above_zero():
    out = post(D(2026, 5, 1), {"K1": D(2026, 2, 1)}, plans=[plan(freeze_fee_cents=700)], status_changes=FREEZE)
    assert posted(out) == [("K1", D(2026, 3, 1), "freeze_fee", 700), ("K1", D(2026, 4, 1), "freeze_fee", 700),
                           ("K1", D(2026, 5, 1), "dues", 5000)]


def test_freeze_fee_comes_from_the_plan_even_with_a_contract_dues_override():
    out = post(D(2026, 3, 1), {"K1": D(2026, 2, 1)}, plans=[plan(freeze_fee_cents=700)],
               contracts=[contract("K1", dues_cents=3900)], status_changes=FREEZE)
    assert posted(out) == [("K1", D(2026, 3, 1), "freeze_fee", 700)]


def test_freeze_effective_on_a_bill_date_holds_that_period():
    changes = [change("X1", "K1", "freeze", D(2026, 3, 1))]
    assert posted(post(D(2026, 3, 1), {"K1": D(2026, 2, 1)}, status_changes=changes)) == []


def test_thaw_effective_on_a_bill_date_bills_that_period():
    changes = [change("X1", "K1", "freeze", D(2026, 2, 15)), change("X2", "K1", "thaw", D(2026, 4, 1))]
    out = post(D(2026, 4, 1), {"K1": D(2026, 2, 1)}, status_changes=changes)
    assert posted(out) == monthly("K1", [(2026, 4)])


def test_frozen_periods_never_count_as_missed():
    # Frozen from 2025-01-15 to 2026-03-10 without a fee: 14 frozen bill dates, nothing is missed.
    changes = [change("X1", "K1", "freeze", D(2025, 1, 15)), change("X2", "K1", "thaw", D(2026, 3, 10))]
    out = post(D(2026, 4, 1), {"K1": D(2025, 1, 1)}, contracts=[contract("K1", start_date=D(2024, 1, 1))],
               status_changes=changes)
    assert errors(out) == []
    assert posted(out) == monthly("K1", [(2026, 4)])


def test_terminated_and_concluded_contracts_post_nothing_after_the_end():
    out = post(D(2026, 4, 1), {"K1": D(2026, 1, 1), "K2": D(2026, 1, 1)},
               customers=[customer("C1"), customer("C2")],
               contracts=[contract("K1", end_date=D(2026, 2, 15)), contract("K2", customer_id="C2")],
               status_changes=[change("X1", "K2", "terminate", D(2026, 3, 1))])
    assert posted(out) == [("K1", D(2026, 2, 1), "dues", 5000), ("K2", D(2026, 2, 1), "dues", 5000)]
    assert errors(out) == []


def test_pending_contract_posts_from_its_start_date():
    k = contract("K1", status="pending", start_date=D(2026, 3, 10))
    assert posted(post(D(2026, 3, 9), contracts=[k])) == []
    assert posted(post(D(2026, 3, 10), contracts=[k])) == [("K1", D(2026, 3, 10), "dues", 5000)]


def test_long_terminated_weekly_contract_is_not_an_error():
    """A weekly contract terminated years ago owes nothing: it must not turn into an error."""
    out = post(D(2026, 3, 2), {"K1": D(2018, 1, 1)}, plans=[plan(frequency="weekly", schedule="facility")],
               contracts=[contract("K1", start_date=D(2017, 1, 2))],
               status_changes=[change("X1", "K1", "terminate", D(2018, 1, 5))])
    assert errors(out) == []
    assert posted(out) == []


# --- dues posting errors ---------------------------------------------------------------------------------

GOOD = dict(contract_id="K2", customer_id="C2")


@pytest.mark.parametrize("code, tables", [
    ("unknown_plan", dict(contracts=[contract("K1", plan_id="GONE"), contract(**GOOD)])),
    ("unknown_customer", dict(contracts=[contract("K1", customer_id="C404"), contract(**GOOD)])),
    ("unknown_facility", dict(contracts=[contract("K1", facility_id="F404"), contract(**GOOD)])),
    ("negative_amount", dict(contracts=[contract("K1", dues_cents=-100), contract(**GOOD)])),
    ("negative_amount", dict(plans=[plan(), plan(plan_id="NEG", dues_cents=-5000)],
                             contracts=[contract("K1", plan_id="NEG"), contract(**GOOD)])),
    # Ends before it starts (D is still before both dates, the contract looks active).
    ("invalid_dates", dict(contracts=[contract("K1", start_date=D(2026, 4, 1), end_date=D(2026, 3, 20)),
                                      contract(**GOOD)])),
    ("duplicate_contract", dict(contracts=[contract("K1"), contract("K1b"), contract(**GOOD)])),
])
def test_each_error_code_stops_only_that_contract(code, tables):
    tables.setdefault("customers", [customer("C1"), customer("C2")])
    out = post(D(2026, 3, 1), {"K1": D(2026, 2, 1), "K1b": D(2026, 2, 1), "K2": D(2026, 2, 1)}, **tables)
    errs = out["dues_posting_errors"]
    assert (("K1", code) in errors(out)), errors(out)
    row = errs.filter((pl.col("contract_id") == "K1") & (pl.col("error_code") == code)).row(0, named=True)
    assert (row["business_date"], row["facility_id"]) == (D(2026, 3, 1), "F1")
    assert posted(out, "K1") == [] and posted(out, "K1b") == []
    assert posted(out, "K2") == [("K2", D(2026, 3, 1), "dues", 5000)], "errors never stop the rest of the run"
    assert "K2" not in errs["contract_id"].to_list()


def test_unknown_facility_is_reported_at_the_customers_home_facility():
    out = post(D(2026, 3, 1), {"K1": D(2026, 2, 1)},
               facilities=[facility(), facility(facility_id="F2", name="Other")],
               customers=[customer("C1", facility_id="F2")], contracts=[contract("K1", facility_id="F404")])
    assert out["dues_posting_errors"].select("facility_id", "contract_id", "error_code").rows() == [
        ("F2", "K1", "unknown_facility")]


@pytest.mark.parametrize("home", ["C404", "C-HOMELESS"])
def test_contract_whose_facility_and_home_both_do_not_exist_is_reported_at_the_first_facility(home):
    """Neither the contract's facility nor its customer's home facility exists: there is no
    facility to process it, so the export's first facility reports it (in its own window only)."""
    kw = dict(facilities=[facility(facility_id="F2", name="Other"), facility()],
              customers=[customer("C1"), customer("C-HOMELESS", facility_id="F-GONE")],
              contracts=[contract("K1"), contract("K404", customer_id=home, facility_id="F404")])
    out = post(D(2026, 3, 1), {"K1": D(2026, 2, 1)}, **kw)
    expected = {"C404": {"unknown_customer", "unknown_facility"}, "C-HOMELESS": {"unknown_facility"}}[home]
    rows = out["dues_posting_errors"].filter(pl.col("contract_id") == "K404")
    assert set(rows["error_code"]) == expected
    assert set(rows.select("facility_id", "business_date").iter_rows()) == {("F1", D(2026, 3, 1))}
    assert "facility F404 does not exist" in rows["message"].to_list()
    assert posted(out, "K404") == [] and posted(out, "K1") == [("K1", D(2026, 3, 1), "dues", 5000)]
    # Only F1's batch reports it: F2 alone (another Dagster window) does not.
    assert post_days({"F2": D(2026, 3, 1)}, **kw)["dues_posting_errors"].height == 0


def test_duplicate_contract_holds_every_contract_of_that_customer():
    out = post(D(2026, 3, 1), {"K1": D(2026, 2, 1), "K1b": D(2026, 2, 1), "K9": D(2026, 2, 1)},
               plans=[plan(), plan(plan_id="PT", name="Personal training", contract_type="program")],
               contracts=[contract("K1"), contract("K1b"), contract("K9", plan_id="PT")])
    assert posted(out) == []
    assert {cid for cid, code in errors(out) if code == "duplicate_contract"} >= {"K1", "K1b"}


def test_a_concluded_or_terminated_contract_for_the_same_plan_is_not_a_duplicate():
    """A renewal: the old contract ended (past end_date / terminated), a new one runs on the same plan."""
    out = post(D(2026, 3, 1), {"KOLD": D(2026, 1, 1), "KTERM": D(2026, 1, 1)},
               contracts=[contract("KOLD", start_date=D(2025, 2, 1), end_date=D(2026, 1, 31)),
                          contract("KTERM", start_date=D(2025, 2, 1)),
                          contract("KNEW", start_date=D(2026, 2, 1))],
               status_changes=[change("X1", "KTERM", "terminate", D(2026, 1, 20))])
    assert errors(out) == []
    assert posted(out) == monthly("KNEW", [(2026, 2), (2026, 3)])


def test_invalid_dates_is_reported_every_night_until_corrected_then_catches_up():
    """end_date before start_date is a dues posting error that repeats until the data is fixed."""
    bad = contract("K1", start_date=D(2026, 1, 1), end_date=D(2025, 12, 31))
    for day in (D(2026, 3, 1), D(2026, 3, 2)):
        out = post(day, {"K1": D(2026, 1, 1)}, contracts=[bad])
        assert errors(out) == [("K1", "invalid_dates")]
        assert posted(out) == []
    fixed = post(D(2026, 3, 3), {"K1": D(2026, 1, 1)}, contracts=[dict(bad, end_date=D(2026, 12, 31))])
    assert errors(fixed) == []
    assert posted(fixed) == monthly("K1", [(2026, 2), (2026, 3)])


def test_error_repeats_each_night_until_corrected_then_missed_periods_catch_up():
    bad = dict(contracts=[contract("K1", plan_id="GONE")])
    for day in (D(2026, 2, 2), D(2026, 3, 1)):
        out = post(day, {"K1": D(2026, 1, 1)}, **bad)
        assert errors(out) == [("K1", "unknown_plan")]
        assert posted(out) == []
    fixed = post(D(2026, 3, 2), {"K1": D(2026, 1, 1)})
    assert errors(fixed) == []
    assert posted(fixed) == monthly("K1", [(2026, 2), (2026, 3)])


def test_duplicate_contract_still_lists_the_due_contracts():
    """Held dues are 'due before holds' (due_contracts), but not posted."""
    out = post(D(2026, 3, 1), {"K1": D(2026, 2, 1), "K1b": D(2026, 2, 1)},
               contracts=[contract("K1"), contract("K1b")])
    assert sorted(out["due_contracts"]["contract_id"]) == ["K1", "K1b"]
    assert posted(out) == []


# --- property: nightly runs post what one catch-up run posts, and never twice ------------------------------

STEP_CAP = {"weekly": 55, "biweekly": 120, "monthly": 290, "quarterly": 900, "yearly": 3000}
ORIGIN = D(2026, 1, 5)


@st.composite
def scenario(draw, s: int) -> tuple[dict[str, list[dict]], list[dt.date]]:
    """One facility F{s} with a few contracts, and the sorted dates its nightly runs happen on."""
    n = draw(st.integers(1, 3))
    t: dict[str, list[dict]] = {"plans": [], "contracts": [], "customers": [], "status_changes": [],
                                "payment_methods": []}
    t["facilities"] = [facility(facility_id=f"F{s}", weekly_billing_day=draw(st.integers(1, 7)),
                                monthly_billing_day=draw(st.integers(1, 31)))]
    for i in range(n):
        cid, kid, pid = f"C{s}.{i}", f"K{s}.{i}", f"P{s}.{i}"
        t["plans"].append(plan(plan_id=pid, frequency=draw(st.sampled_from(list(STEP_CAP))),
                               schedule=draw(st.sampled_from(["facility", "contract"])),
                               freeze_fee_cents=draw(st.sampled_from([None, 0, 700]))))
        start = ORIGIN + dt.timedelta(days=draw(st.integers(0, 20)))
        fbd = draw(st.none() | st.integers(-5, 20).map(lambda d, s0=start: s0 + dt.timedelta(days=d)))
        t["contracts"].append(contract(kid, customer_id=cid, facility_id=f"F{s}", plan_id=pid, start_date=start,
                                       first_bill_date=fbd,
                                       status=draw(st.sampled_from(["active", "pending", "frozen"]))))
        t["customers"].append(customer(cid, facility_id=f"F{s}"))
        t["payment_methods"].append(card(cid))
        for j in range(draw(st.integers(0, 3))):
            eff = ORIGIN + dt.timedelta(days=draw(st.integers(0, 400)))
            t["status_changes"].append(change(f"X{s}.{i}.{j}", kid, draw(st.sampled_from(["freeze", "thaw", "terminate"])),
                                              eff, dt.datetime.combine(eff, dt.time(draw(st.integers(0, 23))))))
    span = draw(st.integers(0, min(STEP_CAP[p["frequency"]] for p in t["plans"])))
    offsets = draw(st.lists(st.integers(0, span), max_size=2, unique=True))
    nights = sorted({ORIGIN + dt.timedelta(days=o) for o in offsets} | {ORIGIN + dt.timedelta(days=span)})
    return t, nights


@st.composite
def scenarios(draw) -> tuple[dict[str, list[dict]], dict[str, list[dt.date]]]:
    """Several independent facilities, each with its own nights: one batch per round of nights."""
    tables: dict[str, list[dict]] = {}
    nights: dict[str, list[dt.date]] = {}
    for s in range(draw(st.integers(2, 10))):
        t, n = draw(scenario(s))
        for name, rows in t.items():
            tables.setdefault(name, []).extend(rows)
        nights[f"F{s}"] = n
    return tables, nights


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario=scenarios())
def test_nightly_runs_post_the_same_periods_as_one_catch_up_run_and_never_twice(scenario):
    """Splitting a date range into nightly runs (each fed what the earlier ones posted, as the
    ledger does) posts each (contract, bill date) at most once, and the same set as one run on
    the last date. Nights may be missed in between."""
    tables, nights = scenario
    last_posted: dict[str, tuple[dt.date, dt.date]] = {}
    nightly: list[tuple] = []
    for k in range(max(len(n) for n in nights.values())):
        days = {fid: n[k] for fid, n in nights.items() if k < len(n)}
        out = post_days(days, dict(last_posted), **tables)
        assert errors(out) == [], (days, errors(out))
        for row in out["dues_postings"].iter_rows(named=True):
            cid, bill_date = row["contract_id"], row["bill_date"]
            assert bill_date <= row["business_date"] == days[row["facility_id"]]
            # an unedited schedule: each period starts the day after the paid time
            assert cid not in last_posted or bill_date > last_posted[cid][1]
            nightly.append((cid, bill_date, row["kind"], row["amount_cents"]))
            last_posted[cid] = max((bill_date, row["period_end"]), last_posted.get(cid, (bill_date, bill_date)))
    keys = [(cid, b) for cid, b, _, _ in nightly]
    assert len(keys) == len(set(keys)), "a period posted twice"
    once = post_days({fid: n[-1] for fid, n in nights.items()}, {}, **tables)
    assert errors(once) == []
    assert sorted(nightly) == posted(once)


@st.composite
def edited(draw) -> tuple[dict[str, list[dict]], dict[str, list[dict]], dict[str, list[dt.date]], int]:
    """A scenario, the same export with schedules edited (start date, first bill date, the plan's
    frequency, the facility's billing days), and the round of nights from which the edit applies."""
    tables, nights = draw(scenarios())
    after = {name: [dict(r) for r in rows] for name, rows in tables.items()}
    for c in after["contracts"]:
        if draw(st.booleans()):
            c["start_date"] += dt.timedelta(days=draw(st.integers(-20, 20)))
        if draw(st.booleans()):
            c["first_bill_date"] = draw(st.none() | st.integers(-20, 30).map(
                lambda d, s0=c["start_date"]: s0 + dt.timedelta(days=d)))
    for p in after["plans"]:
        if draw(st.booleans()):
            p["frequency"] = draw(st.sampled_from(list(STEP_CAP)))
    for f in after["facilities"]:
        if draw(st.booleans()):
            f["weekly_billing_day"], f["monthly_billing_day"] = draw(st.integers(1, 7)), draw(st.integers(1, 31))
    return tables, after, nights, draw(st.integers(1, max(len(n) for n in nights.values())))


def length(start: dt.date, end: dt.date) -> int:
    return (end - start).days + 1


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=edited())
def test_after_a_schedule_edit_no_period_posts_that_is_half_paid_already(case):
    """Nights before the edit, then nights after it, each fed what the earlier ones posted (the
    latest bill date and the latest end, as contract_periods keeps them, and the ledger's lookup):
    a period posts only when less than half of its days are paid by the periods posted before it,
    and none posts twice."""
    before, after, nights, edit_round = case
    last_posted: dict[str, tuple[dt.date, dt.date]] = {}
    paid_days: dict[str, set[dt.date]] = {}
    posted_keys: set[tuple[str, dt.date]] = set()
    for k in range(max(len(n) for n in nights.values())):
        days = {fid: n[k] for fid, n in nights.items() if k < len(n)}
        out = post_days(days, dict(last_posted), set(posted_keys), **(before if k < edit_round else after))
        accepted: list[tuple[str, dt.date, dt.date]] = []
        for row in out["dues_postings"].iter_rows(named=True):
            cid, start, end = row["contract_id"], row["bill_date"], row["period_end"]
            assert start <= days[row["facility_id"]] and start <= end
            assert (cid, start) not in posted_keys, ("a period posted twice", cid, start)
            own = {start + dt.timedelta(days=i) for i in range(length(start, end))}
            assert 2 * len(own & paid_days.get(cid, set())) < len(own), (cid, start, end, last_posted.get(cid))
            posted_keys.add((cid, start))
            paid_days.setdefault(cid, set()).update(own)
            accepted.append((cid, start, end))
        for cid, start, end in accepted:
            last_bill, paid = last_posted.get(cid, (start, end))
            last_posted[cid] = (max(last_bill, start), max(paid, end))


def test_customer_with_an_unknown_home_facility_is_an_error_not_a_silent_posting():
    out = post(D(2026, 3, 1), customers=[customer("C1", facility_id="F-GONE")])
    assert out["dues_postings"].height == 0
    errors = out["dues_posting_errors"].select("contract_id", "error_code", "message").rows()
    assert errors == [("K1", "unknown_facility", "customer C1's home facility F-GONE does not exist: "
                                                 "they could not be billed")]


@pytest.mark.parametrize("posted, computed, stands_in", [
    # (bill date, period end) of the periods posted and of the one computed by the rerun
    ([(D(2026, 1, 10), D(2026, 2, 9))], (D(2026, 1, 8), D(2026, 2, 7)), True),     # an edited series beside it
    ([(D(2026, 1, 10), D(2026, 2, 9))], (D(2026, 1, 25), D(2026, 2, 24)), True),   # 16 of 31 days paid
    ([(D(2026, 1, 10), D(2026, 2, 9))], (D(2026, 1, 26), D(2026, 2, 25)), False),  # 15 of 31: mostly unpaid
    ([(D(2026, 1, 10), D(2026, 2, 9))], (D(2026, 2, 8), D(2026, 3, 7)), False),    # 2 of 28 days paid
    ([(D(2026, 1, 10), D(2026, 2, 9))], (D(2025, 12, 10), D(2026, 1, 9)), False),  # ends the day before it
    ([(D(2026, 1, 10), D(2026, 2, 9))], (D(2026, 1, 10), D(2026, 2, 9)), False),   # the posted period itself
    ([(D(2026, 1, 10), D(2026, 2, 9))], (D(2026, 1, 17), D(2026, 1, 23)), True),   # monthly to weekly: inside it
    ([(D(2026, 1, 10), D(2026, 2, 9))], (D(2026, 2, 7), D(2026, 2, 13)), False),   # 3 of 7 days paid
    ([(D(2026, 1, 10), D(2026, 2, 9))], (D(2026, 2, 6), D(2026, 2, 12)), True),    # 4 of 7
    ([(D(2026, 1, 10), D(2026, 1, 16))], (D(2026, 1, 1), D(2026, 1, 31)), False),  # weekly to monthly: 7 of 31
    # several posted periods pay it together (the weeks of a month, or two months around it)
    ([(D(2026, 1, 5) + dt.timedelta(weeks=k), D(2026, 1, 11) + dt.timedelta(weeks=k)) for k in range(5)],
     (D(2026, 1, 1), D(2026, 1, 31)), True),
    ([(D(2026, 1, 1), D(2026, 1, 31)), (D(2026, 2, 1), D(2026, 2, 28))], (D(2026, 1, 20), D(2026, 2, 19)), True),
    # two posted weeks that overlap (an edit between them): their 11 days count once, of 28
    ([(D(2026, 2, 10), D(2026, 2, 16)), (D(2026, 2, 14), D(2026, 2, 20))], (D(2026, 2, 1), D(2026, 2, 28)), False),
    ([(D(2024, 2, 29), D(2025, 2, 27))], (D(2025, 2, 27), D(2026, 2, 26)), False),  # yearly, 1 day of 365
    ([(D(2024, 2, 29), D(2025, 2, 27))], (D(2024, 2, 27), D(2025, 2, 26)), True),
    ([(D(2026, 2, 28), D(2026, 3, 30))], (D(2026, 1, 31), D(2026, 2, 27)), False),  # anchor 31, a month before
    # no end (a ledger written before periods had one): taken to end a step (a month) later
    ([(D(2026, 2, 28), None)], (D(2026, 3, 1), D(2026, 3, 31)), True),
    ([(D(2026, 2, 28), None)], (D(2026, 3, 20), D(2026, 4, 19)), False),
])
def test_a_rerun_period_mostly_paid_by_the_periods_posted_stands_in_for_them(posted, computed, stands_in):
    keys = {"contract_id": "K1", "business_date": D(2026, 3, 1)}
    got = dues.stand_ins(pl.LazyFrame([{**keys, "bill_date": computed[0], "period_end": computed[1]}]),
                         pl.LazyFrame([{**keys, "posted_bill_date": p, "posted_period_end": end} for p, end in posted],
                                      schema={"contract_id": pl.String, "business_date": pl.Date,
                                              "posted_bill_date": pl.Date, "posted_period_end": pl.Date}),
                         pl.LazyFrame([{**keys, "frequency": "monthly"}])).collect()
    assert (got.height == 1) is stands_in, got
