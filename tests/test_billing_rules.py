"""Billable customers (SPEC 1.4), holds and blocks (1.6), surcharges and money (1.5), balance due now."""

from __future__ import annotations

import calendar
import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_pipeline import cycle
from billing_pipeline.cycle import CycleSettings
from billing_pipeline.inputs.contract import TABLES
from billing_pipeline.inputs.load import Inputs
from billing_pipeline.night import Night
from billing_pipeline.rules import billable as rules
from billing_pipeline.rules import prebilling
from billing_pipeline.rules.balance import balance_due_now
from billing_pipeline.rules.money import percent_of
from tests.factories import D, card, change, contract, customer, facility, facility_days, frames, plan

DAY = D(2026, 4, 15)
KEYS = {"customer_id": pl.String, "business_date": pl.Date}


def customer_days(day: dt.date, customer_ids: list[str], sweep_from: dt.date | None = None,
                  **settings_) -> pl.DataFrame:
    """As the cycle builds them: customers of the facility-day with the facility's billing settings
    (`sweep_from`: the first date whose fixed sweep day the billing makes up for; None: D alone)."""
    fac = pl.DataFrame([facility(**settings_)], schema=TABLES["facilities"].dtypes)
    cust = pl.DataFrame([customer(c) for c in customer_ids], schema=TABLES["customers"].dtypes)
    days = pl.DataFrame({"facility_id": ["F1"], "business_date": [day], "run_at": [None], "sweep_from": [sweep_from]},
                        schema={"facility_id": pl.String, "business_date": pl.Date,
                                "run_at": pl.Datetime("us", "UTC"), "sweep_from": pl.Date})
    settings = rules.facility_day_settings(days.lazy(), fac.lazy())
    return cust.lazy().select("customer_id", "facility_id").join(settings, on="facility_id").collect()


def billable(day: dt.date = DAY, *, balance: dict[str, int], due: dict[str, tuple[int, int]] | None = None,
             last: dict[str, tuple[dt.date, str]] | None = None, qualifying: set[str] | None = None,
             sweep_from: dt.date | None = None, **settings_) -> dict[str, tuple[list[str], int]]:
    """customer -> (reasons, balance_cents) of those who would be billed on `day` before holds."""
    ids = sorted(balance)
    days = customer_days(day, ids, sweep_from, **settings_)
    balances = pl.DataFrame({"customer_id": ids, "business_date": [day] * len(ids),
                             "balance_cents": [balance[c] for c in ids]}, schema={**KEYS, "balance_cents": pl.Int64})
    due = due or {}
    due_frame = pl.DataFrame([(c, day, d, p) for c, (d, p) in due.items()], orient="row",
                             schema={**KEYS, "due_cents": pl.Int64, "posted_cents": pl.Int64})
    last = last or {}
    # The latest attempt before D; it is also the latest time the customer was billed.
    last_frame = pl.DataFrame([(c, d, o, d) for c, (d, o) in last.items()], orient="row",
                              schema={"customer_id": pl.String, "last_attempt_date": pl.Date, "last_outcome": pl.String,
                                      "last_billed_date": pl.Date})
    # A row per qualifying contract, as the cycle passes them: two each.
    qual = pl.DataFrame([(c, day) for c in sorted(qualifying or set()) for _ in range(2)], orient="row", schema=KEYS)
    candidates = rules.with_reasons(days.lazy(), due_frame.lazy(), last_frame.lazy(), qual.lazy())
    out = rules.with_balance(candidates, balances.lazy()).collect()
    assert out["customer_id"].n_unique() == out.height, "at most one row (one attempt) per customer and day"
    return {r["customer_id"]: (sorted(r["reasons"]), r["balance_cents"]) for r in out.iter_rows(named=True)}


def reasons(**kw) -> list[str] | None:
    got = billable(**kw)
    return got["C1"][0] if "C1" in got else None


# --- reasons --------------------------------------------------------------------------------------------

def test_dues_posted_bills_the_whole_balance():
    assert billable(balance={"C1": 7500, "C2": 900}, due={"C1": (5000, 5000)}) == {"C1": (["dues_posted"], 7500)}


def test_dues_posted_but_nothing_due_now_is_not_billed():
    # A prepayment covered the dues: balance due now is 0.
    assert billable(balance={"C1": 0}, due={"C1": (5000, 5000)}) == {}


@pytest.mark.parametrize("outcome, days_ago, after_days, expected", [
    ("declined", 3, 3, True),
    ("declined", 2, 3, False),
    ("declined", 5, 3, True),   # a missed night does not lose the retry
    ("declined", 40, 3, True),
    ("error", 3, 3, True),      # a gateway error is retried like a decline
    ("approved", 10, 3, False),
    ("declined", 10, None, False),  # the facility does not retry
    ("declined", 1, 1, True),
])
def test_retry_after_a_decline_or_gateway_error(outcome, days_ago, after_days, expected):
    got = reasons(balance={"C1": 2500}, last={"C1": (DAY - dt.timedelta(days=days_ago), outcome)},
                  retry_declined_after_days=after_days)
    assert (got == ["retry"]) is expected, got


