"""An analyst's process queries the DuckDB file while a run writes it; two writing processes take
turns, each publish included."""

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

from billing_pipeline.demo_data import generate

READER = """
import sys, time, json, duckdb
db, stop = sys.argv[1], sys.argv[2]
import os
ok, errors, seen = 0, [], []
while not os.path.exists(stop):
    if not os.path.exists(db):
        time.sleep(0.01); continue
    try:
        with duckdb.connect(db, read_only=True) as conn:
            days = conn.execute("SELECT count(DISTINCT business_date) FROM processed_days").fetchone()[0]
            entries = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
        seen.append([days, entries]); ok += 1
    except Exception as exc:
        errors.append(repr(exc))
    time.sleep(0.02)
print(json.dumps({"ok": ok, "errors": errors, "seen": seen}))
"""

WRITER = """
import sys, datetime as dt
from pathlib import Path
from billing_pipeline.runner import RunOptions, run_dates
run_dates(Path(sys.argv[1]), Path(sys.argv[2]), dt.date(2026, 3, 28), dt.date(2026, 4, 2), None,
          RunOptions(latency_s=0.002, max_in_flight=8), echo=print)
"""


def test_analyst_reads_while_a_run_writes(tmp_path):
    import json

    data = tmp_path / "export"
    generate(data, contracts=3_000, facilities=6, seed=3, start=dt.date(2026, 3, 28), progress=False)
    db, stop = tmp_path / "billing.duckdb", tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db), str(stop)], env=env,
                              stdout=subprocess.PIPE, text=True)
    writer = subprocess.run([sys.executable, "-c", WRITER, str(data), str(db)], env=env, capture_output=True,
                            text=True, timeout=300)
    time.sleep(0.2)
    stop.touch()
    out, _ = reader.communicate(timeout=60)
    assert writer.returncode == 0, writer.stderr
    report = json.loads(out)

    assert report["errors"] == [], report["errors"][:3]
    assert report["ok"] >= 20
    days = [d for d, _ in report["seen"]]
    entries = [e for _, e in report["seen"]]
    # Each read saw a finished step: the number of processed days and ledger entries only grow,
    # and the reader watched them grow during the run (it read while the writer wrote).
    assert days == sorted(days) and entries == sorted(entries)
    assert len(set(days)) >= 3
    assert days[-1] == 6


TURN = """
import sys, time
from pathlib import Path
from billing_pipeline.warehouse.store import Warehouse
db, name, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
if name == "second":
    while not (folder / "first_inside").exists():
        time.sleep(0.01)
with Warehouse(db).connect() as conn:
    (folder / f"{name}_inside").write_text(repr(time.time()))
    conn.execute("CREATE TABLE IF NOT EXISTS turns (writer VARCHAR)")
    conn.execute("INSERT INTO turns VALUES (?)", [name])
    if name == "first":
        time.sleep(1.0)  # the second writer arrives meanwhile
(folder / f"{name}_published").write_text(repr(time.time()))
"""


def test_a_second_writer_waits_until_the_first_has_published(tmp_path):
    # DuckDB lets its lock go at close, before the publish copy: without the writer lock a
    # second writer failed on DuckDB's lock, or, coming between close and copy, saw its publish
    # overwritten by the first writer's older copy.
    db = tmp_path / "billing.duckdb"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writers = [subprocess.Popen([sys.executable, "-c", TURN, str(db), name, str(tmp_path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name in ("first", "second")]
    results = [w.communicate(timeout=120) for w in writers]
    for w, (out, err) in zip(writers, results):
        assert w.returncode == 0, err
    assert "waiting for pid " in results[1][0] and "to finish writing" in results[1][0]
    times = {p.name: float(p.read_text()) for p in tmp_path.glob("*_*") if p.suffix == ""}
    assert times["second_inside"] >= times["first_published"]
    import duckdb

    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT writer FROM turns ORDER BY writer").fetchall() == [("first",), ("second",)]
