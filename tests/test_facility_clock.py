"""When a facility-day runs (SPEC 1): 03:00 local on D, or the first instant after a DST gap,
and every facility-day in exactly one hourly window."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_pipeline.facility_clock import (facility_days_for_date, facility_days_for_partition, partition_key,
                                             run_instant)

D = dt.date
UTC = dt.timezone.utc


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def key_of(instant: dt.datetime) -> str:
    """The hourly window (start, end] holding `instant`, derived independently: its start hour."""
    start = instant.replace(minute=0, second=0, microsecond=0)
    if start == instant:
        start -= dt.timedelta(hours=1)
    return start.strftime("%Y-%m-%d-%H:%M")


def facilities(*zones: str) -> pl.DataFrame:
    return pl.DataFrame({"facility_id": [f"F{i}" for i in range(len(zones))], "timezone": list(zones)})


def local(instant: dt.datetime, zone: str) -> dt.datetime:
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


# --- the run instant -------------------------------------------------------------------------------

@pytest.mark.parametrize("zone, day, expected", [
    ("Europe/Berlin", D(2026, 1, 15), utc(2026, 1, 15, 2)),       # CET, UTC+1
    ("Europe/Berlin", D(2026, 7, 15), utc(2026, 7, 15, 1)),       # CEST, UTC+2
    ("America/New_York", D(2026, 1, 15), utc(2026, 1, 15, 8)),    # EST, UTC-5
    ("UTC", D(2026, 1, 15), utc(2026, 1, 15, 3)),
    ("Pacific/Kiritimati", D(2026, 1, 15), utc(2026, 1, 14, 13)),  # UTC+14: the day before in UTC
    ("Etc/GMT+12", D(2026, 1, 15), utc(2026, 1, 15, 15)),         # UTC-12
])
def test_whole_hour_zone_runs_at_0300_local_exactly(zone, day, expected):
    at = run_instant(zone, day)
    assert at == expected
    assert local(at, zone) == dt.datetime.combine(day, dt.time(3))


@pytest.mark.parametrize("zone, day, expected", [
    ("Asia/Kolkata", D(2026, 4, 5), utc(2026, 4, 4, 21, 30)),         # UTC+5:30
    ("Australia/Adelaide", D(2026, 1, 15), utc(2026, 1, 14, 16, 30)),  # ACDT, UTC+10:30
    ("Australia/Adelaide", D(2026, 7, 15), utc(2026, 7, 14, 17, 30)),  # ACST, UTC+9:30
    ("Asia/Kathmandu", D(2026, 4, 5), utc(2026, 4, 4, 21, 15)),       # UTC+5:45
])
def test_half_and_quarter_hour_zones_run_at_0300_local(zone, day, expected):
    at = run_instant(zone, day)
    assert at == expected
    assert local(at, zone) == dt.datetime.combine(day, dt.time(3))
    # Its window is the hour that holds the instant; it is processed when that hour ends.
    assert partition_key(at) == key_of(at)


@pytest.mark.parametrize("zone, day, expected, local_time", [
    # Spring forward 02:00 -> 03:00: 03:00 exists, it is the first instant after the gap.
    ("Europe/Berlin", D(2026, 3, 29), utc(2026, 3, 29, 1), dt.time(3)),
    ("Australia/Sydney", D(2026, 10, 4), utc(2026, 10, 3, 16), dt.time(3)),  # southern spring, October
    ("America/New_York", D(2026, 3, 8), utc(2026, 3, 8, 7), dt.time(3)),
    # EET zones jump 03:00 -> 04:00: 03:00 does not exist, the first instant after is 04:00 EEST.
    ("Europe/Helsinki", D(2026, 3, 29), utc(2026, 3, 29, 1), dt.time(4)),
    # Chatham jumps 02:45 -> 03:45 (UTC+12:45 -> +13:45): first instant after the gap is 03:45.
    ("Pacific/Chatham", D(2026, 9, 27), utc(2026, 9, 26, 14), dt.time(3, 45)),
])
def test_dst_spring_forward_day(zone, day, expected, local_time):
    at = run_instant(zone, day)
    assert at == expected
    assert local(at, zone) == dt.datetime.combine(day, local_time)
    # One minute earlier the clock still read a time before 03:00 on that day.
    assert local(at - dt.timedelta(minutes=1), zone) < dt.datetime.combine(day, dt.time(3))


@pytest.mark.parametrize("zone, day, expected", [
    # Fall back 03:00 CEST -> 02:00 CET: 03:00 happens once, in CET.
    ("Europe/Berlin", D(2026, 10, 25), utc(2026, 10, 25, 2)),
    # Southern fall back, first Sunday of April: 03:00 AEDT -> 02:00 AEST; 03:00 AEST once.
    ("Australia/Sydney", D(2026, 4, 5), utc(2026, 4, 4, 17)),
    ("America/New_York", D(2026, 11, 1), utc(2026, 11, 1, 8)),
    # EET falls back 04:00 -> 03:00: 03:00 happens twice; the day runs once, the first time.
    ("Europe/Helsinki", D(2026, 10, 25), utc(2026, 10, 25, 0)),
])
def test_dst_fall_back_day(zone, day, expected):
    at = run_instant(zone, day)
    assert at == expected
    assert local(at, zone) == dt.datetime.combine(day, dt.time(3))


def test_the_day_after_a_dst_change_is_back_to_0300():
    assert local(run_instant("Pacific/Chatham", D(2026, 9, 28)), "Pacific/Chatham") == dt.datetime(2026, 9, 28, 3)
    assert run_instant("Europe/Berlin", D(2026, 3, 30)) == utc(2026, 3, 30, 1)


# --- windows ----------------------------------------------------------------------------------------

def test_partition_key_window_is_start_exclusive_end_inclusive():
    assert partition_key(utc(2026, 3, 1, 2, 0)) == "2026-03-01-01:00"
    assert partition_key(utc(2026, 3, 1, 2, 0, 1)) == "2026-03-01-02:00"
    assert partition_key(utc(2026, 3, 1, 1, 30)) == "2026-03-01-01:00"
    assert partition_key(utc(2026, 3, 1, 0, 0)) == "2026-02-28-23:00"


def test_facility_days_for_a_window_pick_the_facilities_whose_0300_fell_in_it():
    fac = facilities("Europe/Berlin", "Europe/Paris", "Asia/Kolkata", "America/New_York", "Europe/London")
    # 2026-03-01: Berlin and Paris run at 02:00 UTC, in window (01:00, 02:00].
    got = facility_days_for_partition(fac, "2026-03-01-01:00")
    assert sorted(zip(got["facility_id"], got["business_date"])) == [("F0", D(2026, 3, 1)), ("F1", D(2026, 3, 1))]
    # Kolkata's 03:00 on 2026-03-02 is 21:30 UTC on 03-01: window (21:00, 22:00] of 03-01.
    got = facility_days_for_partition(fac, "2026-03-01-21:00")
    assert list(zip(got["facility_id"], got["business_date"])) == [("F2", D(2026, 3, 2))]
    assert facility_days_for_partition(fac, "2026-03-01-05:00").height == 0


def test_facility_days_for_date_gives_every_facility_once_with_its_window():
    fac = facilities("Europe/Berlin", "Asia/Kolkata", "Pacific/Chatham")
    got = facility_days_for_date(fac, D(2026, 9, 27))
    assert got["facility_id"].to_list() == ["F0", "F1", "F2"]
    assert set(got["business_date"]) == {D(2026, 9, 27)}
    for zone, key in zip(["Europe/Berlin", "Asia/Kolkata", "Pacific/Chatham"], got["partition_key"]):
        assert key == key_of(run_instant(zone, D(2026, 9, 27)))
    one = facility_days_for_date(fac, D(2026, 9, 27), facility_id="F1")
    assert one["facility_id"].to_list() == ["F1"]


# --- property: every facility-day belongs to exactly one window ----------------------------------------

ZONES = sorted(z for z in zoneinfo.available_timezones() if "/" in z and not z.startswith(("posix/", "right/")))


def expected_run_instant(zone: str, day: dt.date) -> dt.datetime:
    """Independent oracle: the earliest instant at which the local clock reads 03:00 or later on D."""
    tz, target = ZoneInfo(zone), dt.datetime.combine(day, dt.time(3))
    t = dt.datetime.combine(day, dt.time(3), tzinfo=UTC) - dt.timedelta(hours=16)
    step = dt.timedelta(minutes=15)
    while t.astimezone(tz).replace(tzinfo=None) < target:
        t += step
    lo = t - step
    while lo + dt.timedelta(minutes=1) <= t and (lo + dt.timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None) < target:
        lo += dt.timedelta(minutes=1)
    return lo + dt.timedelta(minutes=1)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(day=st.dates(min_value=D(2000, 1, 1), max_value=D(2037, 12, 31)),
       zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=12, unique=True))
def test_every_facility_day_is_in_exactly_one_window(day, zones):
    fac = facilities(*zones)
    instants = {f"F{i}": run_instant(z, day) for i, z in enumerate(zones)}
    for fid, zone in zip(fac["facility_id"], zones):
        assert instants[fid] == expected_run_instant(zone, day), (zone, day)
    keys = {partition_key(at + dt.timedelta(hours=h)) for at in instants.values() for h in (-2, -1, 0, 1, 2)}
    found: dict[str, list[str]] = {fid: [] for fid in instants}
    for key in sorted(keys):
        got = facility_days_for_partition(fac, key).filter(pl.col("business_date") == day)
        for fid in got["facility_id"]:
            found[fid].append(key)
    for fid, at in instants.items():
        assert found[fid] == [partition_key(at)] == [key_of(at)], (zones[int(fid[1:])], day, found[fid])


def offset_change_days(zone: str, year: int) -> list[dt.date]:
    """Days of `year` on which the zone's UTC offset changes (DST or otherwise), and the day after."""
    tz, out = ZoneInfo(zone), []
    day = D(year, 1, 1)
    while day.year == year:
        a = dt.datetime.combine(day, dt.time(0), tzinfo=tz).utcoffset()
        b = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz).utcoffset()
        if a != b:
            out += [day, day + dt.timedelta(days=1)]
        day += dt.timedelta(days=1)
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zone=st.sampled_from(ZONES), year=st.integers(min_value=2000, max_value=2037))
def test_offset_change_days_run_once_at_the_first_instant_on_or_after_0300(zone, year):
    days = offset_change_days(zone, year)
    fac = facilities(zone)
    for day in days:
        at = run_instant(zone, day)
        assert at == expected_run_instant(zone, day), (zone, day)
        found = [key for key in {partition_key(at + dt.timedelta(hours=h)) for h in (-2, -1, 0, 1, 2)}
                 if facility_days_for_partition(fac, key).filter(pl.col("business_date") == day).height]
        assert found == [key_of(at)], (zone, day, found)
