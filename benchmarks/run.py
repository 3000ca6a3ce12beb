"""The benchmark harness (SPEC section 6): one command, results as JSON and a markdown table.

    .venv/bin/python -m benchmarks.run [--sizes 100000,1000000,10000000] [--skip-baseline]
                                       [--skip-charges] [--out benchmarks/results]

For each size: demo data is generated once into benchmarks/data/<size>/ (reused while its
parameters match), then one full nightly cycle for business date 2026-03-28, every facility,
gateway latency 0, a fresh DuckDB file in a temp dir, runs in a child process (benchmarks.cycle)
whose own peak RSS is read with wait4. Unless --skip-baseline, the per-row Python baseline
(benchmarks.per_row) runs on the same data in another child and is diffed against the cycle's
tables; sizes whose baseline would take longer than --per-row-max-s are extrapolated linearly
from the largest measured size. Then the charge throughput runs (benchmarks.charges).

Results: <out>/size_<N>.json per size, <out>/charges.json, and <out>/summary.md|json built from
every result file in <out> (so sizes run by separate invocations appear in one table; the
diagnostic `benchmarks.dues_stages --result <out>/dues_stages_<N>.json` is included too).
--per-row-max-gib (8) also limits the baseline: its Python objects grow linearly with the size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import generate as gen
from benchmarks.charges import DEFAULT_CONFIGS
from benchmarks.common import (
    BENCH,
    BUSINESS_DATE,
    ROOT,
    SEED,
    START,
    ChildResult,
    data_dir,
    facilities_for,
    gib,
    label,
    run_child,
    write_json,
)

TARGET_WALL_S = 30.0
TARGET_RSS_GIB = 8.0
TARGET_RATIO = 50.0
TARGET_PCT = 80.0
TARGET_SIZE = 10_000_000
STEPS = [("load_validate", "load/validate"), ("maintenance", "maintenance"), ("dues", "dues"),
         ("billable", "billable"), ("charging", "charging")]
TABLES = ["dues_postings", "due_contracts", "dues_posting_errors", "billable_customers", "sweep_candidates",
          "duplicate_contracts", "recurring_dues_without_payment_method", "billing_attempts", "ledger",
          "contract_status_log", "status_change_errors"]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def child_info(child: ChildResult) -> dict[str, Any]:
    return {"returncode": child.returncode, "process_wall_s": child.wall_s, "peak_rss_bytes": child.peak_rss_bytes,
            "peak_rss_gib": gib(child.peak_rss_bytes), "user_s": child.user_s, "sys_s": child.sys_s,
            "loadavg_before": child.loadavg_before, "loadavg_after": child.loadavg_after}


def code_version() -> dict[str, Any]:
    """The package version measured (read-only git queries): commit, and files changed since."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", "billing_pipeline")
    return {"commit": git("rev-parse", "--short", "HEAD"), "package_changes": changed.splitlines()}


def ensure_data(size: int, out: Path) -> dict[str, Any]:
    folder = data_dir(size)
    p = gen.params(size, facilities_for(size), SEED, START)
    if gen.is_complete(folder, p):
        marker = json.loads((folder / gen.MARKER).read_text())
        log(f"{label(size)}: reusing {folder.relative_to(ROOT)} (generated in {marker['generate_s']:.1f} s)")
        return {**marker, "reused": True}
    log(f"{label(size)}: generating {size:,} contracts, {p['facilities']} facilities into {folder.relative_to(ROOT)}")
    child = run_child("benchmarks.generate", ["--out", str(folder), "--contracts", str(size),
                                              "--facilities", str(p["facilities"]), "--seed", str(SEED),
                                              "--start", START.isoformat()], out / f".generate_{size}.json")
    if child.returncode != 0 or child.result is None:
        raise SystemExit(f"generating {size} failed (exit {child.returncode})")
    log(f"{label(size)}: generated in {child.result['generate_s']:.1f} s, peak RSS {gib(child.peak_rss_bytes):.2f} GiB")
    return {**child.result, "reused": False, "child": child_info(child)}