@pytest.mark.parametrize("day, sweep_days, expected", [
    (D(2026, 4, 30), "15;31", True),   # 31 means the last day of a 30-day month
    (D(2026, 4, 29), "15;31", False),
    (D(2026, 4, 15), "15;31", True),
    (D(2026, 3, 31), "15;31", True),
    (D(2026, 3, 30), "15;31", False),
    (D(2026, 2, 28), "15;31", True),
    (D(2028, 2, 28), "15;31", False),  # leap year: the last day is the 29th
    (D(2028, 2, 29), "15;31", True),
    (D(2026, 2, 28), "30", True),
    (D(2026, 4, 30), "1;15", False),
    (D(2026, 4, 1), "1;15", True),
    (D(2026, 4, 30), "30;31", True),
])
def test_sweep_fixed_on_listed_days_with_past_month_end_meaning_last_day(day, sweep_days, expected):
    got = reasons(day=day, balance={"C1": 1200}, sweep_mode="fixed", fixed_sweep_days=sweep_days)
    assert (got == ["sweep_fixed"]) is expected, got


def test_sweep_fixed_needs_sweep_mode_fixed():
    for mode in ("off", "rolling"):
        assert "sweep_fixed" not in (reasons(day=D(2026, 4, 15), balance={"C1": 1200}, sweep_mode=mode,
                                             fixed_sweep_days="15", rolling_sweep_days=30) or [])


@pytest.mark.parametrize("day, sweep_from, sweep_days, expected", [
    (D(2026, 4, 16), D(2026, 4, 15), "15", True),    # the 15th did not bill: the 16th sweeps
    (D(2026, 4, 16), D(2026, 4, 16), "15", False),   # the 15th billed, and swept
    (D(2026, 4, 16), None, "15", False),             # D alone
    (D(2026, 4, 15), D(2026, 4, 15), "15", True),    # D itself, as every night
    (D(2026, 5, 1), D(2026, 4, 30), "31", True),     # the 30th (31 in a 30-day month) did not bill
    (D(2026, 5, 2), D(2026, 5, 1), "31", False),
    (D(2026, 4, 20), D(2026, 3, 21), "1", True),     # a month without billing: the 1st was missed
    (D(2026, 4, 20), D(2025, 1, 1), "1", True),      # over a year: as over its last 62 days
])
def test_sweep_fixed_missed_since_the_last_billing_is_swept_by_the_next(day, sweep_from, sweep_days, expected):
    got = reasons(day=day, sweep_from=sweep_from, balance={"C1": 1200}, sweep_mode="fixed",
                  fixed_sweep_days=sweep_days)
    assert (got == ["sweep_fixed"]) is expected, got


def python_sweep_day(d: dt.date, sweep_days: list[int]) -> bool:
    last = calendar.monthrange(d.year, d.month)[1]
    return any(min(s, last) == d.day for s in sweep_days)


@settings(max_examples=150, deadline=None)
@given(days=st.lists(st.tuples(st.dates(D(2024, 1, 1), D(2029, 12, 31)), st.none() | st.integers(0, 400),
                               st.lists(st.integers(1, 31), min_size=1, max_size=4)), min_size=1, max_size=20))
def test_fixed_sweep_today_is_a_sweep_day_since_sweep_from(days):
    """Against plain Python over every date: a day past the month's end means its last day; every
    date from sweep_from up to D counts (D alone without one), and the latest of them is the
    sweep day that `sweep_candidates` names."""
    rows = [dict(facility_id=f"F{i}", business_date=d, run_at=None,
                 sweep_from=d - dt.timedelta(days=back) if back is not None else None,
                 fixed_sweep_days=";".join(map(str, s))) for i, (d, back, s) in enumerate(days)]
    fac = pl.DataFrame([facility(facility_id=r["facility_id"], sweep_mode="fixed", fixed_sweep_days=r["fixed_sweep_days"])
                        for r in rows], schema=TABLES["facilities"].dtypes)
    frame = pl.DataFrame(rows, schema_overrides={"sweep_from": pl.Date, "run_at": pl.Datetime("us", "UTC")})
    got = {f: (today, day) for f, today, day in rules.facility_day_settings(frame.lazy(), fac.lazy())
           .select("facility_id", "fixed_sweep_today", "fixed_sweep_day").collect().iter_rows()}
    for (d, back, s), r in zip(days, rows):
        since = d - dt.timedelta(days=back) if back is not None else d
        span = [since + dt.timedelta(days=k) for k in range((d - since).days + 1)]
        swept = [x for x in span if python_sweep_day(x, s)]
        assert got[r["facility_id"]] == (bool(swept), max(swept, default=None)), (d, back, s)


