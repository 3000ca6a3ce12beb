"""Demo data in the input contract (SPEC section 3): a gym chain to bill, deterministic for a seed.

Owns what the demo chain looks like: its facilities, plans, members and their contracts, and which
records are deliberately wrong, so that a demo run shows every path of the nightly cycle (dues
posting errors, duplicate contracts, missing payment methods, declines, status changes that do not
apply). The customer side is made chunk by chunk (a block of customers with their contracts,
payment methods, status changes, charges and payments), each chunk from its own generator derived
from the seed, and streamed to disk, so 10M contracts fit in a few GiB and the files depend on the
arguments only.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from billing_pipeline.inputs.contract import CONTRACT_STATUSES, TABLES

CHUNK_CONTRACTS = 1_000_000
CUSTOMERS_PER_CONTRACT = (4, 5)  # 0.8: one customer in four holds a second contract
MIN_MEMBERS = 48
EPOCH = dt.date(1970, 1, 1)
DAY_US = 86_400_000_000
CSV_DATETIME = "%Y-%m-%dT%H:%M:%S"
NO_DAY = NO_DUES = np.iinfo(np.int64).min  # null in the numpy columns of a chunk
NUMBERED_PREFIX = {"payment_methods": "PM", "status_changes": "SC", "charges": "CH", "payments": "PY",
                   "certifications": "CE", "applications": "AP"}

# Round-robin order: the first six facilities already cover every kind of zone billing must handle.
ZONES = [
    ("America/New_York", "New York"),  # northern DST
    ("Australia/Adelaide", "Adelaide"),  # half-hour offset, southern DST
    ("Asia/Tokyo", "Tokyo"),  # no DST
    ("Europe/Berlin", "Berlin"),  # northern DST (starts 2026-03-29)
    ("Pacific/Auckland", "Auckland"),  # southern DST (ends 2026-04-05)
    ("Asia/Kolkata", "Bengaluru"),  # half-hour offset, no DST
    ("America/Los_Angeles", "Los Angeles"),
    ("Australia/Sydney", "Sydney"),
    ("America/St_Johns", "St. John's"),  # half-hour offset, northern DST
    ("Asia/Kathmandu", "Kathmandu"),  # 45-minute offset
]
NEIGHBOURHOODS = ["Downtown", "Riverside", "Northgate", "Harbour", "Old Town", "University", "Parkside", "Midtown"]

# Facility settings: the first facilities take these values (so a small chain shows every
# setting), the rest draw from the weighted choices.
MONTHLY_DAY_PATTERN = [1, 31, 15, 28, 1, 30]
MONTHLY_DAYS, MONTHLY_DAY_WEIGHTS = [1, 15, 28, 30, 31], [0.5, 0.2, 0.1, 0.1, 0.1]
SWEEP_PATTERN = ["fixed", "rolling", "off", "fixed", "off", "rolling"]
SWEEP_MODES, SWEEP_WEIGHTS = ["off", "fixed", "rolling"], [0.4, 0.3, 0.3]
FIXED_SWEEP_DAYS = ["1;15", "15;31", "1", "10;25", "5;20", "31"]
ROLLING_SWEEP_DAYS = [7, 14, 30]
RETRY_PATTERN = [3, 5, None, 3, None, 5]
RETRY_DAYS, RETRY_WEIGHTS = [3, 5, None], [0.4, 0.3, 0.3]
SURCHARGE_PATTERN = [True, False, False, True, False, False]
SURCHARGE_PERCENTS = [3.0, 2.5, 3.5]


@dataclass(frozen=True)
class Plan:
    name: str
    contract_type: str
    frequency: str
    schedule: str
    dues_cents: int
    freeze_fee_cents: int | None
    weight: float  # share of contracts on this plan


PLANS = [
    Plan("Monthly Membership", "membership", "monthly", "facility", 4999, 500, 30),
    Plan("Monthly Membership Flex", "membership", "monthly", "contract", 5999, 500, 12),
    Plan("Weekly Membership", "membership", "weekly", "facility", 1500, None, 4),
    Plan("Weekly Membership Flex", "membership", "weekly", "contract", 1700, 0, 3),
    Plan("Biweekly Membership", "membership", "biweekly", "facility", 2900, 300, 4),
    Plan("Biweekly Membership Flex", "membership", "biweekly", "contract", 3200, None, 3),
    Plan("Quarterly Membership", "membership", "quarterly", "facility", 13900, 1500, 3),
    Plan("Quarterly Membership Flex", "membership", "quarterly", "contract", 14900, None, 2),
    Plan("Annual Membership", "membership", "yearly", "facility", 39900, 2500, 4),
    Plan("Annual Membership Flex", "membership", "yearly", "contract", 44900, 0, 3),
    Plan("Premium Monthly Membership", "membership", "monthly", "facility", 8999, 1000, 8),
    Plan("Swim Program", "program", "monthly", "contract", 3500, None, 4),
    Plan("Personal Training Program", "program", "weekly", "contract", 6000, None, 2),
    Plan("Kids Club Program", "program", "biweekly", "facility", 2500, None, 2),
    Plan("Yoga Program", "program", "quarterly", "contract", 9900, None, 2),
    Plan("Class Pass", "pass", "monthly", "contract", 8000, None, 3),
    Plan("Annual Day Pass", "pass", "yearly", "facility", 15000, None, 2),
    Plan("Locker Rental", "other", "monthly", "facility", 1500, 0, 3),
    Plan("Towel Service", "other", "weekly", "contract", 1500, None, 1),
    Plan("Parking", "other", "quarterly", "facility", 4500, None, 1),
]
PLAN_IDS = [f"P{i:03d}" for i in range(1, len(PLANS) + 1)]
UNKNOWN_PLAN = "P-UNKNOWN"
# First-bill-date windows (days after `start`) of migrated contracts, by frequency group.
FREQUENCY_GROUP = {"weekly": 0, "biweekly": 0, "monthly": 1, "quarterly": 2, "yearly": 3}
FIRST_BILL_WINDOW = [(-3, 14), (-3, 35), (-3, 92), (-3, 365)]

STATUS_WEIGHTS = {"pending": 0.03, "active": 0.80, "frozen": 0.05, "terminated": 0.06, "concluded": 0.06}
PENDING, ACTIVE, FROZEN, TERMINATED, CONCLUDED = (CONTRACT_STATUSES.index(s) for s in
                                                  ("pending", "active", "frozen", "terminated", "concluded"))
MIGRATED_AFTER_DAYS = 60  # contracts older than this come with a first_bill_date

DECLINE_TOKENS = ["decline_insufficient_funds", "decline_do_not_honor", "decline_expired_card"]
ERROR_TOKENS = ["error_timeout", "error_processor_unavailable"]
PRODUCTS = [  # product_id, lowest and highest price in cents, weight
    ("RETAIL-WATER", 200, 500, 25),
    ("RETAIL-PROTEIN-BAR", 300, 900, 20),
    ("RETAIL-APPAREL", 1500, 8000, 10),
    ("PT-SESSION", 5000, 20000, 15),
    ("TOWEL-RENTAL", 200, 600, 10),
    ("GUEST-PASS", 1000, 2500, 10),
    ("LATE-FEE", 1000, 2500, 10),
]
PAYMENT_CHANNELS, CHANNEL_WEIGHTS = ["terminal", "signup", "manual"], [0.5, 0.2, 0.3]

CERTIFICATION_TYPES = pl.DataFrame(
    {
        "certification_type": ["CPR", "FIRST-AID", "PERSONAL-TRAINER", "GROUP-FITNESS"],
        "validity_months": [12, 24, 24, 12],
        "renewal_fee_cents": [2500, 3500, 9900, 4900],
        "reminder_days_before": [30, 45, 60, 30],
        "grace_days": [30, 60, 30, 14],
    }
)
CERTIFICATION_STATUSES, CERTIFICATION_WEIGHTS = ["active", "lapsed", "dropped"], [0.7, 0.2, 0.1]
APPLICATION_STATUSES, APPLICATION_WEIGHTS = ["submitted", "approved", "active", "rejected"], [0.3, 0.35, 0.2, 0.15]

FIRST_NAMES = (
    "Olivia Liam Emma Noah Amelia Oliver Sophia Elijah Mia James Charlotte Lucas Aiko Hiro Yuki Sora Priya "
    "Arjun Ananya Rohan Lena Jonas Mia Felix Hannah Paul Chloe Jack Isla Cooper Ruby Mateo Sofia Diego "
    "Valentina Aroha Nikau Mere Tane Grace Henry Zoe Leo Ava Ethan Nora Omar Layla Samir Fatima Kwame Amara"
).split()
LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Martinez Lopez Wilson Anderson Taylor Thomas Moore "
    "Sato Suzuki Takahashi Tanaka Watanabe Sharma Patel Iyer Reddy Gupta Muller Schmidt Schneider Fischer "
    "Weber Meyer Wagner Nguyen Tran Kelly Walker Hall Young King Wright Ngata Parata Tipene Okafor Mensah"
).split()
EMAIL_DOMAINS = ["example.com", "example.org", "example.net"]
TOKEN_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)


def generate(
    out: Path,
    contracts: int = 20_000,
    facilities: int = 12,
    seed: int = 7,
    start: dt.date = dt.date(2026, 3, 28),
    fmt: str = "parquet",
    progress: bool = True,
) -> dict[str, int]:
    """Writes one file per input table to `out`; returns the rows written per table.

    `start` is the first business date the demo bills; the data is shaped for about a week from it
    (status changes, charges and payments in that window, migrated contracts first billed in it).
    The same arguments give byte-identical files. An existing file of the other format for the same
    table is removed, so the folder holds exactly one file per table.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', not {fmt!r}")
    if contracts < 1 or facilities < 1:
        raise ValueError("contracts and facilities must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    day0 = (start - EPOCH).days
    chain = _chain(seed, facilities, day0)
    n_customers = max(1, contracts * CUSTOMERS_PER_CONTRACT[0] // CUSTOMERS_PER_CONTRACT[1])
    n_members = max(MIN_MEMBERS, contracts // 10)
    offsets = dict.fromkeys(NUMBERED_PREFIX, 0)  # ids of tables whose chunk sizes are random
    with ExitStack() as stack:
        sinks = {name: stack.enter_context(_Sink(out, name, fmt)) for name in TABLES}
        sinks["facilities"].write(chain.facilities)
        sinks["plans"].write(_plans())
        sinks["certification_types"].write(CERTIFICATION_TYPES)
        bar = stack.enter_context(tqdm(total=contracts, unit="contract", unit_scale=True,
                                       desc="demo data", disable=not progress))
        for index, k0 in enumerate(range(0, contracts, CHUNK_CONTRACTS)):
            k1 = min(contracts, k0 + CHUNK_CONTRACTS)
            c0, c1 = n_customers * k0 // contracts, n_customers * k1 // contracts
            m0, m1 = n_members * k0 // contracts, n_members * k1 // contracts
            frames = _customer_chunk(seed, index, chain, day0, (k0, k1), (c0, c1), n_customers)
            frames |= _member_chunk(seed, index, day0, (m0, m1))
            for name, frame in frames.items():
                if name in offsets:
                    frame = _with_ids(frame, TABLES[name].key, NUMBERED_PREFIX[name], offsets[name])
                    offsets[name] += frame.height
                sinks[name].write(frame)
            bar.update(k1 - k0)
    return {name: sink.rows for name, sink in sinks.items()}


# --- writing ---------------------------------------------------------------------------------

def _arrow_type(dtype: pl.DataType) -> pa.DataType:
    if dtype == pl.Datetime:
        return pa.timestamp("us")
    return {pl.String: pa.string(), pl.Int64: pa.int64(), pl.Float64: pa.float64(),
            pl.Boolean: pa.bool_(), pl.Date: pa.date32()}[dtype]


class _Sink:
    """One table's file, written chunk by chunk with exactly the contract's columns and types."""

    def __init__(self, out: Path, name: str, fmt: str):
        self.dtypes = TABLES[name].dtypes
        self.path = out / f"{name}.{fmt}"
        self.fmt = fmt
        self.rows = 0
        self.schema = pa.schema([(c, _arrow_type(t)) for c, t in self.dtypes.items()])

    def __enter__(self) -> _Sink:
        other = self.path.with_suffix(".csv" if self.fmt == "parquet" else ".parquet")
        other.unlink(missing_ok=True)
        if self.fmt == "parquet":
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        else:
            self.file = open(self.path, "wb")
            pl.DataFrame(schema=self.dtypes).write_csv(self.file)
        return self

    def write(self, frame: pl.DataFrame) -> None:
        frame = frame.select(list(self.dtypes)).cast(self.dtypes)
        if self.fmt == "parquet":
            self.writer.write_table(frame.to_arrow().cast(self.schema))
        else:
            frame.write_csv(self.file, include_header=False, date_format="%Y-%m-%d",
                            datetime_format=CSV_DATETIME)
        self.rows += frame.height

    def __exit__(self, *exc: object) -> None:
        if self.fmt == "parquet":
            self.writer.close()
        else:
            self.file.close()


# --- helpers ---------------------------------------------------------------------------------

def _rng(seed: int, *key: int) -> np.random.Generator:
    """A generator for one part of the data, independent of how much of anything else is made."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _ids(prefix: str, numbers: np.ndarray | pl.Series, width: int) -> pl.Series:
    return pl.select(pl.lit(prefix) + pl.Series(numbers).cast(pl.String).str.zfill(width)).to_series()


def _with_ids(frame: pl.DataFrame, key: str, prefix: str, offset: int) -> pl.DataFrame:
    numbers = np.arange(offset + 1, offset + frame.height + 1, dtype=np.int64)
    return frame.with_columns(_ids(prefix, numbers, 8).alias(key))


def _lookup(values: Sequence, codes: np.ndarray, dtype: pl.DataType = pl.String) -> pl.Series:
    return pl.Series(values, dtype=dtype).gather(pl.Series(codes.astype(np.int64)))


def _dates(days: np.ndarray, valid: np.ndarray | None = None) -> pl.Series:
    """Days since 1970-01-01 as a Date column; null where `valid` is False."""
    array = pa.array(days.astype(np.int32), mask=None if valid is None else ~valid)
    return pl.Series(array).cast(pl.Date)


def _ints(values: np.ndarray, valid: np.ndarray | None = None) -> pl.Series:
    return pl.Series(pa.array(values.astype(np.int64), mask=None if valid is None else ~valid))


def _pick(rng: np.random.Generator, candidates: np.ndarray, shares: Sequence[float]) -> list[np.ndarray]:
    """Disjoint random subsets of `candidates`, one per share; at least one each while they last."""
    perm = rng.permutation(candidates)
    picked, pos = [], 0
    for share in shares:
        k = min(max(1, round(share * len(candidates))), len(perm) - pos)
        picked.append(np.sort(perm[pos:pos + k]))
        pos += k
    return picked


def _uniform_days(rng: np.random.Generator, low: np.ndarray | int, high: np.ndarray | int, n: int) -> np.ndarray:
    """A day in [low, high] (inclusive, per row), uniformly."""
    return low + (rng.random(n) * (np.asarray(high) - low + 1)).astype(np.int64)


def _month_end(months: np.ndarray) -> np.ndarray:
    """Last day (days since epoch) of each datetime64[M] month."""
    return ((months + 1).astype("datetime64[D]") - 1).astype(np.int64)


def _people(rng: np.random.Generator, numbers: np.ndarray, null_email_share: float) -> tuple[pl.Series, pl.Series]:
    first = rng.integers(0, len(FIRST_NAMES), len(numbers))
    last = rng.integers(0, len(LAST_NAMES), len(numbers))
    domain = rng.integers(0, len(EMAIL_DOMAINS), len(numbers))
    frame = pl.DataFrame({"first": _lookup(FIRST_NAMES, first), "last": _lookup(LAST_NAMES, last),
                          "domain": _lookup(EMAIL_DOMAINS, domain), "n": numbers,
                          "has_email": rng.random(len(numbers)) >= null_email_share})
    result = frame.select(
        name=pl.concat_str("first", pl.lit(" "), "last"),
        email=pl.when("has_email").then(pl.concat_str(
            pl.col("first").str.to_lowercase(), pl.lit("."), pl.col("last").str.to_lowercase(),
            pl.col("n").cast(pl.String), pl.lit("@"), "domain")),
    )
    return result["name"], result["email"]


def _tokens(rng: np.random.Generator, n: int) -> pl.Series:
    chars = TOKEN_ALPHABET[rng.integers(0, len(TOKEN_ALPHABET), (n, 8))]
    random_part = pl.Series(np.frombuffer(chars.tobytes(), dtype="S8")).cast(pl.String)
    return pl.select(pl.lit("tok_") + random_part).to_series()


# --- the chain: facilities and plans ---------------------------------------------------------

@dataclass(frozen=True)
class _Chain:
    facilities: pl.DataFrame
    weights: np.ndarray  # share of customers per facility
    # Per frequency group: facility bill dates usable as a first bill date, padded, and their count.
    first_bill_days: list[np.ndarray]
    first_bill_counts: list[np.ndarray]


def _patterned(rng: np.random.Generator, n: int, pattern: list, values: list, weights: list) -> list:
    drawn = [values[i] for i in rng.choice(len(values), size=n, p=np.asarray(weights) / sum(weights))]
    return pattern[:n] + drawn[len(pattern):]


def _chain(seed: int, n: int, day0: int) -> _Chain:
    rng = _rng(seed, 0)
    numbers = np.arange(1, n + 1)
    zone = numbers - 1
    sweep = _patterned(rng, n, SWEEP_PATTERN, SWEEP_MODES, SWEEP_WEIGHTS)
    surcharge = _patterned(rng, n, SURCHARGE_PATTERN, [True, False], [0.3, 0.7])
    fixed_days = rng.integers(0, len(FIXED_SWEEP_DAYS), n)
    rolling_days = rng.integers(0, len(ROLLING_SWEEP_DAYS), n)
    percents = rng.integers(0, len(SURCHARGE_PERCENTS), n)
    active_only = rng.random(n) < 0.5
    active_only[:2] = [True, False][:n]
    weekly_day = rng.integers(1, 8, n)
    monthly_day = _patterned(rng, n, MONTHLY_DAY_PATTERN, MONTHLY_DAYS, MONTHLY_DAY_WEIGHTS)
    labels = [f"f{i:03d}" for i in numbers]
    facilities = pl.DataFrame({
        "facility_id": [f"F{i:03d}" for i in numbers],
        "name": [f"{ZONES[z % len(ZONES)][1]} {NEIGHBOURHOODS[(z // len(ZONES)) % len(NEIGHBOURHOODS)]}"
                 f" Club {i:03d}" for z, i in zip(zone, numbers)],
        "timezone": [ZONES[z % len(ZONES)][0] for z in zone],
        "weekly_billing_day": weekly_day,
        "monthly_billing_day": monthly_day,
        "sweep_mode": sweep,
        "fixed_sweep_days": [FIXED_SWEEP_DAYS[d] if m == "fixed" else None for m, d in zip(sweep, fixed_days)],
        "rolling_sweep_days": [ROLLING_SWEEP_DAYS[d] if m == "rolling" else None
                               for m, d in zip(sweep, rolling_days)],
        "retry_declined_after_days": _patterned(rng, n, RETRY_PATTERN, RETRY_DAYS, RETRY_WEIGHTS),
        "active_contracts_only": active_only,
        "surcharge_enabled": surcharge,
        "surcharge_product_id": ["SURCHARGE" if s else None for s in surcharge],
        "surcharge_percent": [SURCHARGE_PERCENTS[p] if s else None for s, p in zip(surcharge, percents)],
        "report_recipients": [f"billing@{f}.example;manager@{f}.example" for f in labels],
    }, schema_overrides=TABLES["facilities"].dtypes)
    weights = rng.gamma(4.0, size=n)
    days, counts = _facility_bill_days(weekly_day, monthly_day, day0)
    return _Chain(facilities, weights / weights.sum(), days, counts)


def _facility_bill_days(weekly_day: np.ndarray, monthly_day: list[int], day0: int
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each facility's own bill dates inside each first-bill window (a loop over facilities only)."""
    first, last = EPOCH + dt.timedelta(day0 - 3), EPOCH + dt.timedelta(day0 + 366)
    months = [(y, m) for y in range(first.year, last.year + 1) for m in range(1, 13)
              if (first.year, first.month) <= (y, m) <= (last.year, last.month)]
    per_group: list[list[list[int]]] = [[] for _ in FIRST_BILL_WINDOW]
    for wday, mday in zip(weekly_day, monthly_day):
        monthly = [(dt.date(y, m, min(mday, calendar.monthrange(y, m)[1])) - EPOCH).days for y, m in months]
        # ISO weekday of a day number: 1970-01-01 was a Thursday (4).
        weekly = [d for d in range(day0 - 3, day0 + 15) if (d + 3) % 7 + 1 == wday]
        for group, (lo, hi) in enumerate(FIRST_BILL_WINDOW):
            pool = weekly if group == 0 else monthly
            per_group[group].append([d for d in pool if day0 + lo <= d <= day0 + hi])
    days, counts = [], []
    for lists in per_group:
        width = max(len(x) for x in lists)
        days.append(np.array([x + [x[-1]] * (width - len(x)) for x in lists], dtype=np.int64))
        counts.append(np.array([len(x) for x in lists], dtype=np.int64))
    return days, counts


def _plans() -> pl.DataFrame:
    return pl.DataFrame({
        "plan_id": PLAN_IDS,
        "name": [p.name for p in PLANS],
        "contract_type": [p.contract_type for p in PLANS],
        "frequency": [p.frequency for p in PLANS],
        "schedule": [p.schedule for p in PLANS],
        "dues_cents": [p.dues_cents for p in PLANS],
        "freeze_fee_cents": [p.freeze_fee_cents for p in PLANS],
    }, schema_overrides=TABLES["plans"].dtypes)


# --- one chunk of customers and everything that hangs off them --------------------------------

def _customer_chunk(seed: int, index: int, chain: _Chain, day0: int, contract_range: tuple[int, int],
                    customer_range: tuple[int, int], n_customers: int) -> dict[str, pl.DataFrame]:
    (k0, k1), (c0, c1) = contract_range, customer_range
    rng = [_rng(seed, 1, index, part) for part in range(6)]
    home = rng[0].choice(chain.facilities.height, size=c1 - c0, p=chain.weights)
    names, emails = _people(rng[0], np.arange(c0 + 1, c1 + 1), null_email_share=0.04)
    facility_ids = chain.facilities["facility_id"]
    customers = pl.DataFrame({
        "customer_id": _ids("CU", np.arange(c0 + 1, c1 + 1), 8),
        "facility_id": facility_ids.gather(pl.Series(home)),
        "name": names,
        "email": emails,
    })
    con = _contracts(rng[1], chain, day0, k1 - k0, home)
    contracts = pl.DataFrame({
        "contract_id": _ids("CT", np.arange(k0 + 1, k1 + 1), 8),
        "customer_id": _ids("CU", np.where(con["unknown_customer"], n_customers + k0 + np.arange(k1 - k0) + 1,
                                           c0 + con["owner"] + 1), 8),
        "facility_id": facility_ids.gather(pl.Series(home[con["owner"]])),
        "plan_id": _lookup(PLAN_IDS + [UNKNOWN_PLAN], con["plan"]),
        "status": _lookup(CONTRACT_STATUSES, con["status"]),
        "start_date": _dates(con["start"]),
        "end_date": _dates(con["end"], con["end"] != NO_DAY),
        "first_bill_date": _dates(con["first_bill"], con["first_bill"] != NO_DAY),
        "dues_cents": _ints(con["dues"], con["dues"] != NO_DUES),
    })
    customer_ids, contract_ids = customers["customer_id"], contracts["contract_id"]
    return {
        "customers": customers,
        "contracts": contracts,
        "payment_methods": _payment_methods(rng[2], day0, customer_ids),
        "status_changes": _status_changes(rng[3], day0, con, contract_ids),
        "charges": _customer_items(rng[4], day0, customers, share=0.10, kind="charges"),
        "payments": _customer_items(rng[5], day0, customers, share=0.06, kind="payments"),
    }


def _contracts(rng: np.random.Generator, chain: _Chain, day0: int, n: int, home: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Contracts of one chunk as numpy columns (codes and day numbers), sorted by customer."""
    n_cust = len(home)
    second_owner = rng.choice(n_cust, size=n - n_cust, replace=False)
    owner = np.concatenate([np.arange(n_cust), second_owner])
    order = np.argsort(owner, kind="stable")
    owner, second = owner[order], order >= n_cust  # a second contract directly follows its first

    weights = np.array([p.weight for p in PLANS])
    plan = rng.choice(len(PLANS), size=n, p=weights / weights.sum())
    same = second & (plan == np.roll(plan, 1))
    plan[same] = (plan[same] + 1) % len(PLANS)
    status = rng.choice(len(CONTRACT_STATUSES), size=n, p=[STATUS_WEIGHTS[s] for s in CONTRACT_STATUSES])

    # Duplicates: a second contract in effect for the same plan as the first (SPEC 1.6).
    (dup,) = _pick(rng, np.flatnonzero(second), [0.001 * n_cust / max(1, second.sum())])
    plan[dup] = plan[dup - 1]
    status[dup] = status[dup - 1] = ACTIVE
    in_dup = np.zeros(n, dtype=bool)
    in_dup[dup] = in_dup[dup - 1] = True

    age = rng.integers(1, 3 * 365 + 1, n)  # days before `start`
    concluded = status == CONCLUDED
    age[concluded] = rng.integers(90, 3 * 365 + 1, concluded.sum())
    start = day0 - age
    pending = status == PENDING
    start[pending] = day0 + rng.integers(1, 21, pending.sum())

    end = np.full(n, NO_DAY, dtype=np.int64)
    end[concluded] = _uniform_days(rng, start[concluded] + 30, day0 - 1, concluded.sum())
    ended = (status == TERMINATED) & (rng.random(n) < 0.5)
    end[ended] = _uniform_days(rng, start[ended], day0 - 1, ended.sum())
    fixed_term = (status == ACTIVE) & ~in_dup & (rng.random(n) < 0.08)
    end[fixed_term] = day0 + rng.integers(1, 366, fixed_term.sum())

    first_bill = _first_bill_dates(rng, chain, day0, plan, home[owner], start, pending)

    dues = np.full(n, NO_DUES, dtype=np.int64)
    plan_dues = np.array([p.dues_cents for p in PLANS])
    u = rng.random(n)
    override = u < 0.05
    factor = np.array([0.5, 0.75, 0.9])[rng.integers(0, 3, n)]
    dues[override] = (np.round(plan_dues[plan] * factor / 100) * 100).astype(np.int64)[override]
    dues[(u >= 0.05) & (u < 0.053)] = 0  # complimentary memberships

    # Records that are wrong for billing but valid for the schema: dues posting errors (SPEC 1.3),
    # on contracts first billed in the demo's first days so the errors show up in a short demo.
    ok = (status == ACTIVE) & ~in_dup & (end == NO_DAY)
    due_soon = ok & (first_bill >= day0 - 3) & (first_bill <= day0 + 7)
    unknown_plan, negative, bad_dates, unknown_customer = _pick(
        rng, np.flatnonzero(due_soon), [0.001 * n / max(1, due_soon.sum())] * 4)
    plan[unknown_plan] = len(PLANS)
    dues[negative] = -rng.integers(1, 51, len(negative)) * 100
    end[bad_dates] = start[bad_dates] - rng.integers(1, 31, len(bad_dates))
    taken = np.zeros(n, dtype=bool)
    taken[np.concatenate([unknown_plan, negative, bad_dates, unknown_customer])] = True
    frequent = np.isin(plan, [i for i, p in enumerate(PLANS) if p.frequency in ("weekly", "biweekly", "monthly")])
    old = ok & ~taken & frequent & (start <= day0 - 400)
    (never_billed,) = _pick(rng, np.flatnonzero(old), [0.0005 * n / max(1, old.sum())])
    first_bill[never_billed] = NO_DAY  # more than 12 missed periods

    unknown = np.zeros(n, dtype=bool)
    unknown[unknown_customer] = True
    return {"owner": owner, "plan": plan, "status": status, "start": start, "end": end,
            "first_bill": first_bill, "dues": dues, "unknown_customer": unknown}


def _first_bill_dates(rng: np.random.Generator, chain: _Chain, day0: int, plan: np.ndarray,
                      facility: np.ndarray, start: np.ndarray, pending: np.ndarray) -> np.ndarray:
    """Migrated contracts are first billed in the demo's first weeks; recent ones follow their schedule."""
    n = len(plan)
    migrated = ~pending & (start <= day0 - MIGRATED_AFTER_DAYS - 1)
    group = np.array([FREQUENCY_GROUP[p.frequency] for p in PLANS])[plan]
    on_facility_day = np.array([p.schedule == "facility" for p in PLANS])[plan]
    first_bill = np.full(n, NO_DAY, dtype=np.int64)
    u = rng.random(n)
    for g, (lo, hi) in enumerate(FIRST_BILL_WINDOW):
        rows = migrated & (group == g)
        fac_rows = rows & on_facility_day
        f = facility[fac_rows]
        choice = (u[fac_rows] * chain.first_bill_counts[g][f]).astype(np.int64)
        first_bill[fac_rows] = chain.first_bill_days[g][f, choice]
        own_rows = rows & ~on_facility_day
        first_bill[own_rows] = day0 + lo + (u[own_rows] * (hi - lo + 1)).astype(np.int64)
    return first_bill


def _payment_methods(rng: np.random.Generator, day0: int, customer_ids: pl.Series) -> pl.DataFrame:
    n = len(customer_ids)
    none, expired, removed = _pick(rng, np.arange(n), [0.002, 0.001, 0.001])
    has_default = np.ones(n, dtype=bool)
    has_default[none] = False
    default_owner = np.flatnonzero(has_default)
    extra_owner = default_owner[rng.random(len(default_owner)) < 0.12]
    owner = np.concatenate([default_owner, extra_owner])
    is_default = np.arange(len(owner)) < len(default_owner)
    m = len(owner)

    card = rng.random(m) < np.where(is_default, 0.85, 0.7)
    is_expired = np.zeros(m, dtype=bool)
    is_expired[:len(default_owner)] = np.isin(default_owner, expired)
    card |= is_expired
    is_removed = np.where(is_default, np.isin(owner, removed), rng.random(m) < 0.3)

    this_month = np.datetime64(EPOCH + dt.timedelta(day0), "M")
    expires = _month_end(this_month + rng.integers(2, 60, m))
    expires[is_expired] = _month_end(this_month - rng.integers(1, 25, is_expired.sum()))

    tokens = _tokens(rng, m)
    declined, errored = _pick(rng, np.arange(len(default_owner)), [0.03, 0.003])
    special = np.full(m, -1)
    special[declined] = rng.integers(0, len(DECLINE_TOKENS), len(declined))
    special[errored] = len(DECLINE_TOKENS) + rng.integers(0, len(ERROR_TOKENS), len(errored))
    specials = _lookup(DECLINE_TOKENS + ERROR_TOKENS, np.maximum(special, 0))
    tokens = pl.select(pl.when(pl.Series(special >= 0)).then(specials).otherwise(tokens)).to_series()

    frame = pl.DataFrame({
        "customer_id": customer_ids.gather(pl.Series(owner)),
        "kind": _lookup(["ach", "card"], card.astype(np.int64)),
        "token": tokens,
        "is_default": is_default,
        "expires_on": _dates(expires, card),
        "removed": is_removed,
        "_owner": owner,
    })
    return frame.sort("_owner", maintain_order=True).drop("_owner")


def _status_changes(rng: np.random.Generator, day0: int, con: dict[str, np.ndarray],
                    contract_ids: pl.Series) -> pl.DataFrame:
    """Freezes, thaws and terminations, before `start` and in the demo window [start, start + 10]."""
    status, start = con["status"], con["start"]
    active = np.flatnonzero((status == ACTIVE) & (start <= day0 - 30))
    frozen = np.flatnonzero(status == FROZEN)
    past_pair, freeze, terminate, past_terminate, same_day, thaw_active, freeze_after_end = _pick(
        rng, active, [0.02, 0.015, 0.01, 0.005, 0.002, 0.001, 0.001])
    thaw, terminate_frozen = _pick(rng, frozen, [0.35, 0.03])
    rows: list[tuple[np.ndarray, str, np.ndarray, np.ndarray]] = []  # contract, kind, effective, requested

    def window(idx: np.ndarray, last: int = 10) -> np.ndarray:
        return day0 + rng.integers(0, last + 1, len(idx))

    def requested(effective: np.ndarray, earliest: np.ndarray | None = None) -> np.ndarray:
        day = effective - rng.integers(0, 15, len(effective))
        if earliest is not None:
            day = np.maximum(day, earliest)
        return day * DAY_US + rng.integers(7 * 3600, 21 * 3600, len(effective)) * 1_000_000

    # A freeze and a thaw in the past: in effect again by `start`.
    span = np.minimum(day0 - 1 - start[past_pair], 365)
    frozen_on = day0 - span + (rng.random(len(past_pair)) * (span - 1)).astype(np.int64)
    thawed_on = frozen_on + 1 + (rng.random(len(past_pair)) * np.minimum(day0 - 1 - frozen_on, 90)).astype(np.int64)
    rows += [(past_pair, "freeze", frozen_on, requested(frozen_on)),
             (past_pair, "thaw", thawed_on, requested(thawed_on, frozen_on))]
    # Freezes in the window, half of them thawed again before it ends.
    frozen_on = window(freeze)
    thawed = frozen_on < day0 + 10
    thawed[::2] = False
    thawed_on = _uniform_days(rng, frozen_on[thawed] + 1, day0 + 10, thawed.sum())
    rows += [(freeze, "freeze", frozen_on, requested(frozen_on)),
             (freeze[thawed], "thaw", thawed_on, requested(thawed_on, frozen_on[thawed]))]
    ended_on = window(terminate)
    rows.append((terminate, "terminate", ended_on, requested(ended_on)))
    ended_on = day0 - 1 - (rng.random(len(past_terminate))
                           * np.minimum(day0 - 1 - start[past_terminate], 200)).astype(np.int64)
    rows.append((past_terminate, "terminate", ended_on, requested(ended_on)))
    # Freeze and thaw on the same day; a third requested thaw first (that thaw does not apply).
    on = window(same_day)
    first = (on - rng.integers(0, 8, len(on))) * DAY_US + rng.integers(7 * 3600, 12 * 3600, len(on)) * 1_000_000
    later = first + rng.integers(3600, 8 * 3600, len(on)) * 1_000_000
    thaw_first = np.arange(len(on)) % 3 == 2
    rows += [(same_day, "freeze", on, np.where(thaw_first, later, first)),
             (same_day, "thaw", on, np.where(thaw_first, first, later))]
    # Changes that do not apply: thaw of an active contract, freeze after a termination.
    on = window(thaw_active)
    rows.append((thaw_active, "thaw", on, requested(on)))
    ended_on = window(freeze_after_end, last=8)
    frozen_on = ended_on + rng.integers(1, 3, len(ended_on))
    rows += [(freeze_after_end, "terminate", ended_on, requested(ended_on)),
             (freeze_after_end, "freeze", frozen_on, requested(frozen_on, ended_on + 1))]
    # Frozen contracts thawed or terminated in the window.
    on = window(thaw)
    rows.append((thaw, "thaw", on, requested(on)))
    on = window(terminate_frozen)
    rows.append((terminate_frozen, "terminate", on, requested(on)))

    kinds = ["freeze", "thaw", "terminate"]
    contract = np.concatenate([r[0] for r in rows])
    frame = pl.DataFrame({
        "contract_id": contract_ids.gather(pl.Series(contract)),
        "kind": _lookup(kinds, np.concatenate([np.full(len(r[0]), kinds.index(r[1])) for r in rows])),
        "effective_date": _dates(np.concatenate([r[2] for r in rows])),
        "requested_at": pl.Series(np.concatenate([r[3] for r in rows])).cast(pl.Datetime("us")),
        "_contract": contract,
    })
    order = ["requested_at", "_contract", "effective_date", "kind"]
    return frame.sort(order, maintain_order=True).drop("_contract")


def _customer_items(rng: np.random.Generator, day0: int, customers: pl.DataFrame, share: float,
                    kind: str) -> pl.DataFrame:
    """Retail charges or counter payments for a share of customers, dated around the window."""
    holders = np.flatnonzero(rng.random(customers.height) < share)
    count = 1 + (rng.random(len(holders)) < 0.4) + (rng.random(len(holders)) < 0.15)
    owner = np.repeat(holders, count)
    n = len(owner)
    dated = _uniform_days(rng, day0 - 30, day0 + 9, n)
    frame = pl.DataFrame({"customer_id": customers["customer_id"].gather(pl.Series(owner)),
                          "facility_id": customers["facility_id"].gather(pl.Series(owner))})
    if kind == "payments":
        channel = rng.choice(len(PAYMENT_CHANNELS), size=n, p=CHANNEL_WEIGHTS)
        return frame.with_columns(amount_cents=_ints(500 + rng.integers(0, 146, n) * 100),
                                  paid_date=_dates(dated), channel=_lookup(PAYMENT_CHANNELS, channel))
    weights = np.array([p[3] for p in PRODUCTS], dtype=float)
    product = rng.choice(len(PRODUCTS), size=n, p=weights / weights.sum())
    low, high = np.array([p[1] for p in PRODUCTS])[product], np.array([p[2] for p in PRODUCTS])[product]
    amount = low + (rng.random(n) * ((high - low) // 50 + 1)).astype(np.int64) * 50
    return frame.with_columns(product_id=_lookup([p[0] for p in PRODUCTS], product), amount_cents=_ints(amount),
                              posted_date=_dates(dated), due_date=_dates(dated + rng.integers(0, 15, n)))


# --- certifying association: members, certifications, applications --------------------------

def _member_chunk(seed: int, index: int, day0: int, member_range: tuple[int, int]) -> dict[str, pl.DataFrame]:
    m0, m1 = member_range
    rng = _rng(seed, 2, index)
    n = m1 - m0
    names, emails = _people(rng, np.arange(m0 + 1, m1 + 1), null_email_share=0.05)
    member_ids = _ids("M", np.arange(m0 + 1, m1 + 1), 7)
    types = CERTIFICATION_TYPES["certification_type"]
    n_types = len(types)

    two = rng.random(n) < 0.3
    member = np.concatenate([np.arange(n), np.flatnonzero(two)])
    first_type = rng.integers(0, n_types, n)
    ctype = np.concatenate([first_type, (first_type[two] + rng.integers(1, n_types, two.sum())) % n_types])
    order = np.argsort(member, kind="stable")
    member, ctype = member[order], ctype[order]
    c = len(member)
    status = rng.choice(len(CERTIFICATION_STATUSES), size=c, p=CERTIFICATION_WEIGHTS)
    expires = np.select([status == 0, status == 1],
                        [day0 + rng.integers(-20, 366, c), day0 - rng.integers(1, 201, c)],
                        day0 - rng.integers(90, 731, c))
    certifications = pl.DataFrame({
        "member_id": member_ids.gather(pl.Series(member)),
        "certification_type": types.gather(pl.Series(ctype)),
        "status": _lookup(CERTIFICATION_STATUSES, status),
        "expires_on": _dates(expires),
    })

    applicant = np.flatnonzero(rng.random(n) < 0.3)
    a = len(applicant)
    app_status = rng.choice(len(APPLICATION_STATUSES), size=a, p=APPLICATION_WEIGHTS)
    approved_on = np.where(app_status == 1, day0 + rng.integers(-30, 6, a), day0 - rng.integers(31, 401, a))
    applications = pl.DataFrame({
        "member_id": member_ids.gather(pl.Series(applicant)),
        "certification_type": types.gather(pl.Series(rng.integers(0, n_types, a))),
        "status": _lookup(APPLICATION_STATUSES, app_status),
        "approved_on": _dates(approved_on, (app_status == 1) | (app_status == 2)),
    })
    members = pl.DataFrame({"member_id": member_ids, "name": names, "email": emails})
    return {"members": members, "certifications": certifications, "applications": applications}