def table_counts(db: Path, day: dt.date) -> dict[str, int]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        counts = {}
        for table in TABLES:
            where = "" if table in ("ledger",) else " WHERE business_date = ?"
            counts[table] = con.execute(f"SELECT count(*) FROM {table}{where}", [day] if where else []).fetchone()[0]
        counts["dues_posting_errors_by_code"] = dict(con.execute(
            "SELECT error_code, count(*) FROM dues_posting_errors WHERE business_date = ? GROUP BY 1 ORDER BY 1",
            [day]).fetchall())
        return counts
    finally:
        con.close()


def run_cycle(size: int, db: Path, out: Path, profile: bool) -> dict[str, Any]:
    log(f"{label(size)}: nightly cycle for {BUSINESS_DATE} (every facility, latency 0, fresh DuckDB {db})")
    args = ["--data", str(data_dir(size)), "--db", str(db), "--date", BUSINESS_DATE.isoformat(),
            "--size", str(size)]
    if profile:
        py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if py_spy is None:
            raise SystemExit("--profile needs py-spy: uv pip install --python .venv/bin/python py-spy")
        profile_path = out / f"profile_{size}.txt"
        child = run_child("benchmarks.cycle", args, out / f".cycle_{size}.json",
                          wrap=[py_spy, "record", "--rate", "50", "--format", "raw", "--output", str(profile_path),
                                "--"])
    else:
        child = run_child("benchmarks.cycle", args, out / f".cycle_{size}.json")
    if child.returncode != 0 or child.result is None:
        raise SystemExit(f"the {size} cycle failed (exit {child.returncode})")
    result = {**child.result, "child": child_info(child)}
    if profile:
        # wait4 sees py-spy, not the worker it runs: use the worker's own sampled peak. Profiling
        # also slows the run down: these timings are not comparable with unprofiled ones.
        result["child"]["peak_rss_bytes"] = result["sampled_peak_rss_bytes"]
        result["child"]["peak_rss_gib"] = gib(result["sampled_peak_rss_bytes"])
        result["child"]["peak_rss_source"] = "in-process sampling every 20 ms (profiled run)"
        result["profiled"] = True
    result["tables"] = table_counts(db, BUSINESS_DATE)
    steps = ", ".join(f"{name} {result['steps_s'][key]:.2f}" for key, name in STEPS)
    log(f"{label(size)}: run_dates {result['run_dates_s']:.2f} s (process {child.wall_s:.2f} s), "
        f"peak RSS {gib(child.peak_rss_bytes):.2f} GiB; {steps}")
    if not profile:
        result["next_night"] = run_next_night(size, db, out)
    return result


def run_next_night(size: int, db: Path, out: Path) -> dict[str, Any]:
    """D+1 on the warehouse the first night left, in a fresh process: a steady-state night."""
    day = BUSINESS_DATE + dt.timedelta(days=1)
    log(f"{label(size)}: the next night, {day}, on the same warehouse")
    child = run_child("benchmarks.cycle", ["--data", str(data_dir(size)), "--db", str(db), "--date", day.isoformat(),
                                           "--size", str(size), "--next-night"], out / f".next_{size}.json")
    if child.returncode != 0 or child.result is None:
        raise SystemExit(f"the {size} next night failed (exit {child.returncode})")
    result = {**child.result, "child": child_info(child)}
    log(f"{label(size)}: next night run_dates {result['run_dates_s']:.2f} s, peak RSS {gib(child.peak_rss_bytes):.2f} GiB")
    return result


def run_per_row(size: int, db: Path | None, out: Path) -> dict[str, Any]:
    log(f"{label(size)}: per-row baseline")
    args = ["--data", str(data_dir(size)), "--date", BUSINESS_DATE.isoformat(), "--size", str(size)]
    if db is not None:
        args += ["--compare-db", str(db)]
    child = run_child("benchmarks.per_row", args, out / f".per_row_{size}.json")
    if child.returncode != 0 or child.result is None:
        raise SystemExit(f"the {size} per-row baseline failed (exit {child.returncode})")
    result = {**child.result, "measured": True, "child": child_info(child)}
    cmp = result.get("comparison")
    if cmp is not None:
        log(f"{label(size)}: per-row vs vectorized tables identical: {cmp['identical']} "
            f"(dues_postings {cmp['dues_postings']['per_row']} vs {cmp['dues_postings']['vectorized']})")
    return result