def test_sweep_candidates_name_the_sweep_day_they_are_for():
    """A row per sweep reason; a fixed sweep made up on the 16th names the 15th, a rolling one D."""
    billable = pl.DataFrame({"business_date": [D(2026, 4, 16)] * 3, "facility_id": ["F1", "F1", "F2"],
                             "customer_id": ["C1", "C2", "C3"], "balance_cents": [100, 200, 300],
                             "reasons": [["sweep_fixed", "sweep_rolling"], ["dues_posted"], ["sweep_rolling"]]})
    settings = pl.DataFrame({"facility_id": ["F1", "F2"], "business_date": [D(2026, 4, 16)] * 2,
                             "fixed_sweep_day": [D(2026, 4, 15), None]})
    got = rules.sweep_candidates(billable.lazy(), settings.lazy()).select("customer_id", "reason", "sweep_day").collect()
    assert sorted(got.iter_rows()) == [("C1", "sweep_fixed", D(2026, 4, 15)), ("C1", "sweep_rolling", D(2026, 4, 16)),
                                       ("C3", "sweep_rolling", D(2026, 4, 16))]


@pytest.mark.parametrize("last, rolling_days, expected", [
    (None, 10, True),                         # never billed
    ((DAY - dt.timedelta(days=10), "approved"), 10, True),
    ((DAY - dt.timedelta(days=9), "approved"), 10, False),
    ((DAY - dt.timedelta(days=25), "declined"), 10, True),
])
def test_sweep_rolling(last, rolling_days, expected):
    got = reasons(balance={"C1": 1200}, last={"C1": last} if last else None, sweep_mode="rolling",
                  rolling_sweep_days=rolling_days)
    assert ("sweep_rolling" in (got or [])) is expected, got


def test_sweep_rolling_needs_sweep_mode_rolling():
    assert reasons(balance={"C1": 1200}, sweep_mode="off", rolling_sweep_days=10) is None
    assert reasons(balance={"C1": 1200}, sweep_mode="fixed", fixed_sweep_days="1", rolling_sweep_days=10) is None


@pytest.mark.parametrize("balance", [0, -500])
def test_balance_due_now_must_be_above_zero_for_every_reason(balance):
    got = billable(day=D(2026, 4, 30), balance={"C1": balance}, due={"C1": (5000, 5000)},
                   last={"C1": (D(2026, 4, 1), "declined")}, retry_declined_after_days=3,
                   sweep_mode="fixed", fixed_sweep_days="31")
    assert got == {}


def test_every_reason_that_applies_is_listed_once():
    got = billable(day=D(2026, 4, 30), balance={"C1": 6000}, due={"C1": (5000, 5000)},
                   last={"C1": (D(2026, 4, 20), "declined")}, retry_declined_after_days=3,
                   sweep_mode="fixed", fixed_sweep_days="15;31")
    assert got == {"C1": (["dues_posted", "retry", "sweep_fixed"], 6000)}


def test_held_dues_still_make_the_customer_billable_before_holds():
    """A duplicate-contract hold stops the posting; the customer is still listed (then held)."""
    got = billable(balance={"C1": 0}, due={"C1": (5000, 0)})
    assert list(got) == ["C1"] and got["C1"][0] == ["dues_posted"]


def test_active_contracts_only_applies_to_every_reason():
    kw = dict(day=D(2026, 4, 30), balance={"C1": 1000, "C2": 1000, "C3": 1000}, due={"C2": (500, 500)},
              last={"C3": (D(2026, 4, 1), "declined")}, retry_declined_after_days=3,
              sweep_mode="fixed", fixed_sweep_days="31")
    assert sorted(billable(**kw)) == ["C1", "C2", "C3"]
    assert sorted(billable(**kw, active_contracts_only=True, qualifying={"C2"})) == ["C2"]
    assert sorted(billable(**kw, active_contracts_only=True, qualifying=set())) == []


# --- usable payment methods and holds --------------------------------------------------------------------------

def usable(methods: list[dict], day: dt.date = DAY, every_customer: bool = False) -> dict[str, str]:
    """C1's usable method: asked for C1's customer-day, or worked out for every customer on D."""
    pm = pl.DataFrame(methods, schema=TABLES["payment_methods"].dtypes)
    keys = pl.DataFrame({"customer_id": ["C1"], "business_date": [day]})
    if every_customer:
        out = prebilling.usable_payment_methods_on(pm.lazy(), day).collect().join(keys, on=list(keys.columns))
    else:
        out = prebilling.usable_payment_methods(pm.lazy(), keys.lazy()).collect()
    return dict(zip(out["customer_id"], out["payment_method_id"]))


