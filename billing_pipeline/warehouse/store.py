"""The DuckDB warehouse: one file analysts query, written so they can query it during a run.

DuckDB lets one process write a file, and while it does no other process can open it, not even
to read. So the pipeline writes its own copy, `<name>.writer.duckdb`, and after each step
publishes it: a checkpoint, a copy, and an atomic rename onto `<name>.duckdb`. An analyst's
open connection keeps reading the snapshot it opened; a new one sees the latest finished step.
A run that fails before publishing leaves the analysts' file exactly as it was.

One writer at a time, from opening the writer copy to the end of its publish (a lock file beside
it, `<name>.writer.lock`): DuckDB's own lock is let go at close, before the publish copy, and a
second writer (a `run` or `audit-ledger` beside the Dagster schedule) that wrote in between saw
its publish overwritten by the first one's older copy, or, checkpointing during that copy, could
tear it. A second writer waits for the first instead of failing on DuckDB's lock.

Every write of a facility-day replaces that facility-day's rows in one transaction, so a rerun
never appends twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path

import duckdb
import polars as pl
from filelock import FileLock, Timeout

from billing_pipeline.warehouse.state import CATCH_UPS, REBUILT_WITHOUT
from billing_pipeline.warehouse.upgrades import UPGRADES


# Background allocator threads hand memory freed by a big query back to the system: without them
# about 0.7 GiB of a 10M-row aggregate stayed resident for the rest of the night. No automatic
# checkpoints: DuckDB's default (after any commit that leaves 16 MB in the write-ahead log) ran one
# after nearly every write of a night, each longer as the tables grew (eight commits of 50k
# charges: 0.13 s, rising to 0.43 s; 0.08 s without); a step checkpoints once, before it
# publishes (10M first night 46.6 -> 41.0 s, next night 28.7 -> 25.0 s).
CONNECTION_CONFIG = {"allocator_background_threads": True, "checkpoint_threshold": "64GB"}


class WarehouseNameClash(ValueError):
    """Two warehouses whose side files would be the same."""


class Warehouse:
    def __init__(self, path: str | Path):
        # Resolved: a path that is a symlink to the warehouse writes and publishes the file it
        # points to (publishing onto the link would replace it with a file of its own).
        self.path = Path(path).resolve()

    def side_file(self, suffix: str) -> Path:
        """`<stem><suffix>` beside the warehouse: its writer copy, lock, owner, gateway record."""
        return self.path.with_name(self.path.stem + suffix)

    @property
    def writer_path(self) -> Path:
        return self.side_file(".writer.duckdb")

    @property
    def lock_path(self) -> Path:
        return self.side_file(".writer.lock")

    @property
    def holder_path(self) -> Path:
        return self.side_file(".writer.holder")  # who holds the lock, for the waiting

    @property
    def owner_path(self) -> Path:
        return self.side_file(".writer.owner")  # which warehouse the side files serve

    @property
    def gateway_record_path(self) -> Path:
        return self.side_file(".gateway.sqlite")  # the simulated gateway's default record

    @contextlib.contextmanager
    def writing(self, echo: Callable[[str], object] = print) -> Iterator[None]:
        """Holds the one-writer lock (waiting, with a word, while another process holds it).

        Not re-entrant: a second `connect` of the same warehouse inside the first, in the same
        thread, would wait for itself, so it is refused (another thread waits its turn)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _not_held_by_this_thread(self.lock_path, self.path):  # self.path is resolved
            lock = FileLock(self.lock_path)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                echo(f"waiting for {self._holder()} to finish writing {self.path}")
                lock.acquire()
            try:
                self.holder_path.write_text(f"pid {os.getpid()} ({' '.join(sys.argv[:2])}), writing since "
                                            f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC\n")
                self._own_side_files()
                self._clear_leftovers()
                yield
            finally:
                # Gone before the lock is let go: a waiter never names a writer that has finished.
                try:
                    self.holder_path.unlink(missing_ok=True)
                finally:
                    lock.release()

    def _holder(self) -> str:
        try:
            return self.holder_path.read_text().strip() or "another process"
        except FileNotFoundError:  # not written yet by the new holder, or just removed by the old one
            return "another process"

    def refuse_a_clash(self) -> None:
        """The side files (writer copy, lock, gateway record) are named by the stem: `chain.duckdb`
        beside `chain.db` would share them, and one would publish the other's tables. The first
        warehouse to write owns them (`<stem>.writer.owner`); another name is refused, also once
        the owner is gone (a renamed warehouse is handed them by deleting the owner file). A
        backup copy beside the warehouse (`chain.bak`) is no warehouse until it writes."""
        try:
            owner = self.owner_path.read_text().strip()
        except FileNotFoundError:
            return
        other = self.path.parent / owner  # a hand-edited name with a slash is still a path, not a crash
        if not owner or owner == self.path.name or (self.path.exists() and other.exists() and other.samefile(self.path)):
            return
        side_files = f"{self.writer_path.name}, {self.lock_path.name} and the gateway record"
        if other.exists():
            raise WarehouseNameClash(
                f"{self.path.name} and {owner} in {self.path.parent} would share one writer copy "
                f"({side_files}), which belong to {owner} ({self.owner_path.name}): give each warehouse "
                "its own name (the part before the extension)")
        raise WarehouseNameClash(
            f"{side_files} in {self.path.parent} belong to {owner}, which is gone: if {self.path.name} is "
            f"{owner} renamed, delete {self.owner_path.name} to hand them over; if it is another warehouse, "
            "move those files away first (the writer copy holds the tables it would publish)")

    def _own_side_files(self) -> None:
        """Under the lock: refuses a clash, then records this warehouse as the owner."""
        self.refuse_a_clash()
        if not self.owner_path.exists() or self.owner_path.read_text().strip() != self.path.name:
            # Whole or not at all: `refuse_a_clash` also reads it outside the lock.
            tmp = self.owner_path.with_name(f".{self.owner_path.name}.tmp")
            tmp.write_text(self.path.name + "\n")
            os.replace(tmp, self.owner_path)

    def _clear_leftovers(self) -> None:
        """What a killed writer may have left (under the lock, so nobody is writing them): a
        publish copy cut short, and a writer copy cut short."""
        # This warehouse's own (older versions named the publish copy by the writer's pid), not
        # those of a warehouse whose name merely starts with this one's.
        own = re.compile(rf"\.{re.escape(self.path.name)}\.(publish|\d+)\.tmp")
        for tmp in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
            if own.fullmatch(tmp.name) and tmp.is_file():
                tmp.unlink(missing_ok=True)
        self._writer_copy_tmp.unlink(missing_ok=True)

    @property
    def _writer_copy_tmp(self) -> Path:
        return self.writer_path.with_name(f".{self.writer_path.name}.copy.tmp")

    @contextlib.contextmanager
    def connect(self, publish: bool = True, echo: Callable[[str], object] = print) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the writer copy; on success the result is published."""
        with self.writing(echo):
            if not self.writer_path.exists() and self.path.exists():
                # A fresh writer copy of the analysts' file, whole or not at all (a copy cut short
                # would be opened by every later run), and without the write-ahead log of a
                # writer file that is gone: replayed onto this copy it would apply old writes again.
                Path(f"{self.writer_path}.wal").unlink(missing_ok=True)
                _copy_durably(self.path, self._writer_copy_tmp)
                os.replace(self._writer_copy_tmp, self.writer_path)
            conn = duckdb.connect(str(self.writer_path), config=CONNECTION_CONFIG)
            try:
                create_schema(conn)
                yield conn
                if publish:
                    conn.execute("CHECKPOINT")
            finally:
                conn.close()
            if publish:
                self.publish()

    def publish(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.publish.tmp")
        _copy_durably(self.writer_path, tmp)
        os.replace(tmp, self.path)


_THREAD = threading.local()  # .held: the lock files this thread holds now


@contextlib.contextmanager
def _not_held_by_this_thread(lock_path: Path, warehouse: Path) -> Iterator[None]:
    held = _THREAD.__dict__.setdefault("held", set())
    if lock_path in held:
        raise RuntimeError(f"this thread already writes {warehouse}: Warehouse.connect is not re-entrant")
    held.add(lock_path)
    try:
        yield
    finally:
        held.discard(lock_path)


def _copy_durably(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())


def create_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Creates what is missing of the schema and brings the state tables up to date with the
    history (`state.CATCH_UPS`), in one transaction."""
    with transaction(conn):
        existing = {name for (name,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        for table, column in REBUILT_WITHOUT.items():
            columns = {name for (name,) in conn.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = $t", {"t": table}).fetchall()}
            if table in existing and column not in columns:
                conn.execute(f"DROP TABLE {table}")
                existing.discard(table)
        conn.execute(resources.files("billing_pipeline.warehouse").joinpath("schema.sql").read_text())
        done = {name for (name,) in conn.execute("SELECT upgrade FROM warehouse_upgrades").fetchall()}
        for name, sql in UPGRADES.items():
            if name not in done:
                if "contract_status_log" in existing:  # a new warehouse has nothing to upgrade
                    conn.execute(sql)
                conn.execute("INSERT INTO warehouse_upgrades VALUES ($name, now())", {"name": name})
        marks = dict(conn.execute("SELECT state_table, caught_up_to FROM state_caught_up").fetchall())
        for table, (latest_sql, sql) in CATCH_UPS.items():
            ((latest,),) = conn.execute(latest_sql).fetchall()
            since = marks.get(table) if table in existing else None  # a new table takes in everything
            if latest is None or (since is not None and latest < since):
                continue  # nothing written since
            conn.execute(sql, {"since": since})
            conn.execute("INSERT OR REPLACE INTO state_caught_up VALUES ($t, $latest)", {"t": table, "latest": latest})


class TransactionAborted(RuntimeError):
    """A statement of the transaction failed and its error was caught: nothing of it is written."""


@contextlib.contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
        # DuckDB (2.0.1) answers the COMMIT of a transaction one of whose statements failed with
        # silence, and drops the whole transaction: a caller that caught that statement's error
        # would believe its writes done. Any statement in an aborted transaction raises.
        try:
            conn.execute("SELECT 1").fetchall()
        except duckdb.TransactionException as exc:
            raise TransactionAborted("a statement of this transaction failed and its error was caught; "
                                     "the transaction is rolled back, nothing of it is written") from exc
        conn.execute("COMMIT")
    except BaseException:
        # The error that stopped the transaction is the one to hear of, not a failed rollback's.
        with contextlib.suppress(duckdb.Error):
            conn.execute("ROLLBACK")
        raise


def register(conn: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> str:
    conn.register(name, frame.to_arrow())
    return name


def replace_facility_days(conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame,
                          facility_days: pl.DataFrame) -> int:
    """Delete the facility-days' rows of `table` and insert `frame` (call inside a transaction)."""
    execute(conn, f"DELETE FROM {table} t USING _days d "
                  "WHERE t.facility_id = d.facility_id AND t.business_date = d.business_date",
            _days=facility_days.select("facility_id", "business_date"))
    return insert(conn, table, frame)


def insert(conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, key: str | None = None) -> int:
    """Appends `frame` to `table`. With `key` (the table's primary key) the rows go in sorted by
    it: DuckDB's index takes 1.4M sorted keys in about half the time of shuffled ones."""
    if frame.height == 0:
        return 0
    columns = ", ".join(frame.columns)
    execute(conn, f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _rows", _rows=frame.sort(key) if key else frame)
    return frame.height


def execute(conn: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None, **frames: pl.DataFrame) -> None:
    """Runs a statement that returns nothing (INSERT, DELETE, ...) with the given frames visible as tables."""
    for name, frame in frames.items():
        register(conn, name, frame)
    try:
        conn.execute(sql, params)
    finally:
        unregister(conn, frames)


def query(conn: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None,
          **frames: pl.DataFrame) -> pl.DataFrame:
    """Runs `sql` with the given frames visible as tables, returns a Polars frame."""
    for name, frame in frames.items():
        register(conn, name, frame)
    try:
        return conn.sql(sql, params=params).pl()
    finally:
        unregister(conn, frames)


def unregister(conn: duckdb.DuckDBPyConnection, names: Iterable[str]) -> None:
    """Drops registered frames. After a failed statement inside a transaction DuckDB refuses
    even this until the rollback: the statement's own error is the one to raise, not that."""
    for name in names:
        with contextlib.suppress(duckdb.TransactionException):
            conn.unregister(name)
