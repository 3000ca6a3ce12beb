"""Bill dates (SPEC 1.2): facility and contract (rolling) schedules, month ends, counting a window.

Expectations are computed here from the SPEC with the standard library (calendar arithmetic),
never copied from the implementation.
"""

from __future__ import annotations

import calendar
import datetime as dt

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_pipeline.rules import bill_dates

D = dt.date
SCHEMA = {"contract_id": pl.String, "frequency": pl.String, "schedule": pl.String, "start_date": pl.Date,
          "first_bill_date": pl.Date, "weekly_billing_day": pl.Int64, "monthly_billing_day": pl.Int64,
          "after": pl.Date, "through": pl.Date}


def row(frequency="monthly", schedule="contract", start=D(2026, 1, 1), first_bill_date=None, weekly_day=1,
        monthly_day=1, after=None, through=D(2027, 1, 1), contract_id="K1") -> dict:
    return dict(contract_id=contract_id, frequency=frequency, schedule=schedule, start_date=start,
                first_bill_date=first_bill_date, weekly_billing_day=weekly_day, monthly_billing_day=monthly_day,
                after=after, through=through)


def frame(*rows: dict) -> pl.LazyFrame:
    return pl.DataFrame(list(rows), schema=SCHEMA).lazy()


def exploded(*rows: dict) -> dict[str, list[dt.date]]:
    """contract_id -> its bill dates b with after < b <= through, sorted."""
    windows = frame(*rows).pipe(bill_dates.with_schedule).pipe(bill_dates.with_count_between, "after", "through", "n")
    out = bill_dates.explode_bill_dates(windows, "after", "through").collect()
    result = {r["contract_id"]: [] for r in rows}
    for cid, date in zip(out["contract_id"], out["bill_date"]):
        result[cid].append(date)
    return {cid: sorted(v) for cid, v in result.items()}


def dates(**kw) -> list[dt.date]:
    return exploded(row(**kw))["K1"]


def counted(**kw) -> int:
    out = frame(row(**kw)).pipe(bill_dates.with_schedule).pipe(
        bill_dates.with_count_between, "after", "through", "n").collect()
    return out["n"][0]


def clamp(year: int, month: int, day: int) -> dt.date:
    return D(year, month, min(day, calendar.monthrange(year, month)[1]))


def add_months(year: int, month: int, n: int) -> tuple[int, int]:
    idx = year * 12 + (month - 1) + n
    return idx // 12, idx % 12 + 1


# --- month ends and the anchor that never drifts ----------------------------------------------

def test_anchor_31_bills_every_month_end():
    got = dates(start=D(2026, 1, 31), through=D(2026, 12, 31))
    assert got == [D(2026, 1, 31), D(2026, 2, 28), D(2026, 3, 31), D(2026, 4, 30), D(2026, 5, 31),
                   D(2026, 6, 30), D(2026, 7, 31), D(2026, 8, 31), D(2026, 9, 30), D(2026, 10, 31),
                   D(2026, 11, 30), D(2026, 12, 31)]


def test_anchor_31_bills_feb_29_in_a_leap_year():
    assert dates(start=D(2028, 1, 31), through=D(2028, 4, 30)) == [
        D(2028, 1, 31), D(2028, 2, 29), D(2028, 3, 31), D(2028, 4, 30)]


def test_anchor_30_returns_to_30_after_february():
    assert dates(start=D(2026, 1, 30), through=D(2026, 4, 30)) == [
        D(2026, 1, 30), D(2026, 2, 28), D(2026, 3, 30), D(2026, 4, 30)]


def test_yearly_feb_29_anchor_bills_feb_28_in_common_years_and_feb_29_in_leap_years():
    got = dates(frequency="yearly", start=D(2024, 2, 29), through=D(2033, 1, 1))
    assert got == [D(2024, 2, 29), D(2025, 2, 28), D(2026, 2, 28), D(2027, 2, 28), D(2028, 2, 29),
                   D(2029, 2, 28), D(2030, 2, 28), D(2031, 2, 28), D(2032, 2, 29)]