@pytest.mark.parametrize("methods, expected", [
    ([card("C1")], {"C1": "PM-C1"}),
    ([card("C1", removed=True)], {}),
    ([card("C1", expires_on=DAY - dt.timedelta(days=1))], {}),
    ([card("C1", expires_on=DAY)], {"C1": "PM-C1"}),  # D on or before expires_on
    ([card("C1", expires_on=None)], {"C1": "PM-C1"}),
    ([card("C1", is_default=False)], {}),             # only the default one is used
    ([card("C1", is_default=False), card("C1", payment_method_id="PM-2", kind="ach")], {"C1": "PM-2"}),
    ([card("C1", removed=True), card("C1", payment_method_id="PM-2", is_default=False)], {}),
    # several usable defaults (a data slip): the highest id; an expired or removed one does not count
    ([card("C1", payment_method_id="PM-3"), card("C1", payment_method_id="PM-2")], {"C1": "PM-3"}),
    ([card("C1", payment_method_id="PM-3", expires_on=DAY - dt.timedelta(days=1)),
      card("C1", payment_method_id="PM-2")], {"C1": "PM-2"}),
    ([card("C1", payment_method_id="PM-3", removed=True), card("C1", payment_method_id="PM-2"),
      card("C1", payment_method_id="PM-1")], {"C1": "PM-2"}),
    # other customers' methods around C1's: sorted by customer, and not
    ([card("C0"), card("C1", payment_method_id="PM-3"), card("C1", payment_method_id="PM-2"), card("C2")],
     {"C1": "PM-3"}),
    ([card("C2"), card("C1", payment_method_id="PM-2"), card("C0"), card("C1", payment_method_id="PM-3")],
     {"C1": "PM-3"}),
    ([card("C2"), card("C1", payment_method_id="PM-2"), card("C2", payment_method_id="PM-9")], {"C1": "PM-2"}),
])
@pytest.mark.parametrize("every_customer", [False, True])
def test_usable_payment_method_is_the_default_not_removed_and_not_expired(methods, expected, every_customer):
    assert usable(methods, every_customer=every_customer) == expected


def hold_of(*, dup: bool = False, method: bool = True, blocked: bool = False, balance: int = 5000) -> str | None:
    base = pl.DataFrame({"business_date": [DAY], "facility_id": ["F1"], "customer_id": ["C1"],
                         "reasons": [["dues_posted"]], "balance_cents": [balance]})
    dups = pl.DataFrame({"business_date": [DAY] * dup, "customer_id": ["C1"] * dup},
                        schema={"business_date": pl.Date, "customer_id": pl.String})
    methods = pl.DataFrame({"customer_id": ["C1"] * method, "business_date": [DAY] * method,
                            "payment_method_id": ["PM-C1"] * method, "payment_kind": ["card"] * method,
                            "token": ["tok"] * method},
                           schema={**KEYS, "payment_method_id": pl.String, "payment_kind": pl.String, "token": pl.String})
    blocks = pl.DataFrame({"facility_id": ["F1"], "business_date": [DAY], "blocked": [blocked]})
    out = rules.apply_holds(base.lazy(), dups.lazy(), methods.lazy(), blocks.lazy()).collect()
    assert out.height == 1
    return out["hold_reason"][0]


def test_holds():
    assert hold_of() is None
    assert hold_of(dup=True) == "duplicate_contract"
    assert hold_of(method=False) == "no_payment_method"
    assert hold_of(blocked=True) == "billing_blocked"
    # Billable before holds only by dues held as duplicates (on another date): nothing posted is owed.
    assert hold_of(balance=0) == hold_of(balance=-3000) == "duplicate_contract"
    assert hold_of(balance=1) is None


# --- the billing block ----------------------------------------------------------------------------------------

def blocks(per_facility: dict[str, tuple], share: float = prebilling.DEFAULT_BLOCK_SHARE) -> dict[str, bool]:
    """facility -> (partition_key, candidates, flagged among them[, business date]) ==> facility -> blocked."""
    cand, flagged, days = [], [], []
    for fid, (key, n, f, *day) in per_facility.items():
        day = day[0] if day else DAY
        ids = [f"{fid}-C{i}" for i in range(n)]
        cand += [(day, fid, c) for c in ids]
        flagged += [(day, c) for c in ids[:f]]
        days.append((day, fid, key))
    cand_f = pl.DataFrame(cand, orient="row", schema={"business_date": pl.Date, "facility_id": pl.String,
                                                      "customer_id": pl.String})
    flag_f = pl.DataFrame(flagged, orient="row", schema={"business_date": pl.Date, "customer_id": pl.String})
    days_f = pl.DataFrame(days, orient="row", schema={"business_date": pl.Date, "facility_id": pl.String,
                                                      "partition_key": pl.String})
    out = prebilling.billing_blocks(cand_f.lazy(), flag_f.lazy(), days_f.lazy(), share).collect()
    return dict(zip(out["facility_id"], out["blocked"]))


def test_default_block_share_is_two_percent():
    assert prebilling.DEFAULT_BLOCK_SHARE == 0.02


def test_block_only_when_flagged_share_exceeds_the_limit():
    assert blocks({"F1": ("W", 50, 1)}) == {"F1": False}   # exactly 2%: does not exceed
    assert blocks({"F1": ("W", 50, 2)}) == {"F1": True}    # 4%
    assert blocks({"F1": ("W", 10, 1)}, share=0.2) == {"F1": False}
    assert blocks({"F1": ("W", 10, 3)}, share=0.2) == {"F1": True}


def test_block_share_is_over_the_whole_window():
    # F1 alone would be blocked (1 of 2), but its window also holds F2's 98 clean customers: 1%.
    assert blocks({"F1": ("W1", 2, 1), "F2": ("W1", 98, 0), "F3": ("W2", 2, 1)}) == {
        "F1": False, "F2": False, "F3": True}
    # And a bad facility blocks its whole window.
    assert blocks({"F1": ("W1", 10, 5), "F2": ("W1", 10, 0)}) == {"F1": True, "F2": True}


