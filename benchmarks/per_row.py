"""Baseline: dues posting and billable selection as plain per-row Python (SPEC 1.1-1.4, 1.6).

A faithful, straightforward row-by-row version of what `rules/contract_status.py`,
`rules/dues.py`, `rules/prebilling.py` and `rules/billable.py` compute for ONE business date,
every facility, with an empty ledger (a fresh warehouse, as in the cycle benchmark):

  status    (maintenance)  per contract: apply its status changes in order, build its status
                           timeline, status on D
  dues                     per contract: bill dates (facility / rolling schedules, month-end
                           clamping, first_bill_date), status on each bill date, dues or freeze
                           fee, catch-up, data errors, duplicate holds, too many missed periods
  billable                 per customer: balance due now (charges, payments, tonight's dues),
                           reasons (dues_posted, sweeps; no retries on an empty history),
                           active_contracts_only, usable payment method, holds, window blocks

It mirrors the rules as of commit 2df6166 (billing windows end the day before a termination or
conclusion; data errors are reported for contracts alive in the export, in effect on D, or owing
periods). It is a benchmark baseline, not product code: nothing here is used by the pipeline. Rows are read
from the parquet files into Python tuples first (`read_s`, timed apart); the three phases above
are the loops that are timed against the vectorized steps.
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import datetime as dt
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import write_json

BEGINNING = dt.date.min
ONE_DAY = dt.timedelta(days=1)
IN_EFFECT = ("active", "frozen")
ALIVE = ("pending", "active", "frozen")
QUALIFYING_TYPES = ("membership", "program", "pass")
STEP_DAYS = {"weekly": 7, "biweekly": 14}
STEP_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}
CHANGE_STATUS = {"freeze": "frozen", "thaw": "active", "terminate": "terminated"}
MAX_MISSED_PERIODS = 12
EXPANSION_CAP = 400
MAX_FLAGGED_SHARE = 0.02


# --- reading ---------------------------------------------------------------------------------

COLUMNS = {
    "facilities": ["facility_id", "timezone", "weekly_billing_day", "monthly_billing_day", "sweep_mode",
                   "fixed_sweep_days", "rolling_sweep_days", "active_contracts_only"],
    "plans": ["plan_id", "contract_type", "frequency", "schedule", "dues_cents", "freeze_fee_cents"],
    "customers": ["customer_id", "facility_id"],
    "contracts": ["contract_id", "customer_id", "facility_id", "plan_id", "status", "start_date", "end_date",
                  "first_bill_date", "dues_cents"],
    "payment_methods": ["payment_method_id", "customer_id", "is_default", "expires_on", "removed"],
    "status_changes": ["change_id", "contract_id", "kind", "effective_date", "requested_at"],
    "charges": ["customer_id", "amount_cents", "posted_date", "due_date"],
    "payments": ["customer_id", "amount_cents", "paid_date"],
}


def read_rows(data: Path) -> dict[str, list[tuple]]:
    import polars as pl

    return {name: pl.read_parquet(data / f"{name}.parquet", columns=cols).rows() for name, cols in COLUMNS.items()}


# --- dates -----------------------------------------------------------------------------------

def month_index(d: dt.date) -> int:
    return d.year * 12 + d.month - 1


def clamped(month_idx: int, day: int) -> dt.date:
    year, month0 = divmod(month_idx, 12)
    return dt.date(year, month0 + 1, min(day, calendar.monthrange(year, month0 + 1)[1]))


class Schedule:
    """A contract's bill-date series: anchor + k steps, plus an extra first date (bill_dates.py)."""

    __slots__ = ("anchor", "anchor_day", "extra_first", "step_days", "step_months")

    def __init__(self, frequency: str, schedule: str, start: dt.date, first_bill: dt.date | None,
                 weekly_day: int, monthly_day: int):
        origin = first_bill if first_bill is not None else start
        if frequency in STEP_DAYS:
            facility_anchor = origin + dt.timedelta(days=(weekly_day - origin.isoweekday()) % 7)
        else:
            this_month = clamped(month_index(origin), monthly_day)
            facility_anchor = this_month if this_month >= origin else clamped(month_index(origin) + 1, monthly_day)
        rolling = schedule == "contract"
        self.anchor = origin if rolling else facility_anchor
        self.step_days = STEP_DAYS.get(frequency)
        self.step_months = STEP_MONTHS.get(frequency)
        self.anchor_day = origin.day if rolling else monthly_day
        self.extra_first = first_bill if (not rolling and first_bill is not None and first_bill < facility_anchor) \
            else None

    def nth(self, k: int) -> dt.date:
        if self.step_days is not None:
            return self.anchor + dt.timedelta(days=k * self.step_days)
        return clamped(month_index(self.anchor) + k * self.step_months, self.anchor_day)

    def count_through(self, d: dt.date) -> int:
        """How many series dates (without extra_first) are on or before d."""
        if d < self.anchor:
            return 0
        if self.step_days is not None:
            k = (d - self.anchor).days // self.step_days
        else:
            k = (month_index(d) - month_index(self.anchor)) // self.step_months
        return k + 1 - (1 if self.nth(k) > d else 0)


