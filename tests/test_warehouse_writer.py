"""The writer copy and its publish survive a killed writer: what it left is cleared or never used."""

import os
import shutil
import threading
import time
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from billing_pipeline.warehouse.store import Warehouse

KILLED_MID_STEP = """
import os, sys
from billing_pipeline.warehouse.store import Warehouse
with Warehouse(sys.argv[1]).connect() as conn:
    conn.execute("INSERT INTO t SELECT range FROM range(1000)")
    os._exit(9)  # killed before the step's checkpoint: the rows sit in the write-ahead log
"""


def rows(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute("SELECT count(*) FROM t").fetchall()[0][0]


def published_with_rows(tmp_path: Path, n: int) -> Warehouse:
    warehouse = Warehouse(tmp_path / "billing.duckdb")
    with warehouse.connect() as conn:
        conn.execute("CREATE TABLE t (i BIGINT)")
        conn.execute(f"INSERT INTO t SELECT range FROM range({n})")
    return warehouse


def test_a_fresh_writer_copy_never_replays_the_log_of_a_writer_file_that_is_gone(tmp_path):
    warehouse = published_with_rows(tmp_path, 10)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_STEP, str(warehouse.path)], env=env)
    assert killed.returncode == 9
    wal = Path(f"{warehouse.writer_path}.wal")
    assert wal.exists()  # the killed step's rows, never published
    warehouse.writer_path.unlink()  # e.g. a warehouse restored from the analysts' file
    with warehouse.connect() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(10,)]
    assert rows(warehouse.path) == 10


def test_copies_cut_short_by_a_kill_are_cleared_and_never_opened(tmp_path):
    warehouse = published_with_rows(tmp_path, 10)
    warehouse.writer_path.unlink()
    # What a writer killed mid-copy leaves: half a writer copy, half a publish copy.
    half = warehouse.path.read_bytes()[: warehouse.path.stat().st_size // 2]
    leftovers = [warehouse.writer_path.with_name(f".{warehouse.writer_path.name}.copy.tmp"),
                 warehouse.path.with_name(f".{warehouse.path.name}.12345.tmp"),
                 warehouse.path.with_name(f".{warehouse.path.name}.publish.tmp")]
    # Not ours: the publish copy of a warehouse whose name starts with this one's.
    neighbour = warehouse.path.with_name(f".{warehouse.path.name}.x.duckdb.publish.tmp")
    for leftover in [*leftovers, neighbour]:
        leftover.write_bytes(half)
    with warehouse.connect() as conn:
        conn.execute("INSERT INTO t VALUES (10)")
    assert rows(warehouse.path) == 11 and rows(warehouse.writer_path) == 11
    assert not any(leftover.exists() for leftover in leftovers) and neighbour.exists()


def test_a_second_connect_in_the_same_process_is_refused_not_left_waiting_for_itself(tmp_path):
    warehouse = published_with_rows(tmp_path, 1)
    with warehouse.connect():
        with pytest.raises(RuntimeError, match="not re-entrant"):
            with Warehouse(str(warehouse.path)).connect():
                pass
    with warehouse.connect() as conn:  # and the lock is free again afterwards
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(1,)]


def test_another_thread_waits_its_turn(tmp_path):
    warehouse = published_with_rows(tmp_path, 0)
    first_inside, done = threading.Event(), []

    def write(name: str, hold_s: float) -> None:
        with Warehouse(warehouse.path).connect(echo=lambda _: None) as conn:
            first_inside.set()
            conn.execute("INSERT INTO t VALUES (?)", [len(name)])
            time.sleep(hold_s)
        done.append(name)

    first = threading.Thread(target=write, args=("first", 0.5))
    first.start()
    first_inside.wait(10)
    write("second!", 0)  # this thread: waits for the first thread's publish
    first.join(10)
    assert done == ["first", "second!"]
    with duckdb.connect(str(warehouse.path), read_only=True) as conn:
        assert conn.execute("SELECT i FROM t ORDER BY i").fetchall() == [(5,), (7,)]


def test_a_symlink_to_the_warehouse_writes_the_file_it_points_to(tmp_path):
    warehouse = published_with_rows(tmp_path, 3)
    link = tmp_path / "current.duckdb"
    link.symlink_to(warehouse.path)
    with Warehouse(link).connect() as conn:
        conn.execute("INSERT INTO t VALUES (3)")
    assert link.is_symlink() and rows(link) == rows(warehouse.path) == 4