def test_block_share_is_per_business_date_of_the_window():
    """A window can hold two business dates (03:00 at UTC+14 and at UTC-10 fall in the same UTC
    hour, a day apart). The share is that day's, as SPEC 1.6 says, so `run --date` (one date at a
    time) and the Dagster window decide alike: F9's bad day does not block F1's clean one."""
    next_day = DAY + dt.timedelta(days=1)
    assert blocks({"F1": ("W1", 100, 0), "F9": ("W1", 10, 5, next_day)}) == {"F1": False, "F9": True}
    assert blocks({"F1": ("W1", 100, 0), "F9": ("W1", 10, 5)}) == {"F1": True, "F9": True}  # same day: 4.5%


def test_no_one_to_bill_means_no_block():
    assert blocks({"F1": ("W", 0, 0), "F2": ("W", 0, 0)}) == {"F1": False, "F2": False}


# --- charges and surcharges -------------------------------------------------------------------------------------

def requests(rows: list[dict]) -> dict[str, tuple[int, int]]:
    held = pl.DataFrame(rows, schema={"business_date": pl.Date, "facility_id": pl.String, "customer_id": pl.String,
                                      "payment_method_id": pl.String, "payment_kind": pl.String, "token": pl.String,
                                      "balance_cents": pl.Int64, "hold_reason": pl.String,
                                      "surcharge_enabled": pl.Boolean, "surcharge_percent": pl.Float64,
                                      "surcharge_product_id": pl.String})
    out = rules.charge_requests(held.lazy()).collect()
    assert out["idempotency_key"].n_unique() == out.height
    return {r["customer_id"]: (r["amount_cents"], r["surcharge_cents"]) for r in out.iter_rows(named=True)}


def req(customer_id: str, balance: int, kind: str = "card", enabled: bool = True, percent: float | None = 3.0,
        hold: str | None = None) -> dict:
    return dict(business_date=DAY, facility_id="F1", customer_id=customer_id, payment_method_id=f"PM-{customer_id}",
                payment_kind=kind, token="tok", balance_cents=balance, hold_reason=hold, surcharge_enabled=enabled,
                surcharge_percent=percent, surcharge_product_id="SUR")


def test_surcharge_only_for_cards_with_surcharge_enabled():
    got = requests([req("C1", 10_000), req("C2", 10_000, kind="ach"), req("C3", 10_000, enabled=False),
                    req("C4", 10_000, hold="no_payment_method")])
    assert got == {"C1": (10_000, 300), "C2": (10_000, 0), "C3": (10_000, 0)}


@pytest.mark.parametrize("balance, percent, expected", [
    (1050, 3.0, 32),     # 31.5 -> 32
    (1049, 3.0, 31),     # 31.47 -> 31
    (150, 3.5, 5),       # 5.25 -> 5
    (1, 50.0, 1),        # 0.5 -> 1
    (3, 50.0, 2),        # 1.5 -> 2
    (12345, 2.75, 339),  # 339.4875 -> 339
    (20, 2.5, 1),        # 0.5 -> 1
    (999, 0.0, 0),
])
def test_surcharge_is_rounded_half_away_from_zero(balance, percent, expected):
    assert requests([req("C1", balance, percent=percent)]) == {"C1": (balance, expected)}


def expected_percent(amount: int, basis: int) -> int:
    """`basis` ten-thousandths of a percent of `amount` cents, ROUND_HALF_UP (= half away from zero)."""
    return int((Decimal(amount) * Decimal(basis) / Decimal(1_000_000)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(st.tuples(st.integers(-10**10, 10**10), st.integers(0, 1_000_000)), min_size=1, max_size=200))
def test_percent_of_matches_decimal_round_half_up(cases):
    amounts = pl.Series([a for a, _ in cases], dtype=pl.Int64)
    percents = pl.Series([b / 10_000 for _, b in cases], dtype=pl.Float64)
    got = pl.DataFrame({"a": amounts, "p": percents}).select(percent_of(pl.col("a"), pl.col("p")).alias("s"))["s"]
    assert got.dtype == pl.Int64
    assert got.to_list() == [expected_percent(a, b) for a, b in cases]


@settings(max_examples=30, deadline=None)
@given(cases=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 100)), min_size=1, max_size=100))
def test_percent_of_whole_percents_is_exact_and_symmetric(cases):
    amounts = pl.Series([a for a, _ in cases], dtype=pl.Int64)
    p = pl.Series([float(b) for _, b in cases])
    df = pl.DataFrame({"a": amounts, "p": p})
    pos = df.select(percent_of(pl.col("a"), pl.col("p")).alias("s"))["s"].to_list()
    neg = df.select(percent_of(-pl.col("a"), pl.col("p")).alias("s"))["s"].to_list()
    assert neg == [-x for x in pos], "half away from zero is symmetric"
    assert pos == [expected_percent(a, b * 10_000) for a, b in cases]


# --- balance due now ------------------------------------------------------------------------------------------