def extrapolate(size: int, base: dict[str, Any]) -> dict[str, Any]:
    factor = size / base["size"]
    timings = {k: v * factor for k, v in base["timings"].items()}
    return {"size": size, "timings": timings, "measured": False, "extrapolated_from": base["size"],
            "note": f"linear extrapolation x{factor:g} from the measured {label(base['size'])} baseline"}


def load_previous(out: Path, size: int) -> dict[str, Any] | None:
    path = out / f"size_{size}.json"
    return json.loads(path.read_text()) if path.exists() else None


def best_baseline(out: Path, sizes_done: dict[int, dict[str, Any]], below: int) -> dict[str, Any] | None:
    """The largest measured per-row baseline below `below`, from this run or earlier result files."""
    found = {}
    for path in out.glob("size_*.json"):
        r = json.loads(path.read_text())
        if r.get("per_row", {}).get("measured"):
            found[r["size"]] = r["per_row"]
    for size, r in sizes_done.items():
        if r.get("per_row", {}).get("measured"):
            found[size] = r["per_row"]
    candidates = [s for s in found if s < below]
    return found[max(candidates)] if candidates else None


def run_charges(out: Path, configs: str) -> dict[str, Any]:
    log(f"charge throughput: max_in_flight:batch_size:charges = {configs}, latency 100 ms")
    child = run_child("benchmarks.charges", ["--configs", configs], out / ".charges.json")
    if child.returncode != 0 or child.result is None:
        raise SystemExit(f"the charge benchmark failed (exit {child.returncode})")
    return {**child.result, "child": child_info(child)}


# --- summary -------------------------------------------------------------------------------------

def fmt_ratio(x: float) -> str:
    return f"{x:.0f}x" if x >= 10 else f"{x:.2g}x"


# The timers of DuckDB work (reads, writes, ledger postings) inside the steps.
DUCKDB_TIMERS = {"query", "write", "insert", "post_entries", "post_new_entries", "ledger_sums", "last_posted_periods", "previous_runs"}


def vectorized_times(cycle: dict[str, Any]) -> tuple[float, float, float]:
    """(dues + billable steps, the same plus the status frames the maintenance step computes first,
    the DuckDB reads and writes within the dues + billable steps)."""
    steps, timers = cycle["steps_s"], cycle["timers"]
    asked = steps["dues"] + steps["billable"]
    # The Night frames nest (contracts -> timeline -> changes): count the outermost ones only.
    status_frames = sum(t["s"] for path, t in timers.items()
                        if path.count("/") == 1 and path in ("maintenance/night.changes", "maintenance/night.timeline",
                                                             "maintenance/night.contracts"))

    def outermost_duckdb(path: str) -> bool:
        parts = path.split("/")
        return (parts[0] in ("dues", "billable") and parts[-1] in DUCKDB_TIMERS
                and not any(p in DUCKDB_TIMERS for p in parts[1:-1]))

    duckdb_s = sum(t["s"] for path, t in timers.items() if outermost_duckdb(path))
    return asked, asked + status_frames, duckdb_s