def test_quarterly_rolling_anchor_on_the_31st():
    got = dates(frequency="quarterly", start=D(2025, 8, 31), through=D(2026, 12, 31))
    assert got == [D(2025, 8, 31), D(2025, 11, 30), D(2026, 2, 28), D(2026, 5, 31), D(2026, 8, 31),
                   D(2026, 11, 30)]


def test_weekly_and_biweekly_rolling_count_from_the_start_date():
    start = D(2026, 3, 4)  # a Wednesday
    assert dates(frequency="weekly", start=start, through=D(2026, 4, 1)) == [
        start + dt.timedelta(days=7 * k) for k in range(5)]
    assert dates(frequency="biweekly", start=start, through=D(2026, 4, 29)) == [
        start + dt.timedelta(days=14 * k) for k in range(5)]


# --- facility schedule --------------------------------------------------------------------------

def test_facility_weekly_bills_on_the_weekly_billing_day():
    # 2026-03-04 is a Wednesday; weekly_billing_day 5 is Friday.
    got = dates(frequency="weekly", schedule="facility", start=D(2026, 3, 4), weekly_day=5, through=D(2026, 3, 31))
    assert got == [D(2026, 3, 6), D(2026, 3, 13), D(2026, 3, 20), D(2026, 3, 27)]
    assert all(d.isoweekday() == 5 for d in got)


def test_facility_weekly_start_on_the_billing_day_bills_that_day():
    got = dates(frequency="weekly", schedule="facility", start=D(2026, 3, 2), weekly_day=1, through=D(2026, 3, 9))
    assert got == [D(2026, 3, 2), D(2026, 3, 9)]


def test_facility_weekly_sunday_is_day_7():
    got = dates(frequency="weekly", schedule="facility", start=D(2026, 3, 2), weekly_day=7, through=D(2026, 3, 15))
    assert got == [D(2026, 3, 8), D(2026, 3, 15)]


def test_facility_biweekly_counts_14_days_from_the_first_billing_day():
    got = dates(frequency="biweekly", schedule="facility", start=D(2026, 3, 4), weekly_day=1, through=D(2026, 5, 1))
    first = D(2026, 3, 9)  # first Monday on or after the start
    assert got == [first + dt.timedelta(days=14 * k) for k in range(4)]


def test_facility_monthly_day_31_bills_the_last_day_of_short_months():
    got = dates(frequency="monthly", schedule="facility", start=D(2026, 1, 10), monthly_day=31, through=D(2026, 7, 1))
    assert got == [D(2026, 1, 31), D(2026, 2, 28), D(2026, 3, 31), D(2026, 4, 30), D(2026, 5, 31), D(2026, 6, 30)]


def test_facility_monthly_start_after_the_billing_day_waits_for_next_month():
    got = dates(frequency="monthly", schedule="facility", start=D(2026, 1, 16), monthly_day=15, through=D(2026, 4, 1))
    assert got == [D(2026, 2, 15), D(2026, 3, 15)]


def test_facility_monthly_day_30_in_february_then_back_to_30():
    got = dates(frequency="monthly", schedule="facility", start=D(2026, 2, 1), monthly_day=30, through=D(2026, 4, 30))
    assert got == [D(2026, 2, 28), D(2026, 3, 30), D(2026, 4, 30)]


def test_facility_quarterly_steps_three_months_from_the_first_facility_day():
    got = dates(frequency="quarterly", schedule="facility", start=D(2026, 1, 15), monthly_day=1, through=D(2027, 1, 1))
    assert got == [D(2026, 2, 1), D(2026, 5, 1), D(2026, 8, 1), D(2026, 11, 1)]


def test_facility_yearly_steps_twelve_months_from_the_first_facility_day():
    got = dates(frequency="yearly", schedule="facility", start=D(2026, 1, 20), monthly_day=31, through=D(2029, 3, 1))
    assert got == [D(2026, 1, 31), D(2027, 1, 31), D(2028, 1, 31), D(2029, 1, 31)]


