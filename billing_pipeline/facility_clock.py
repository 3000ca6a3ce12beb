"""When each facility's business day runs: 03:00 local, once per facility-day (SPEC 1).

A facility-day (facility, D) runs at the instant its local clock reads 03:00 on D, or at the
first instant after 03:00 if a DST jump skips it. Runs are grouped into hourly UTC windows
(start, end]: a window holds every facility-day whose run instant falls in it, and is processed
when the window ends. So every facility-day belongs to exactly one window, whole-hour zones
run exactly at 03:00 and half- or quarter-hour zones at most 45 minutes later.

Work is per distinct time zone (a few hundred at most), never per contract or customer.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import polars as pl

RUN_TIME = dt.time(3, 0)
UTC = dt.timezone.utc
HOUR = dt.timedelta(hours=1)
PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


def run_instant(timezone: str, business_date: dt.date) -> dt.datetime:
    """The UTC instant at which `business_date` runs in `timezone`."""
    zone = ZoneInfo(timezone)
    local = dt.datetime.combine(business_date, RUN_TIME)
    for minutes in range(0, 24 * 60, 15):
        # A wall time that survives a round trip through UTC exists; the first one that does
        # at or after 03:00 is the first instant after a DST gap (offsets are whole quarters).
        candidate = (local + dt.timedelta(minutes=minutes)).replace(tzinfo=zone)
        back = candidate.astimezone(UTC).astimezone(zone)
        if back.replace(tzinfo=None) == candidate.replace(tzinfo=None):
            if minutes == 0:
                return candidate.astimezone(UTC)
            # Inside a gap: the transition itself is the first instant after 03:00.
            return gap_end(zone, local)
    raise ValueError(f"no 03:00 found for {timezone} on {business_date}")


def gap_end(zone: ZoneInfo, local: dt.datetime) -> dt.datetime:
    """The UTC instant where the DST gap containing `local` ends."""
    before = local.replace(tzinfo=zone, fold=0).astimezone(UTC)  # offset before the jump
    after = local.replace(tzinfo=zone, fold=1).astimezone(UTC)   # offset after the jump
    lo, hi = min(before, after), max(before, after)
    while hi - lo > dt.timedelta(minutes=1):  # bisect the transition to the minute
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).replace(tzinfo=None) < local:
            lo = mid
        else:
            hi = mid
    return hi.replace(second=0, microsecond=0)


def partition_key(instant: dt.datetime) -> str:
    """Key of the hourly window (start, end] that holds `instant`: its start hour."""
    start = (instant - dt.timedelta(microseconds=1)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return start.strftime(PARTITION_FORMAT)


def window_of(key: str) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.strptime(key, PARTITION_FORMAT).replace(tzinfo=UTC)
    return start, start + HOUR


FACILITY_DAYS_SCHEMA = {"facility_id": pl.String, "business_date": pl.Date, "partition_key": pl.String,
                        "run_at": pl.Datetime("us", "UTC")}


def zone_days(timezones: list[str], dates: list[dt.date]) -> pl.DataFrame:
    rows = [(tz, d, run_instant(tz, d)) for tz in timezones for d in dates]
    frame = pl.DataFrame(rows, schema={"timezone": pl.String, "business_date": pl.Date,
                                       "run_at": pl.Datetime("us", "UTC")}, orient="row")
    return frame.with_columns(
        pl.col("run_at").map_elements(partition_key, return_dtype=pl.String).alias("partition_key"))


def facility_days_for_partition(facilities: pl.DataFrame, key: str) -> pl.DataFrame:
    """Every facility-day whose run instant falls in the window `key`."""
    start, end = window_of(key)
    dates = [(start + dt.timedelta(days=n)).date() for n in (-1, 0, 1, 2)]
    zones = zone_days(facilities.get_column("timezone").unique().sort().to_list(), dates)
    days = zones.filter(pl.col("partition_key") == key)
    return (facilities.select("facility_id", "timezone").join(days, on="timezone")
            .select(list(FACILITY_DAYS_SCHEMA)).sort("facility_id"))


def facility_days_for_date(facilities: pl.DataFrame, business_date: dt.date,
                           facility_id: str | None = None) -> pl.DataFrame:
    """Every facility's day `business_date` (or one facility's), with the window it belongs to."""
    if facility_id is not None:
        facilities = facilities.filter(pl.col("facility_id") == facility_id)
    zones = zone_days(facilities.get_column("timezone").unique().sort().to_list(), [business_date])
    return (facilities.select("facility_id", "timezone").join(zones, on="timezone")
            .select(list(FACILITY_DAYS_SCHEMA)).sort("facility_id"))