def test_a_warehouse_beside_another_of_the_same_stem_is_refused(tmp_path):
    """chain.duckdb and chain.db (or a bare chain) would share chain.writer.duckdb: the one that
    wrote first owns the side files, the other is refused, by name, and writes nothing."""
    with Warehouse(tmp_path / "chain.db").connect() as conn:
        conn.execute("CREATE TABLE t (i BIGINT)")
    for name in ("chain.duckdb", "chain"):
        with pytest.raises(ValueError, match=f"{name} and chain.db in .* would share one writer copy"):
            with Warehouse(tmp_path / name).connect():
                pass
        assert not (tmp_path / name).exists()
    # A backup copy, a symlink to the warehouse, and a longer name are no clash.
    shutil.copy(tmp_path / "chain.db", tmp_path / "chain.bak")
    (tmp_path / "chain.link").symlink_to(tmp_path / "chain.db")
    for name in ("chain.db", "chain.link", "chain.backup.duckdb"):
        with Warehouse(tmp_path / name).connect():
            pass
    # Once the owner is gone, another name is still refused: it may be another warehouse, which
    # would publish the owner's writer copy. A rename hands the side files over by deleting the
    # owner file, as the message says.
    (tmp_path / "chain.db").rename(tmp_path / "chain.duckdb")
    with pytest.raises(ValueError, match="belong to chain.db, which is gone: .* delete chain.writer.owner"):
        with Warehouse(tmp_path / "chain.duckdb").connect():
            pass
    (tmp_path / "chain.writer.owner").unlink()
    with Warehouse(tmp_path / "chain.duckdb").connect() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
    assert (tmp_path / "chain.writer.owner").read_text() == "chain.duckdb\n"


def test_the_gateway_record_follows_a_symlinked_warehouse(tmp_path):
    from billing_pipeline.runner import default_gateway_state

    (tmp_path / "real").mkdir()
    (tmp_path / "alias.duckdb").symlink_to(tmp_path / "real" / "chain.duckdb")
    assert default_gateway_state(tmp_path / "alias.duckdb") == (tmp_path / "real" / "chain.gateway.sqlite").resolve()


def test_a_refused_run_opens_no_gateway_record(tmp_path):
    from billing_pipeline.runner import RunOptions, run_dates
    from tests.factories import D, write_export

    data = write_export(tmp_path / "data")
    with Warehouse(tmp_path / "chain.db").connect():
        pass
    with pytest.raises(ValueError, match="would share one writer copy"):
        run_dates(data, tmp_path / "chain.duckdb", D(2026, 1, 1), D(2026, 1, 1), None, RunOptions(), echo=print)
    assert not (tmp_path / "chain.gateway.sqlite").exists()


def test_the_holder_is_named_while_writing_and_forgotten_after(tmp_path):
    """A waiter reads who holds the lock: never a writer that has already finished."""
    warehouse = Warehouse(tmp_path / "billing.duckdb")
    with warehouse.connect():
        assert warehouse.holder_path.read_text().startswith(f"pid {os.getpid()} (")
    assert not warehouse.holder_path.exists()
    with pytest.raises(RuntimeError), warehouse.connect():
        raise RuntimeError("a step fails")
    assert not warehouse.holder_path.exists()


def test_dagster_charging_on_a_clashing_name_opens_no_gateway_record(tmp_path):
    import dagster as dg

    from assets.billing import BILLING_ATTEMPTS, FAILED_BILLING_EVENTS
    from assets.definitions import build_definitions
    from assets.schedules import NIGHTLY_JOB
    from tests.factories import write_export

    data = write_export(tmp_path / "data")
    with Warehouse(tmp_path / "chain.db").connect():
        pass
    defs = build_definitions(str(data), str(tmp_path / "chain.duckdb"))
    result = defs.resolve_job_def(NIGHTLY_JOB).execute_in_process(
        partition_key="2026-01-01-02:00", instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        asset_selection=[BILLING_ATTEMPTS, FAILED_BILLING_EVENTS])
    assert not result.success
    assert not (tmp_path / "chain.gateway.sqlite").exists()