def test_facility_yearly_first_facility_day_in_february_keeps_day_31_intent():
    # First facility day on or after Feb 2 with monthly day 31 is Feb 28; a year on it is Feb 28 2027,
    # and Feb 29 2028 (the anchor's day is 31, clamped to the month's end).
    got = dates(frequency="yearly", schedule="facility", start=D(2026, 2, 2), monthly_day=31, through=D(2028, 12, 31))
    assert got == [D(2026, 2, 28), D(2027, 2, 28), D(2028, 2, 29)]


# --- first_bill_date ------------------------------------------------------------------------------

def test_rolling_first_bill_date_is_the_anchor():
    got = dates(start=D(2026, 1, 10), first_bill_date=D(2026, 2, 1), through=D(2026, 5, 1))
    assert got == [D(2026, 2, 1), D(2026, 3, 1), D(2026, 4, 1), D(2026, 5, 1)]


def test_rolling_first_bill_date_on_31_does_not_drift():
    got = dates(start=D(2026, 1, 2), first_bill_date=D(2026, 1, 31), through=D(2026, 5, 31))
    assert got == [D(2026, 1, 31), D(2026, 2, 28), D(2026, 3, 31), D(2026, 4, 30), D(2026, 5, 31)]


def test_facility_first_bill_date_off_schedule_is_billed_then_the_facility_days_follow():
    # Monthly on the 1st; first_bill_date on the 20th: bills the 20th, then every 1st after it.
    got = dates(frequency="monthly", schedule="facility", start=D(2026, 1, 5), first_bill_date=D(2026, 1, 20),
                monthly_day=1, through=D(2026, 4, 1))
    assert got == [D(2026, 1, 20), D(2026, 2, 1), D(2026, 3, 1), D(2026, 4, 1)]


def test_facility_first_bill_date_on_a_facility_day():
    got = dates(frequency="weekly", schedule="facility", start=D(2026, 3, 1), first_bill_date=D(2026, 3, 16),
                weekly_day=1, through=D(2026, 3, 30))
    assert got == [D(2026, 3, 16), D(2026, 3, 23), D(2026, 3, 30)]


def test_first_bill_date_before_start_date_still_is_the_first_bill_date():
    got = dates(start=D(2026, 3, 10), first_bill_date=D(2026, 3, 1), through=D(2026, 5, 1))
    assert got == [D(2026, 3, 1), D(2026, 4, 1), D(2026, 5, 1)]


# --- counting a window (after, through] -------------------------------------------------------------

def test_window_excludes_after_and_includes_through():
    kw = dict(start=D(2026, 1, 31))
    assert dates(after=D(2026, 2, 28), through=D(2026, 4, 30), **kw) == [D(2026, 3, 31), D(2026, 4, 30)]
    assert counted(after=D(2026, 2, 28), through=D(2026, 4, 30), **kw) == 2
    assert counted(after=D(2026, 2, 28), through=D(2026, 4, 29), **kw) == 1
    assert counted(after=D(2026, 2, 27), through=D(2026, 2, 28), **kw) == 1
    assert counted(after=D(2026, 2, 28), through=D(2026, 2, 28), **kw) == 0


def test_window_before_the_first_bill_date_is_empty():
    assert counted(start=D(2026, 5, 1), through=D(2026, 4, 30)) == 0
    assert dates(start=D(2026, 5, 1), through=D(2026, 4, 30)) == []


def test_window_with_no_after_counts_from_the_start():
    assert counted(start=D(2026, 1, 1), through=D(2026, 6, 15)) == 6


def test_window_counts_an_off_schedule_first_bill_date_once():
    kw = dict(frequency="monthly", schedule="facility", start=D(2026, 1, 5), first_bill_date=D(2026, 1, 20),
              monthly_day=1)
    assert counted(through=D(2026, 1, 31), **kw) == 1
    assert counted(after=D(2026, 1, 20), through=D(2026, 3, 1), **kw) == 2
    assert counted(after=D(2026, 1, 19), through=D(2026, 1, 20), **kw) == 1