# --- status (maintenance) ----------------------------------------------------------------------

def timeline(base_status: str, start: dt.date, end: dt.date | None, changes: list[tuple]) -> tuple[list, list]:
    """(valid_from list, status list) of one contract; `changes` sorted by effective date, requested
    at, change id, as (effective_date, requested_at, change_id, kind)."""
    rows = [(BEGINNING, 0, base_status)]
    if base_status == "pending":
        rows.append((start, 1, "active"))
    last_freeze_thaw = None
    terminates = 0
    seq = 2
    terminated_on = None
    for effective, _requested, _change_id, kind in changes:
        if base_status in ("terminated", "concluded"):
            before = base_status
        elif end is not None and effective > end:
            before = "concluded"
        elif terminates > 0:
            before = "terminated"
        elif base_status == "pending" and effective < start:
            before = "pending"
        elif last_freeze_thaw == "freeze":
            before = "frozen"
        elif last_freeze_thaw == "thaw" or base_status == "pending":
            before = "active"
        else:
            before = base_status
        applies = ((kind == "freeze" and before == "active") or (kind == "thaw" and before == "frozen")
                   or (kind == "terminate" and before in ALIVE))
        if applies:
            rows.append((effective, seq, CHANGE_STATUS[kind]))
            seq += 1
            if kind == "terminate" and terminated_on is None:
                terminated_on = effective
        if kind in ("freeze", "thaw") and (base_status != "pending" or effective >= start):
            last_freeze_thaw = kind
        if kind == "terminate":
            terminates += 1
    if base_status in ALIVE and end is not None and (terminated_on is None or terminated_on > end):
        rows.append((end + ONE_DAY, 1_000_000, "concluded"))
    finals = [valid_from for valid_from, seq_, status in rows if seq_ > 0 and status in ("terminated", "concluded")]
    if finals:
        final = min(finals)
        rows = [r for r in rows if r[0] <= final]
    rows.sort()
    froms: list[dt.date] = []
    statuses: list[str] = []
    for valid_from, _seq, status in rows:
        if froms and froms[-1] == valid_from:
            statuses[-1] = status  # the latest row of a date wins
        else:
            froms.append(valid_from)
            statuses.append(status)
    return froms, statuses


def status_on(tl: tuple[list, list], d: dt.date) -> str:
    froms, statuses = tl
    return statuses[bisect.bisect_right(froms, d) - 1]


# --- the baseline --------------------------------------------------------------------------------

def is_fixed_sweep_day(d: dt.date, sweep_days: str | None) -> bool:
    if sweep_days is None:
        return False
    days = [int(x.strip()) for x in sweep_days.split(";")]
    month_end = d.day == calendar.monthrange(d.year, d.month)[1]
    return d.day in days or (month_end and max(days) > d.day)