def summarize(out: Path) -> tuple[str, dict[str, Any]]:
    sizes = sorted((json.loads(p.read_text()) for p in out.glob("size_*.json")), key=lambda r: r["size"])
    charges_path = out / "charges.json"
    charges = json.loads(charges_path.read_text()) if charges_path.exists() else None
    md: list[str] = []
    summary: dict[str, Any] = {"cycle": [], "per_row": [], "charges": [], "targets": {}}

    md += ["### Nightly cycle (run_dates, one business date, every facility, latency 0)", "",
           "| contracts | facilities | wall (run_dates) | CPU (run_dates) | process wall | peak RSS | "
           + " | ".join(name for _, name in STEPS) + " | other* | load avg | measured at (commit) |",
           "|---:|---:|---:|---:|---:|---:|" + "---:|" * len(STEPS) + "---:|---:|---|"]
    for r in sizes:
        c = r["cycle"]
        other = c["run_dates_s"] - sum(c["steps_s"][k] for k, _ in STEPS)
        load = c["child"].get("loadavg_before", [None])[0]
        md.append(f"| {label(r['size'])} | {facilities_for(r['size'])} | {c['run_dates_s']:.1f} s | "
                  f"{c.get('run_dates_cpu_s', float('nan')):.1f} s | "
                  f"{c['child']['process_wall_s']:.1f} s | {c['child']['peak_rss_gib']:.2f} GiB | "
                  + " | ".join(f"{c['steps_s'][k]:.2f} s" for k, _ in STEPS)
                  + f" | {other:.2f} s | {f'{load:.1f}' if load is not None else '-'} | {r['measured_at']} "
                  f"({r.get('code', {}).get('commit', '?')}{'+' if r.get('code', {}).get('package_changes') else ''}) |")
        summary["cycle"].append({"size": r["size"], "run_dates_s": c["run_dates_s"],
                                 "peak_rss_gib": c["child"]["peak_rss_gib"],
                                 "steps_s": {k: c["steps_s"][k] for k, _ in STEPS}, "other_s": other})
    md += ["", ("*other: ledger check, publish (checkpoint + file copy), facility clock, warehouse open. "
           "CPU = process CPU time (all threads, 2 cores); load avg = 1-minute load before the run "
           "(the machine is shared: a load above 2 inflates wall times)."), ""]

    nexts = [r for r in sizes if r["cycle"].get("next_night")]
    if nexts:
        md += ["### The next night (D+1 on the warehouse the first night left, own process: a steady-state night)", "",
               "| contracts | wall (run_dates) | CPU | peak RSS | " + " | ".join(name for _, name in STEPS)
               + " | periods posted | billable | charges sent |",
               "|---:|---:|---:|---:|" + "---:|" * len(STEPS) + "---:|---:|---:|"]
        for r in nexts:
            n = r["cycle"]["next_night"]
            s_ = n.get("summary") or {}
            md.append(f"| {label(r['size'])} | {n['run_dates_s']:.1f} s | {n['run_dates_cpu_s']:.1f} s | "
                      f"{n['child']['peak_rss_gib']:.2f} GiB | "
                      + " | ".join(f"{n['steps_s'][k]:.2f} s" for k, _ in STEPS)
                      + f" | {s_.get('dues_posted', 0):,} | {s_.get('billable', 0):,} | "
                      f"{s_.get('approved', 0) + s_.get('declined', 0) + s_.get('errors', 0):,} |")
            summary.setdefault("next_night", []).append(
                {"size": r["size"], "run_dates_s": n["run_dates_s"], "peak_rss_gib": n["child"]["peak_rss_gib"],
                 "steps_s": {k: n["steps_s"][k] for k, _ in STEPS}})
        md.append("")

    if sizes:
        biggest = sizes[-1]
        c = biggest["cycle"]
        md += [f"### Where the time goes at {label(biggest['size'])} (nested timers, >= 2% of the wall time)", "",
               "| timer | seconds | CPU s | % of run_dates | calls | peak RSS while running |", "|---|---:|---:|---:|---:|---:|"]
        for path, t in sorted(c["timers"].items(), key=lambda kv: -kv[1]["s"]):
            if t["s"] >= 0.02 * c["run_dates_s"]:
                rss = f"{gib(t['peak_rss_bytes']):.2f} GiB" if t.get("peak_rss_bytes") else "-"
                md.append(f"| {path} | {t['s']:.2f} | {t.get('cpu_s', float('nan')):.2f} | "
                          f"{100 * t['s'] / c['run_dates_s']:.0f}% | {t['calls']} | {rss} |")
        md.append("")

    rows = [r for r in sizes if r.get("per_row")]
    if rows:
        md += ["### Per-row Python vs vectorized (dues posting + billable selection, one business date)", "",
               ("| contracts | per-row status | per-row dues | per-row billable | per-row total | vectorized dues+billable "
               "| ratio | vectorized without DuckDB I/O | ratio, computing only | vectorized incl. status frames "
               "| ratio incl. status | per-row read | sanity (100k diff) |"),
               "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            p, t = r["per_row"], r["per_row"]["timings"]
            asked, with_status, duckdb_s = vectorized_times(r["cycle"])
            computing = asked - duckdb_s
            per_row_asked = t["dues_s"] + t["billable_s"]
            kind = "" if p["measured"] else " (extrapolated)"
            cmp = p.get("comparison")
            sanity = "-"
            if cmp is not None:
                dp = cmp["dues_postings"]
                sanity = (f"postings {dp['per_row']} vs {dp['vectorized']}; all tables "
                          + ("identical" if cmp["identical"] else "DIFFER"))
            md.append(f"| {label(r['size'])}{kind} | {t['status_s']:.1f} s | {t['dues_s']:.1f} s | "
                      f"{t['billable_s']:.1f} s | {t['loops_s']:.1f} s | {asked:.2f} s | "
                      f"{fmt_ratio(per_row_asked / asked)} | {computing:.2f} s | {fmt_ratio(per_row_asked / computing)} | "
                      f"{with_status:.2f} s | {fmt_ratio(t['loops_s'] / with_status)} | "
                      f"{t['read_s']:.1f} s | {sanity} |")
            summary["per_row"].append({"size": r["size"], "measured": p["measured"], "per_row_s": t,
                                       "vectorized_dues_billable_s": asked,
                                       "vectorized_without_duckdb_s": computing,
                                       "ratio_computing_only": per_row_asked / computing,
                                       "vectorized_with_status_s": with_status,
                                       "ratio": per_row_asked / asked, "ratio_with_status": t["loops_s"] / with_status})
        md += ["", ("ratio = per-row (dues + billable loops) / vectorized (dues + billable steps); ratio incl. status = "
               "per-row (status + dues + billable) / vectorized (dues + billable + the Night's changes / timeline / "
               "contracts frames, first computed in the maintenance step). The vectorized times include their "
               "DuckDB reads and writes; the per-row loops write nothing (and their reads are the per-row read "
               "column, left out). Computing only = the vectorized steps less their DuckDB timers (queries, "
               "writes, ledger postings): the same work the loops do."), ""]

    stages = sorted((json.loads(p.read_text()) for p in out.glob("dues_stages_*.json")), key=lambda r: r["size"])
    if stages:
        steps = list(dict.fromkeys(k for r in stages for k in r["seconds"]))
        md += ["### Dues rules step by step (benchmarks.dues_stages)", "",
               "| contracts | " + " | ".join(steps) + " | peak RSS |",
               "|---:|" + "---:|" * (len(steps) + 1)]
        for r in stages:
            t = r["seconds"]
            md.append(f"| {label(r['size'])} | " + " | ".join(f"{t[k]:.2f} s" if k in t else "-" for k in steps)
                      + f" | {gib(r['peak_rss_bytes']):.2f} GiB |")
        md.append("")

    if charges:
        md += ["### Charge throughput (SimulatedGateway, run_charges, record = DuckDB batch like cycle.charge)", "",
               ("| requests | max_in_flight | batch | latency | record | limit | charges/s | % of limit | record time "
               "(batches, max) | CPU per charge |"),
               "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        for c in charges["runs"]:
            limit = f"{c['limit_per_s']:.0f}/s" if c["limit_per_s"] else "-"
            pct = f"{c['pct_of_limit']:.1f}%" if c["pct_of_limit"] is not None else "-"
            md.append(f"| {c['n']} | {c['max_in_flight']} | {c.get('batch_size', 1)} | {c['latency_s'] * 1000:.0f} ms | {c['record']} | {limit} | "
                      f"{c['charges_per_s']:.0f} | {pct} | {c['record_total_s']:.2f} s ({c['record_batches']}, "
                      f"{c['record_max_s'] * 1000:.0f} ms) | {c['cpu_us_per_charge']:.0f} us |")
            summary["charges"].append(c)
        md.append("")

    # Targets
    md += ["### Targets", "", "| target | value | met |", "|---|---:|---|"]
    target = next((r for r in sizes if r["size"] == TARGET_SIZE), None)
    if target is not None:
        wall = target["cycle"]["run_dates_s"]
        rss = target["cycle"]["child"]["peak_rss_gib"]
        md.append(f"| 10M cycle wall <= {TARGET_WALL_S:.0f} s | {wall:.1f} s | {'yes' if wall <= TARGET_WALL_S else 'NO'} |")
        md.append(f"| 10M cycle peak RSS <= {TARGET_RSS_GIB:.0f} GiB | {rss:.2f} GiB | "
                  f"{'yes' if rss <= TARGET_RSS_GIB else 'NO'} |")
        summary["targets"]["wall"] = {"value": wall, "met": wall <= TARGET_WALL_S}
        summary["targets"]["rss"] = {"value": rss, "met": rss <= TARGET_RSS_GIB}
    else:
        md.append("| 10M cycle wall / peak RSS | not measured | - |")
    for p in summary["per_row"]:
        ok = p["ratio"] >= TARGET_RATIO
        md.append(f"| {label(p['size'])}{'' if p['measured'] else ' (extrapolated)'} per-row / vectorized >= "
                  f"{TARGET_RATIO:.0f}x | {fmt_ratio(p['ratio'])} ({fmt_ratio(p['ratio_computing_only'])} computing only, "
                  f"{fmt_ratio(p['ratio_with_status'])} incl. status) | "
                  f"{'yes' if ok else 'NO'} |")
    for c in summary["charges"]:
        if c["pct_of_limit"] is not None and c["record"] == "duckdb":
            ok = c["pct_of_limit"] >= TARGET_PCT
            md.append(f"| charging {c['n']} @ {c['max_in_flight']} in flight, batches of {c.get('batch_size', 1)} >= {TARGET_PCT:.0f}% of limit | "
                      f"{c['pct_of_limit']:.1f}% | {'yes' if ok else 'NO'} |")
    md.append("")
    return "\n".join(md), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--skip-baseline", action="store_true", help="no per-row baseline")
    parser.add_argument("--skip-charges", action="store_true", help="no charge throughput run")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--per-row-max-s", type=float, default=300.0,
                        help="run the per-row baseline only where its time estimate is below this; else extrapolate")
    parser.add_argument("--per-row-max-gib", type=float, default=8.0,
                        help="... and where its memory estimate (Python objects, linear in size) is below this")
    parser.add_argument("--charge-configs", default=DEFAULT_CONFIGS,
                        help="charge throughput runs, max_in_flight:batch_size:charges")
    parser.add_argument("--profile", action="store_true", help="run each cycle under py-spy (raw stacks in --out)")
    parser.add_argument("--keep-db", action="store_true", help="keep each size's DuckDB file (path in the JSON)")
    args = parser.parse_args()

    out = args.out if args.out.is_absolute() else (Path.cwd() / args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    done: dict[int, dict[str, Any]] = {}
    for size in sizes:
        record: dict[str, Any] = {"size": size, "facilities": facilities_for(size),
                                  "business_date": BUSINESS_DATE.isoformat(),
                                  "measured_at": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                                  "code": code_version()}
        record["generate"] = ensure_data(size, out)
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-{size}-"))
        try:
            db = tmp / "warehouse.duckdb"
            record["cycle"] = run_cycle(size, db, out, args.profile)
            if not args.skip_baseline:
                base = best_baseline(out, done, size)
                est_s = est_gib = None
                if base is not None:
                    scale = size / base["size"]
                    est_s = (base["timings"]["loops_s"] + base["timings"]["read_s"]) * scale
                    est_gib = base["child"]["peak_rss_gib"] * scale if base.get("child") else None
                too_slow = est_s is not None and est_s > args.per_row_max_s
                too_big = est_gib is not None and est_gib > args.per_row_max_gib
                if size <= 1_000_000 or not (too_slow or too_big):
                    record["per_row"] = run_per_row(size, db, out)
                else:
                    log(f"{label(size)}: per-row baseline estimated at {est_s:.0f} s and {est_gib:.1f} GiB "
                        f"(limits {args.per_row_max_s:.0f} s, {args.per_row_max_gib:.0f} GiB): "
                        f"extrapolating from {label(base['size'])}")
                    record["per_row"] = extrapolate(size, base)
                    record["per_row"]["estimated_peak_rss_gib"] = est_gib
            elif (prev := load_previous(out, size)) and prev.get("per_row"):
                record["per_row"] = prev["per_row"]  # keep the earlier baseline in the summary
                record["per_row"]["note"] = (record["per_row"].get("note", "") + " (from an earlier run)").strip()
        finally:
            if args.keep_db:
                log(f"{label(size)}: kept {db}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        write_json(out / f"size_{size}.json", record)
        done[size] = record

    if not args.skip_charges:
        write_json(out / "charges.json", run_charges(out, args.charge_configs))

    markdown, summary = summarize(out)
    (out / "summary.md").write_text(markdown)
    write_json(out / "summary.json", summary)
    print()
    print(markdown)


if __name__ == "__main__":
    main()