def test_many_contracts_in_one_pass_keep_their_own_series():
    got = exploded(row(contract_id="A", start=D(2026, 1, 31), through=D(2026, 3, 31)),
                   row(contract_id="B", frequency="weekly", schedule="facility", weekly_day=3, start=D(2026, 3, 1),
                       through=D(2026, 3, 18)),
                   row(contract_id="C", start=D(2026, 4, 1), through=D(2026, 3, 31)))
    assert got == {"A": [D(2026, 1, 31), D(2026, 2, 28), D(2026, 3, 31)],
                   "B": [D(2026, 3, 4), D(2026, 3, 11), D(2026, 3, 18)],
                   "C": []}


# --- properties ------------------------------------------------------------------------------------------
# Each example is a batch of contracts evaluated in one vectorized pass (as the pipeline does),
# which also keeps the property tests fast.

PROPERTY = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BATCH = st.integers(min_value=1, max_value=40)


def evaluate(rows: list[dict]) -> tuple[dict[str, list[dt.date]], dict[str, int]]:
    """One pass: contract_id -> exploded dates, and contract_id -> count_between."""
    rows = [dict(r, contract_id=f"K{i}") for i, r in enumerate(rows)]
    windows = frame(*rows).pipe(bill_dates.with_schedule).pipe(
        bill_dates.with_count_between, "after", "through", "n").collect()
    out = bill_dates.explode_bill_dates(windows.lazy(), "after", "through").collect()
    got = {r["contract_id"]: [] for r in rows}
    for cid, date in zip(out["contract_id"], out["bill_date"]):
        got[cid].append(date)
    return {k: sorted(v) for k, v in got.items()}, dict(zip(windows["contract_id"], windows["n"]))


anchors = st.dates(min_value=D(1990, 1, 1), max_value=D(2060, 12, 31))
MONTH_FREQS = st.sampled_from(["monthly", "quarterly", "yearly"])
STEP = {"monthly": 1, "quarterly": 3, "yearly": 12}


@PROPERTY
@given(cases=st.lists(st.tuples(anchors, st.integers(min_value=0, max_value=200), MONTH_FREQS), min_size=1,
                      max_size=40))
def test_month_steps_never_drift(cases):
    """The k-th date lies k steps after the anchor's month, on min(anchor day, days in that month)."""
    expected = []
    for anchor, k, freq in cases:
        year, month = add_months(anchor.year, anchor.month, k * STEP[freq])
        expected.append(clamp(year, month, anchor.day))
    rows = [row(frequency=freq, start=anchor, through=exp) for (anchor, _, freq), exp in zip(cases, expected)]
    rows = [{**r, "contract_id": f"K{i}"} for i, r in enumerate(rows)]
    ks = pl.DataFrame({"contract_id": [f"K{i}" for i in range(len(cases))], "k": [k for _, k, _ in cases]},
                      schema={"contract_id": pl.String, "k": pl.Int64})
    nth = (frame(*rows).pipe(bill_dates.with_schedule).join(ks.lazy(), on="contract_id")  # rows are regrouped
           .pipe(bill_dates.with_nth_bill_date, "k", "d").collect())
    assert dict(zip(nth["contract_id"], nth["d"])) == {f"K{i}": exp for i, exp in enumerate(expected)}
    got, counts = evaluate(rows)
    for i, ((anchor, k, freq), exp) in enumerate(zip(cases, expected)):
        assert got[f"K{i}"][-1] == exp, (anchor, k, freq)
        assert len(got[f"K{i}"]) == counts[f"K{i}"] == k + 1, (anchor, k, freq)


@PROPERTY
@given(cases=st.lists(st.tuples(anchors, st.integers(1, 31), st.integers(0, 60), MONTH_FREQS), min_size=1,
                      max_size=40))