def per_row_night(rows: dict[str, list[tuple]], day: dt.date) -> dict[str, Any]:
    from billing_pipeline.facility_clock import partition_key, run_instant  # per facility, not per row

    timings: dict[str, float] = {}

    # ---- status: every contract's timeline and status on D -----------------------------------
    t0 = time.perf_counter()
    facilities = {r[0]: r for r in rows["facilities"]}
    plans = {r[0]: r for r in rows["plans"]}
    home = {customer_id: facility_id for customer_id, facility_id in rows["customers"]}
    first_facility = min(facilities)
    changes_by_contract: dict[str, list[tuple]] = defaultdict(list)
    for change_id, contract_id, kind, effective, requested in rows["status_changes"]:
        changes_by_contract[contract_id].append((effective, requested, change_id, kind))
    timelines: dict[str, tuple[list, list]] = {}
    today: dict[str, str] = {}
    for contract_id, _cu, _fa, _pl, status, start, end, _fb, _du in rows["contracts"]:
        changes = changes_by_contract.get(contract_id, [])
        changes.sort()
        tl = timeline(status, start, end, changes)
        timelines[contract_id] = tl
        today[contract_id] = status_on(tl, day)
    timings["status_s"] = time.perf_counter() - t0

    # ---- dues: duplicates, bill dates, periods, errors ----------------------------------------
    t0 = time.perf_counter()
    processed = []  # (contract row, processing facility)
    in_effect_by_plan: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows["contracts"]:
        contract_id, customer_id, facility_id, plan_id = row[0], row[1], row[2], row[3]
        processing = facility_id if facility_id in facilities else home.get(customer_id)
        if processing is None or processing not in facilities:
            processing = first_facility  # neither exists: the export's first facility reports it
        processed.append((row, processing))
        if today[contract_id] in IN_EFFECT:
            in_effect_by_plan[(customer_id, plan_id)].append(contract_id)
    duplicates = {key: sorted(ids) for key, ids in in_effect_by_plan.items() if len(ids) >= 2 and key[0] in home}
    duplicate_customers = {customer_id for customer_id, _plan in duplicates}

    due_contracts: list[tuple] = []
    postings: list[tuple] = []
    errors: list[tuple] = []
    for (contract_id, customer_id, contract_facility, plan_id, exported_status, start, end, first_bill, dues_cents), \
            facility_id in processed:
        plan = plans.get(plan_id)
        amount = dues_cents if dues_cents is not None else (plan[4] if plan is not None else None)
        freeze_fee = (plan[5] if plan is not None else None) or 0
        tl = timelines[contract_id]
        codes = []
        if plan is None:
            codes.append("unknown_plan")
        if customer_id not in home:
            codes.append("unknown_customer")
        if contract_facility not in facilities:
            codes.append("unknown_facility")
        if (amount is not None and amount < 0) or freeze_fee < 0:
            codes.append("negative_amount")
        if end is not None and end < start:
            codes.append("invalid_dates")
        if customer_id in duplicate_customers:
            codes.append("duplicate_contract")

        periods = []
        too_many = None
        if plan is not None:
            f = facilities[facility_id]
            series = Schedule(plan[2], plan[3], start, first_bill, f[2], f[3])
            # Nothing bills from a termination or conclusion on: the window ends the day before.
            through = day
            for valid_from, st in zip(*tl):
                if st in ("terminated", "concluded"):
                    # ended from the beginning (the base row, at date.min): never bills
                    through = min(day, valid_from - ONE_DAY) if valid_from > BEGINNING else BEGINNING
                    break
            hi = series.count_through(through)
            extra = series.extra_first is not None and series.extra_first <= through
            n_dates = hi + (1 if extra else 0)
            if n_dates > EXPANSION_CAP:
                too_many = n_dates
            elif n_dates > 0:
                bill_dates = [series.nth(k) for k in range(hi)]
                if extra:
                    bill_dates.append(series.extra_first)
                for bill_date in bill_dates:
                    status = status_on(tl, bill_date)
                    if status == "active":
                        periods.append((day, facility_id, contract_id, customer_id, bill_date, "dues", amount))
                    elif status == "frozen" and freeze_fee > 0:
                        periods.append((day, facility_id, contract_id, customer_id, bill_date, "freeze_fee",
                                        freeze_fee))
                if len(periods) > MAX_MISSED_PERIODS:
                    too_many = len(periods)
        # Data errors are reported for contracts alive in the export, in effect on D or owing periods.
        relevant = today[contract_id] in IN_EFFECT or bool(periods) or exported_status in ALIVE
        contract_errors = [(day, facility_id, contract_id, customer_id, code) for code in codes] if relevant else []
        if too_many is not None:
            contract_errors.append((day, facility_id, contract_id, customer_id, "too_many_missed_periods"))
        errors.extend(contract_errors)
        blocking = any(e[4] != "duplicate_contract" for e in contract_errors)
        if not blocking:
            due_contracts.extend(periods)
            if not contract_errors:
                postings.extend(periods)
    timings["dues_s"] = time.perf_counter() - t0

    # ---- billable: balances, reasons, pre-billing checks, holds, blocks ------------------------
    t0 = time.perf_counter()
    charged: dict[str, int] = defaultdict(int)
    for customer_id, amount, posted, due in rows["charges"]:
        if due <= day and posted <= day:
            charged[customer_id] += amount
    paid: dict[str, int] = defaultdict(int)
    for customer_id, amount, paid_date in rows["payments"]:
        if paid_date <= day:
            paid[customer_id] += amount
    due_cents: dict[str, int] = defaultdict(int)
    for p in due_contracts:
        due_cents[p[3]] += p[6]
    posted_cents: dict[str, int] = defaultdict(int)
    for p in postings:
        posted_cents[p[3]] += p[6]  # the ledger: empty before D, tonight's dues and freeze fees
    usable: dict[str, str] = {}
    for payment_method_id, customer_id, is_default, expires_on, removed in rows["payment_methods"]:
        if is_default and not removed and (expires_on is None or day <= expires_on) and customer_id in home:
            if customer_id not in usable or payment_method_id > usable[customer_id]:
                usable[customer_id] = payment_method_id
    qualifying: set[str] = set()
    without_payment_method = []
    for (contract_id, customer_id, _fa, plan_id, _st, _start, _end, _fb, dues_cents), _facility in processed:
        if today[contract_id] not in IN_EFFECT:
            continue
        plan = plans.get(plan_id)
        if plan is not None and plan[1] in QUALIFYING_TYPES:
            qualifying.add(customer_id)
        amount = dues_cents if dues_cents is not None else (plan[4] if plan is not None else None)
        if amount is not None and amount > 0 and customer_id in home and customer_id not in usable:
            without_payment_method.append((customer_id, contract_id))
    flagged = duplicate_customers | {customer_id for customer_id, _ in without_payment_method}

    candidates = []
    for customer_id, facility_id in rows["customers"]:
        f = facilities.get(facility_id)
        if f is None:
            continue
        _fid, _tz, _wd, _md, sweep_mode, fixed_days, rolling_days, active_only = f
        balance = charged.get(customer_id, 0) - paid.get(customer_id, 0) + posted_cents.get(customer_id, 0)
        reasons = []
        if customer_id in due_cents:
            reasons.append("dues_posted")
        if sweep_mode == "fixed" and is_fixed_sweep_day(day, fixed_days):  # first billing: D alone
            reasons.append("sweep_fixed")
        if sweep_mode == "rolling" and rolling_days is not None:  # no billing history yet
            reasons.append("sweep_rolling")
        before_holds = balance + due_cents.get(customer_id, 0) - posted_cents.get(customer_id, 0)
        if reasons and before_holds > 0 and (not active_only or customer_id in qualifying):
            candidates.append((facility_id, customer_id, reasons, balance))

    window_of = {}
    for facility_id, timezone, *_ in rows["facilities"]:
        window_of[facility_id] = partition_key(run_instant(timezone, day))
    per_window: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for facility_id, customer_id, _reasons, _balance in candidates:
        counts = per_window[window_of[facility_id]]
        counts[0] += 1
        counts[1] += customer_id in flagged
    blocked_windows = {w for w, (n, k) in per_window.items() if n > 0 and k / n > MAX_FLAGGED_SHARE}

    billable = []
    sweeps = []
    for facility_id, customer_id, reasons, balance in candidates:
        if customer_id in duplicate_customers or balance <= 0:  # <= 0: billable only by held dues
            hold = "duplicate_contract"
        elif customer_id not in usable:
            hold = "no_payment_method"
        elif window_of[facility_id] in blocked_windows:
            hold = "billing_blocked"
        else:
            hold = None
        billable.append((facility_id, customer_id, tuple(reasons), balance, hold))
        for reason in reasons:
            if reason in ("sweep_fixed", "sweep_rolling"):
                sweeps.append((facility_id, customer_id, reason, balance))
    timings["billable_s"] = time.perf_counter() - t0

    return {
        "timings": timings,
        "due_contracts": due_contracts,
        "dues_postings": postings,
        "dues_posting_errors": errors,
        "duplicate_contracts": duplicates,
        "recurring_dues_without_payment_method": without_payment_method,
        "billable_customers": billable,
        "sweep_candidates": sweeps,
        "blocked_windows": sorted(blocked_windows),
    }