def balance(day: dt.date, charges: list[tuple], payments: list[tuple], ledger: dict[str, tuple[int, int]] | None = None,
            customers: tuple[str, ...] = ("C1", "C2")) -> dict[str, int]:
    """charges: (customer, amount, posted_date, due_date); payments: (customer, amount, paid_date);
    ledger: customer -> (entries before D, dues and freeze fees posted on D)."""
    keys = pl.DataFrame({"customer_id": list(customers), "business_date": [day] * len(customers)})
    ch = pl.DataFrame([dict(charge_id=f"CH{i}", customer_id=c, facility_id="F1", product_id="P", amount_cents=a,
                            posted_date=p, due_date=d) for i, (c, a, p, d) in enumerate(charges)],
                      schema=TABLES["charges"].dtypes)
    pay = pl.DataFrame([dict(payment_id=f"PY{i}", customer_id=c, facility_id="F1", amount_cents=a, paid_date=d,
                             channel="terminal") for i, (c, a, d) in enumerate(payments)],
                       schema=TABLES["payments"].dtypes)
    sums = pl.DataFrame([(c, b, t) for c, (b, t) in (ledger or {}).items()], orient="row",
                        schema={"customer_id": pl.String, "ledger_before_cents": pl.Int64,
                                "ledger_dues_today_cents": pl.Int64})
    out = balance_due_now(keys.lazy(), ch.lazy(), pay.lazy(), sums.lazy()).collect()
    assert out.height == len(customers)
    return dict(zip(out["customer_id"], out["balance_cents"]))


def test_balance_counts_charges_due_on_or_before_d_only():
    d = DAY
    got = balance(d, charges=[("C1", 1000, d - dt.timedelta(days=10), d - dt.timedelta(days=1)),
                              ("C1", 200, d - dt.timedelta(days=10), d),
                              ("C1", 7000, d - dt.timedelta(days=10), d + dt.timedelta(days=1))], payments=[])
    assert got == {"C1": 1200, "C2": 0}


def test_balance_subtracts_payments_on_or_before_d_only():
    d = DAY
    got = balance(d, charges=[("C1", 5000, d - dt.timedelta(days=3), d - dt.timedelta(days=3))],
                  payments=[("C1", 1500, d - dt.timedelta(days=2)), ("C1", 500, d),
                            ("C1", 3000, d + dt.timedelta(days=1))])
    assert got == {"C1": 3000, "C2": 0}


def test_balance_adds_the_ledger_debits_minus_credits():
    d = DAY
    got = balance(d, charges=[("C2", 400, d, d)], payments=[("C2", 100, d)],
                  ledger={"C1": (5000 - 5000 + 700, 5000), "C2": (-250, 0)})
    assert got == {"C1": 5700, "C2": 400 - 100 - 250}


def test_balance_can_be_negative_credit():
    d = DAY
    assert balance(d, charges=[], payments=[("C1", 900, d)], customers=("C1",)) == {"C1": -900}


def test_charges_of_other_customers_are_not_mixed_in():
    d = DAY
    got = balance(d, charges=[("C9", 999, d, d)], payments=[("C8", 5, d)])
    assert got == {"C1": 0, "C2": 0}


# --- through the cycle's wiring: who qualifies for active_contracts_only, holds -------------------------------------

def run_until_billable(day: dt.date, max_share: float = 1.0, **tables: list[dict]) -> pl.DataFrame:
    """maintenance -> dues posting -> billable customers for every facility on `day`, on an
    in-memory warehouse (no charging)."""
    t = frames(**tables)
    inputs = Inputs(**{name: t.get(name, pl.DataFrame(schema=spec.dtypes)) for name, spec in TABLES.items()})
    night = Night(inputs, facility_days(inputs.facilities, {f: day for f in inputs.facilities["facility_id"]}))
    conn = duckdb.connect()
    try:
        conn.execute(resources.files("billing_pipeline.warehouse").joinpath("schema.sql").read_text())
        cycle.maintenance(conn, night)
        cycle.post_dues(conn, night)
        return cycle.select_billable(conn, night, CycleSettings(max_flagged_share=max_share))["billable_customers"]
    finally:
        conn.close()


PLANS = [plan(plan_id="MEM", contract_type="membership"), plan(plan_id="PRG", contract_type="program"),
         plan(plan_id="PAS", contract_type="pass"), plan(plan_id="OTH", contract_type="other")]


def open_balance(customer_id: str, day: dt.date) -> dict:
    return dict(charge_id=f"CH-{customer_id}", customer_id=customer_id, facility_id="F1", product_id="RETAIL",
                amount_cents=1000, posted_date=day - dt.timedelta(days=20), due_date=day - dt.timedelta(days=5))