def test_facility_month_steps_land_on_the_clamped_billing_day(cases):
    rows, expected = [], []
    for start, day, k, freq in cases:
        first = clamp(start.year, start.month, day)
        if first < start:
            first = clamp(*add_months(start.year, start.month, 1), day)
        last = clamp(*add_months(first.year, first.month, k * STEP[freq]), day)
        expected.append((first, last, k + 1))
        rows.append(row(frequency=freq, schedule="facility", start=start, monthly_day=day, through=last))
    got, _ = evaluate(rows)
    for i, (first, last, n) in enumerate(expected):
        assert (got[f"K{i}"][0], got[f"K{i}"][-1], len(got[f"K{i}"])) == (first, last, n), cases[i]


@st.composite
def schedules(draw) -> dict:
    freq = draw(st.sampled_from(["weekly", "biweekly", "monthly", "quarterly", "yearly"]))
    sched = draw(st.sampled_from(["facility", "contract"]))
    start = draw(st.dates(min_value=D(2020, 1, 1), max_value=D(2030, 12, 31)))
    fbd = draw(st.none() | st.dates(min_value=start - dt.timedelta(days=40), max_value=start + dt.timedelta(days=40)))
    return dict(frequency=freq, schedule=sched, start=start, first_bill_date=fbd,
                weekly_day=draw(st.integers(1, 7)), monthly_day=draw(st.integers(1, 31)))


@st.composite
def windowed(draw) -> dict:
    spec = draw(schedules())
    after = draw(st.none() | st.dates(min_value=spec["start"] - dt.timedelta(days=100),
                                      max_value=spec["start"] + dt.timedelta(days=800)))
    through = (after or spec["start"] - dt.timedelta(days=50)) + dt.timedelta(days=draw(st.integers(0, 900)))
    return row(**spec, after=after, through=through)


@PROPERTY
@given(rows=st.lists(windowed(), min_size=1, max_size=40))
def test_count_between_equals_the_exploded_dates_and_they_increase(rows):
    got, counts = evaluate(rows)
    for i, r in enumerate(rows):
        dates_i = got[f"K{i}"]
        assert counts[f"K{i}"] == len(dates_i), r
        assert all(a < b for a, b in zip(dates_i, dates_i[1:])), (r, dates_i)
        assert all((r["after"] is None or b > r["after"]) and b <= r["through"] for b in dates_i), r


@PROPERTY
@given(rows=st.lists(windowed(), min_size=1, max_size=40))
def test_a_periods_next_bill_date_is_the_next_date_of_its_series(rows):
    """A period runs to the day before the series' next date (`next_bill_date`): the next date
    exploded in a window 400 days longer, whatever the schedule (month ends, an off-day first
    bill date, a stepped facility series)."""
    rows = [dict(r, contract_id=f"K{i}", through=r["through"] + dt.timedelta(days=400)) for i, r in enumerate(rows)]
    windows = frame(*rows).pipe(bill_dates.with_schedule).pipe(bill_dates.with_count_between, "after", "through", "n")
    out = bill_dates.explode_bill_dates(windows, "after", "through").sort("contract_id", "bill_date").collect()
    for (cid,), group in out.group_by("contract_id"):
        bills, nexts = group["bill_date"].to_list(), group["next_bill_date"].to_list()
        assert all(b < n for b, n in zip(bills, nexts)), (cid, bills, nexts)
        assert nexts[:-1] == bills[1:], (rows[int(cid[1:])], bills, nexts)


def test_next_bill_date_at_month_ends_and_after_an_off_day_first_bill_date():
    windows = frame(row(contract_id="A", start=D(2026, 1, 31), through=D(2026, 3, 31)),
                    row(contract_id="B", schedule="facility", start=D(2026, 1, 5), first_bill_date=D(2026, 1, 20),
                        monthly_day=1, through=D(2026, 2, 1))
                    ).pipe(bill_dates.with_schedule).pipe(bill_dates.with_count_between, "after", "through", "n")
    out = bill_dates.explode_bill_dates(windows, "after", "through").sort("contract_id", "bill_date").collect()
    assert out.select("contract_id", "bill_date", "next_bill_date").rows() == [
        ("A", D(2026, 1, 31), D(2026, 2, 28)), ("A", D(2026, 2, 28), D(2026, 3, 31)), ("A", D(2026, 3, 31), D(2026, 4, 30)),
        ("B", D(2026, 1, 20), D(2026, 2, 1)), ("B", D(2026, 2, 1), D(2026, 3, 1))]