# --- comparison with the vectorized run -------------------------------------------------------

def counts(out: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, int] = defaultdict(int)
    for e in out["dues_posting_errors"]:
        errors[e[4]] += 1
    holds: dict[str, int] = defaultdict(int)
    for b in out["billable_customers"]:
        holds[str(b[4])] += 1
    return {
        "due_contracts": len(out["due_contracts"]),
        "dues_postings": len(out["dues_postings"]),
        "dues_posted_cents": sum(p[6] for p in out["dues_postings"]),
        "dues_posting_errors": len(out["dues_posting_errors"]),
        "dues_posting_errors_by_code": dict(sorted(errors.items())),
        "duplicate_contracts": len(out["duplicate_contracts"]),
        "recurring_dues_without_payment_method": len(out["recurring_dues_without_payment_method"]),
        "billable_customers": len(out["billable_customers"]),
        "billable_by_hold": dict(sorted(holds.items())),
        "billable_balance_cents": sum(b[3] for b in out["billable_customers"]),
        "sweep_candidates": len(out["sweep_candidates"]),
    }


def compare(out: dict[str, Any], db: Path, day: dt.date, examples: int = 5) -> dict[str, Any]:
    """Sets of keys from the vectorized run's tables vs the per-row ones: what differs, with examples."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)

    def rows(sql: str) -> set[tuple]:
        return {tuple(r) for r in con.execute(sql, [day]).fetchall()}

    vec = {
        "dues_postings": rows("SELECT contract_id, bill_date, kind, amount_cents FROM dues_postings "
                              "WHERE business_date = ?"),
        "due_contracts": rows("SELECT contract_id, bill_date, kind, amount_cents FROM due_contracts "
                              "WHERE business_date = ?"),
        "dues_posting_errors": rows("SELECT contract_id, error_code FROM dues_posting_errors WHERE business_date = ?"),
        "billable_customers": rows("SELECT customer_id, list_sort(reasons)::VARCHAR, balance_cents, "
                                   "coalesce(hold_reason, 'None') FROM billable_customers WHERE business_date = ?"),
        "sweep_candidates": rows("SELECT customer_id, reason FROM sweep_candidates WHERE business_date = ?"),
        "recurring_dues_without_payment_method": rows(
            "SELECT customer_id, contract_id FROM recurring_dues_without_payment_method WHERE business_date = ?"),
    }
    con.close()
    mine = {
        "dues_postings": {(p[2], p[4], p[5], p[6]) for p in out["dues_postings"]},
        "due_contracts": {(p[2], p[4], p[5], p[6]) for p in out["due_contracts"]},
        "dues_posting_errors": {(e[2], e[4]) for e in out["dues_posting_errors"]},
        "billable_customers": {(b[1], str(sorted(b[2])).replace("'", ""), b[3], str(b[4]))
                               for b in out["billable_customers"]},
        "sweep_candidates": {(s[1], s[2]) for s in out["sweep_candidates"]},
        "recurring_dues_without_payment_method": set(out["recurring_dues_without_payment_method"]),
    }
    report = {}
    for table in vec:
        only_vec, only_row = vec[table] - mine[table], mine[table] - vec[table]
        report[table] = {
            "vectorized": len(vec[table]), "per_row": len(mine[table]),
            "only_vectorized": len(only_vec), "only_per_row": len(only_row),
            "examples_only_vectorized": [list(map(str, r)) for r in sorted(only_vec, key=str)[:examples]],
            "examples_only_per_row": [list(map(str, r)) for r in sorted(only_row, key=str)[:examples]],
        }
    report["identical"] = all(r["only_vectorized"] == 0 and r["only_per_row"] == 0 for r in report.values())
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--date", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--compare-db", type=Path, help="the vectorized run's DuckDB file, to diff against")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()

    t0 = time.perf_counter()
    rows = read_rows(args.data)
    read_s = time.perf_counter() - t0
    out = per_row_night(rows, args.date)
    timings = {"read_s": read_s, **out["timings"]}
    timings["loops_s"] = timings["status_s"] + timings["dues_s"] + timings["billable_s"]
    result = {"size": args.size, "timings": timings, "counts": counts(out),
              "rows": {name: len(r) for name, r in rows.items()}}
    print(f"per-row {args.size}: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()), flush=True)
    if args.compare_db is not None:
        t0 = time.perf_counter()
        result["comparison"] = compare(out, args.compare_db, args.date)
        result["comparison_s"] = time.perf_counter() - t0
    write_json(args.result, result)


if __name__ == "__main__":
    main()