def test_active_contracts_only_includes_membership_program_pass_in_effect():
    day = D(2026, 4, 15)  # a fixed sweep day; the contracts first bill in May (no dues tonight)
    who = {
        "C_MEM": [contract("K_MEM", customer_id="C_MEM", plan_id="MEM")],
        "C_PRG": [contract("K_PRG", customer_id="C_PRG", plan_id="PRG")],
        "C_PAS": [contract("K_PAS", customer_id="C_PAS", plan_id="PAS")],
        "C_FRZ": [contract("K_FRZ", customer_id="C_FRZ", plan_id="MEM")],
        "C_OTH": [contract("K_OTH", customer_id="C_OTH", plan_id="OTH")],
        "C_TRM": [contract("K_TRM", customer_id="C_TRM", plan_id="MEM", status="terminated")],
        "C_NONE": [],
    }
    contracts = [dict(k, first_bill_date=D(2026, 5, 1)) for ks in who.values() for k in ks]
    out = run_until_billable(
        day, facilities=[facility(sweep_mode="fixed", fixed_sweep_days="15", active_contracts_only=True)],
        plans=PLANS, customers=[customer(c) for c in who], contracts=contracts,
        payment_methods=[card(c) for c in who], charges=[open_balance(c, day) for c in who],
        status_changes=[change("X1", "K_FRZ", "freeze", D(2026, 4, 2))])
    assert sorted(out["customer_id"]) == ["C_FRZ", "C_MEM", "C_PAS", "C_PRG"]
    assert set(out["balance_cents"]) == {1000}


def test_active_contracts_only_excludes_contracts_no_longer_in_effect_on_d():
    """Status is the one derived for D: terminated by a change, concluded by its end date, not started."""
    day = D(2026, 4, 15)
    who = ["C_TRM", "C_END", "C_PEND", "C_OK"]
    contracts = [contract("K_TRM", customer_id="C_TRM", plan_id="MEM"),
                 contract("K_END", customer_id="C_END", plan_id="MEM", end_date=D(2026, 3, 31)),
                 contract("K_PEND", customer_id="C_PEND", plan_id="MEM", status="pending", start_date=D(2026, 5, 1)),
                 contract("K_OK", customer_id="C_OK", plan_id="MEM")]
    out = run_until_billable(
        day, facilities=[facility(sweep_mode="fixed", fixed_sweep_days="15", active_contracts_only=True)],
        plans=PLANS, customers=[customer(c) for c in who], contracts=contracts,
        payment_methods=[card(c) for c in who], charges=[open_balance(c, day) for c in who],
        status_changes=[change("X1", "K_TRM", "terminate", D(2026, 4, 1))])
    assert sorted(out["customer_id"]) == ["C_OK"]


def test_holds_through_the_cycle():
    day = D(2026, 4, 1)  # every contract bills on the 1st: dues post (except the duplicate's)
    who = ["C_OK", "C_DUP", "C_REM", "C_EXP", "C_NODEF", "C_NOPM"]
    contracts = [contract(f"K_{c}", customer_id=c, start_date=D(2026, 4, 1)) for c in who]
    contracts.append(contract("K_C_DUP2", customer_id="C_DUP", start_date=D(2026, 4, 1)))
    methods = [card("C_OK"), card("C_DUP"), card("C_REM", removed=True), card("C_EXP", expires_on=D(2026, 3, 31)),
               card("C_NODEF", is_default=False)]
    out = run_until_billable(day, customers=[customer(c) for c in who], contracts=contracts, payment_methods=methods)
    holds = dict(zip(out["customer_id"], out["hold_reason"]))
    assert holds == {"C_OK": None, "C_DUP": "duplicate_contract", "C_REM": "no_payment_method",
                     "C_EXP": "no_payment_method", "C_NODEF": "no_payment_method", "C_NOPM": "no_payment_method"}
    assert dict(zip(out["customer_id"], out["balance_cents"]))["C_OK"] == 5000


def test_flagged_share_above_the_limit_blocks_billing_for_everyone_in_the_window():
    day = D(2026, 4, 1)
    who = [f"C{i}" for i in range(10)]
    contracts = [contract(f"K{i}", customer_id=c, start_date=day) for i, c in enumerate(who)]
    methods = [card(c) for c in who[1:]]  # C0 has none: 1 of 10 flagged
    out = run_until_billable(day, max_share=0.05, customers=[customer(c) for c in who], contracts=contracts,
                             payment_methods=methods)
    holds = dict(zip(out["customer_id"], out["hold_reason"]))
    assert holds["C0"] == "no_payment_method"
    assert {holds[c] for c in who[1:]} == {"billing_blocked"}
    out = run_until_billable(day, max_share=0.2, customers=[customer(c) for c in who], contracts=contracts,
                             payment_methods=methods)
    assert {h for c, h in zip(out["customer_id"], out["hold_reason"]) if c != "C0"} == {None}


# --- pre-billing checks when a customer's contracts are processed in other batches ----------------------------
# A batch is one Dagster window: the facility-days whose 03:00 fell in it. Facilities in other time
# zones are in other batches. A contract is processed by its own facility; the checks are about the
# customer (reported under their home facility), so they must see all the customer's contracts.

def night_for(facility_ids: list[str], day: dt.date, **tables: list[dict]) -> Night:
    t = frames(**tables)
    inputs = Inputs(**{name: t.get(name, pl.DataFrame(schema=spec.dtypes)) for name, spec in TABLES.items()})
    return Night(inputs, facility_days(inputs.facilities, {f: day for f in facility_ids}))


TWO_ZONES = [facility(facility_id="F1", timezone="Europe/Berlin"),
             facility(facility_id="F2", name="New York", timezone="America/New_York")]