@PROPERTY
@given(cases=st.lists(st.tuples(schedules(), st.integers(0, 700), st.integers(0, 700)), min_size=1, max_size=30))
def test_windows_split_anywhere_give_the_same_dates(cases):
    """(None, t] = (None, c] + (c, t]: a bill date is in exactly one of two adjacent windows."""
    rows = []
    for spec, cut, length in cases:
        origin = spec["start"] - dt.timedelta(days=60)
        c, t = origin + dt.timedelta(days=cut), origin + dt.timedelta(days=cut + length)
        rows += [row(**spec, through=t), row(**spec, through=c), row(**spec, after=c, through=t)]
    got, _ = evaluate(rows)
    for i in range(len(cases)):
        whole, head, tail = (got[f"K{3 * i + j}"] for j in range(3))
        assert head + tail == whole, cases[i]


@PROPERTY
@given(cases=st.lists(st.tuples(schedules(), st.integers(0, 800)), min_size=1, max_size=40))
def test_schedule_respects_the_facility_day_or_the_rolling_anchor(cases):
    rows = [row(**spec, through=spec["start"] + dt.timedelta(days=length)) for spec, length in cases]
    got, _ = evaluate(rows)
    for i, (spec, _) in enumerate(cases):
        dates_i, fbd, through = got[f"K{i}"], spec["first_bill_date"], rows[i]["through"]
        if fbd is not None and fbd <= through:
            assert dates_i[0] == fbd, ("first_bill_date, when given, is the first bill date", spec)
        regular = [b for b in dates_i if b != fbd]
        weekly = spec["frequency"] in ("weekly", "biweekly")
        if spec["schedule"] == "facility":
            if weekly:
                assert all(b.isoweekday() == spec["weekly_day"] for b in regular), spec
            else:
                assert all(b == clamp(b.year, b.month, spec["monthly_day"]) for b in regular), spec
            if fbd is None and dates_i:
                assert spec["start"] <= dates_i[0] < spec["start"] + dt.timedelta(days=7 if weekly else 32), spec
        elif fbd is None and dates_i:
            assert dates_i[0] == spec["start"], spec
        if weekly:
            step = 7 if spec["frequency"] == "weekly" else 14
            assert all((b - a).days == step for a, b in zip(regular, regular[1:])), spec


@pytest.mark.parametrize("frequency, first, expected", [
    ("yearly", D(2026, 3, 15), [D(2026, 3, 15), D(2027, 3, 1)]),
    ("quarterly", D(2026, 3, 15), [D(2026, 3, 15), D(2026, 6, 1), D(2026, 9, 1), D(2026, 12, 1), D(2027, 3, 1)]),
    ("biweekly", D(2026, 3, 4), [D(2026, 3, 4), D(2026, 3, 16), D(2026, 3, 30), D(2026, 4, 13)]),
])
def test_facility_schedule_steps_count_from_an_off_day_first_bill_date(frequency, first, expected):
    """A yearly plan first billed Mar 15 must not bill again on the facility's Apr 1 (SPEC 1.2:
    biweekly, quarterly and yearly count their steps from the first bill date)."""
    frame = pl.DataFrame({"frequency": [frequency], "schedule": ["facility"], "start_date": [D(2026, 1, 1)],
                          "first_bill_date": [first], "weekly_billing_day": [1], "monthly_billing_day": [1],
                          "after": [None], "through": [expected[-1]]}, schema_overrides={"after": pl.Date})
    counted = frame.lazy().pipe(bill_dates.with_schedule).pipe(bill_dates.with_count_between, "after", "through", "n")
    dates = bill_dates.explode_bill_dates(counted, "after", "through").collect().get_column("bill_date").sort()
    assert dates.to_list() == expected
