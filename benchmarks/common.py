"""Shared helpers of the benchmark harness: sizes, paths, child processes with their own peak RSS.

Every measurement runs in a child process started by `run_child`, which reaps it with
`os.wait4` so the peak RSS reported is that child's own high-water mark (ru_maxrss), not the
orchestrator's, as long as the orchestrator stays small: Linux counts a forked child's size at
the fork too (workers also report their own sampled peak, `RssSampler`). Workers write their
results as JSON to a file the orchestrator names.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
DATA = BENCH / "data"
START = dt.date(2026, 3, 28)
BUSINESS_DATE = dt.date(2026, 3, 28)
SEED = 7


def facilities_for(size: int) -> int:
    return 100 if size < 1_000_000 else 1000


def data_dir(size: int) -> Path:
    return DATA / str(size)


def label(size: int) -> str:
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if size >= div and size % div == 0:
            return f"{size // div}{unit}"
    return str(size)


@dataclass
class ChildResult:
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    user_s: float
    sys_s: float
    result: dict[str, Any] | None
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]


def run_child(module: str, args: list[str], result_path: Path, env: dict[str, str] | None = None,
              wrap: list[str] | None = None) -> ChildResult:
    """Runs `python -m module args...` (after `wrap`, e.g. a profiler) and reaps it with wait4 for
    its own rusage (with a wrapper: the largest of the wrapper and the worker)."""
    result_path.unlink(missing_ok=True)
    cmd = [*(wrap or []), sys.executable, "-m", module, *args, "--result", str(result_path)]
    load_before = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    return ChildResult(proc.returncode, wall, usage.ru_maxrss * 1024, usage.ru_utime, usage.ru_stime, result,
                       load_before, os.getloadavg())


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def gib(n_bytes: float) -> float:
    return n_bytes / 2**30


class RssSampler:
    """Samples this process's RSS in a thread; keeps the peak overall and per active label."""

    def __init__(self, interval_s: float = 0.02):
        import threading

        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.labels: list[str] = []
        self.peaks: dict[str, int] = {}
        self.peak = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def sample(self) -> int:
        rss = self._proc.memory_info().rss
        self.peak = max(self.peak, rss)
        for name in list(self.labels):
            if rss > self.peaks.get(name, 0):
                self.peaks[name] = rss
        return rss

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def match_ledger_state(conn: Any) -> None:
    """Sets customer_balances and contract_periods to what the ledger says, after a benchmark
    copied history into the ledger."""
    from billing_pipeline.warehouse.state import CATCH_UPS

    conn.execute("""
        UPDATE customer_balances b SET balance_cents = s.cents, entries = s.n
        FROM (SELECT customer_id, sum(amount_cents)::BIGINT AS cents, count(*) AS n FROM ledger GROUP BY ALL) s
        WHERE s.customer_id = b.customer_id""")
    conn.execute("DELETE FROM contract_periods")
    conn.execute(CATCH_UPS["contract_periods"][1], {"since": None})