def test_duplicate_contracts_at_two_facilities_are_found_in_the_home_facilitys_batch():
    day = D(2026, 3, 1)
    tables = dict(facilities=TWO_ZONES, customers=[customer("C1", facility_id="F1")],
                  contracts=[contract("K1", facility_id="F1"), contract("K2", facility_id="F2")],
                  payment_methods=[card("C1")])
    both = night_for(["F1", "F2"], day, **tables).duplicates  # `billing-pipeline run`: every facility at once
    assert both.select("customer_id", "contract_ids").rows() == [("C1", ["K1", "K2"])]
    home_window = night_for(["F1"], day, **tables).duplicates  # the Dagster window holding Berlin's 03:00
    assert home_window.select("customer_id", "contract_ids").rows() == [("C1", ["K1", "K2"])]


def test_a_contract_at_another_facility_is_not_flagged_without_payment_method():
    """C1 (home F1) has a usable card; their contract at F2 is processed in F2's batch."""
    day = D(2026, 3, 1)
    night = night_for(["F2"], day, facilities=TWO_ZONES, customers=[customer("C1", facility_id="F1")],
                      contracts=[contract("K2", facility_id="F2")], payment_methods=[card("C1")])
    assert night.without_payment_method.height == 0, night.without_payment_method


def test_a_window_works_out_the_status_of_its_own_contracts_and_its_customers_others_only():
    """A Dagster window of 100 facilities out of 1,000 must not build 10M contracts' timelines: it
    takes the contracts its facilities process (a contract of an unknown facility goes to its
    customer's home) and the other contracts of its customers, with the same statuses as a batch
    of every facility."""
    day = D(2026, 3, 10)
    la = facility(facility_id="F3", name="Los Angeles", timezone="America/Los_Angeles")
    tables = dict(
        facilities=[*TWO_ZONES, la],
        customers=[customer("C1", facility_id="F1"), customer("C2", facility_id="F3")],
        contracts=[contract("K1", facility_id="F1"), contract("K2", facility_id="F2"),
                   contract("K3", customer_id="C2", facility_id="F3"), contract("K4", facility_id="FX")],
        status_changes=[change("S1", "K2", "freeze", D(2026, 3, 1)), change("S2", "K3", "freeze", D(2026, 3, 1))],
        payment_methods=[card("C1"), card("C2")])
    window = night_for(["F1"], day, **tables)
    every = night_for(["F1", "F2", "F3"], day, **tables)

    assert sorted(window.own_contracts["contract_id"]) == ["K1", "K2", "K4"]
    assert every.own_contracts.height == 4
    statuses = dict(zip(window.customer_contracts["contract_id"], window.customer_contracts["status"]))
    assert statuses == {"K1": "active", "K2": "frozen", "K4": "active"}
    assert statuses == {k: s for k, s in zip(every.contracts["contract_id"], every.contracts["status"]) if k != "K3"}


def test_a_window_with_two_dates_sees_a_customers_contract_processed_there_for_the_other_date():
    """Kiritimati's D+1 and Honolulu's D share a window. C1 (home Kiritimati) holds the same plan at
    both: a duplicate on D (which holds K2's dues at Honolulu) and on D+1, found in the window as in
    batches of one date for every facility (`run --date`)."""
    day = D(2026, 3, 2)
    tables = dict(facilities=[facility(facility_id="HNL", timezone="Pacific/Honolulu"),
                              facility(facility_id="KIR", timezone="Pacific/Kiritimati")],
                  customers=[customer("C1", facility_id="KIR")],
                  contracts=[contract("K1", facility_id="KIR"), contract("K2", facility_id="HNL")],
                  payment_methods=[card("C1")])
    t = frames(**tables)
    inputs = Inputs(**{name: t.get(name, pl.DataFrame(schema=spec.dtypes)) for name, spec in TABLES.items()})
    window = Night(inputs, facility_days(inputs.facilities, {"HNL": day, "KIR": day + dt.timedelta(days=1)}))
    by_date = [night_for(["HNL", "KIR"], d, **tables).duplicates for d in (day, day + dt.timedelta(days=1))]
    expected = [(d, "C1", ["K1", "K2"]) for d in (day, day + dt.timedelta(days=1))]
    assert pl.concat(by_date).select("business_date", "customer_id", "contract_ids").rows() == expected
    assert window.duplicates.select("business_date", "customer_id", "contract_ids").sort("business_date").rows() == expected


def test_a_contract_at_an_unknown_facility_counts_for_its_customer_in_another_window():
    """K2's facility does not exist, so it is processed at C1's home (New York); C1's K1 is in
    Berlin's window, which must still see K2 to hold C1's duplicate."""
    day = D(2026, 3, 1)
    tables = dict(facilities=TWO_ZONES, customers=[customer("C1", facility_id="F2")],
                  contracts=[contract("K1", facility_id="F1"), contract("K2", facility_id="FX")],
                  payment_methods=[card("C1")])
    expected = [(day, "C1", ["K1", "K2"])]
    assert night_for(["F1", "F2"], day, **tables).duplicates.select(
        "business_date", "customer_id", "contract_ids").rows() == expected
    assert night_for(["F1"], day, **tables).duplicates.select(
        "business_date", "customer_id", "contract_ids").rows() == expected
