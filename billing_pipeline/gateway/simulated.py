"""The simulated gateway: deterministic answers from the token, real idempotency on disk.

`decline_<code>` tokens are declined with <code>; `error_...` tokens get a retryable `error`
answer; anything else is approved, unless a configured random decline rate says otherwise
(decided by a seeded hash of the key). Each call decides its whole batch at once with Polars
and answers `latency_s` after it was made (one round trip; the gateway's bookkeeping is done
within it, as a remote gateway's is on its own machines).

Answers are kept in a SQLite file by idempotency key, committed (one transaction per call)
before they are returned, like a real gateway: a killed and rerun pipeline that resends a key is
answered from the record and nobody is charged twice. synchronous=OFF: a killed process loses
nothing committed, only a machine crash could, which a simulation need not survive.
`captured` is the money really taken per key.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path

import polars as pl

from billing_pipeline.gateway.interface import ANSWER_SCHEMA, IdempotencyConflict
from billing_pipeline.rules.text import fmt

STORED = ["idempotency_key", "customer_id", "payment_method_id", "amount_cents", "outcome", "decline_code",
          "reference"]


class SimulatedGateway:
    def __init__(self, state_path: str | Path, latency_s: float = 0.0, decline_rate: float = 0.0, seed: int = 0):
        self.state_path = Path(state_path)
        self.latency_s, self.decline_rate, self.seed = latency_s, decline_rate, seed
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.state_path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()  # one connection: one transaction at a time
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("""CREATE TABLE IF NOT EXISTS charges (
            idempotency_key TEXT PRIMARY KEY, customer_id TEXT, payment_method_id TEXT,
            amount_cents INTEGER, outcome TEXT, decline_code TEXT, reference TEXT,
            times_requested INTEGER DEFAULT 1)""")

    def close(self) -> None:
        self._db.close()

    async def charge(self, requests: pl.DataFrame) -> pl.DataFrame:
        failing = pl.col("token").str.starts_with("error_")
        errors = requests.filter(failing).select(
            "idempotency_key", pl.lit("error").alias("outcome"), pl.lit(None, pl.String).alias("decline_code"),
            pl.lit(None, pl.String).alias("reference"), fmt("gateway error for token {}", "token").alias("message"))
        # The record is written in a thread (one at a time) while the round trip's latency runs: a
        # remote gateway does its bookkeeping within its answer time, on its own machines, and
        # the event loop goes on receiving the other calls' answers meanwhile.
        storing = asyncio.to_thread(self._store_locked, self.decide(requests.filter(~failing)))
        if self.latency_s:
            _, answered = await asyncio.gather(asyncio.sleep(self.latency_s), storing)
        else:
            answered = await storing
        return pl.concat([errors, answered.with_columns(pl.lit(None, pl.String).alias("message"))]).cast(ANSWER_SCHEMA)

    async def answered(self, keys: pl.Series) -> pl.DataFrame:
        """The answers on record for these keys, charging nothing (`error` answers are not kept)."""
        def read() -> list[tuple]:
            with self._lock:
                return self._db.execute(
                    "SELECT idempotency_key, outcome, decline_code, reference FROM charges "
                    "WHERE idempotency_key IN (SELECT value FROM json_each(?))", (json.dumps(keys.to_list()),)).fetchall()
        rows = await asyncio.to_thread(read)
        return (pl.DataFrame(rows, schema=["idempotency_key", "outcome", "decline_code", "reference"], orient="row")
                .with_columns(pl.lit(None, pl.String).alias("message")).cast(ANSWER_SCHEMA))

    def decide(self, requests: pl.DataFrame) -> pl.DataFrame:
        """The answer to each request if its key is new."""
        by_token = pl.col("token").str.starts_with("decline_")
        at_random = (pl.col("idempotency_key").hash(self.seed).cast(pl.Float64) / 2.0**64) < self.decline_rate
        return requests.select(
            "idempotency_key", "customer_id", "payment_method_id", pl.col("charge_cents").alias("amount_cents"),
            pl.when(by_token | at_random).then(pl.lit("declined")).otherwise(pl.lit("approved")).alias("outcome"),
            pl.when(by_token).then(pl.col("token").str.strip_prefix("decline_"))
            .when(at_random).then(pl.lit("do_not_honor")).alias("decline_code"),
            fmt("sim_{}", pl.col("idempotency_key").hash(self.seed + 1)).alias("reference"))

    def _store_locked(self, decided: pl.DataFrame) -> pl.DataFrame:
        with self._lock:
            return self._store(decided)

    def _store(self, decided: pl.DataFrame) -> pl.DataFrame:
        """Records the answers of new keys and returns, for every key, the answer on record."""
        db, key = self._db, "idempotency_key"
        db.execute("BEGIN IMMEDIATE")
        try:
            seen = pl.DataFrame(db.execute(
                f"SELECT {', '.join(STORED)} FROM charges WHERE idempotency_key IN (SELECT value FROM json_each(?))",
                (json.dumps(decided.get_column(key).to_list()),)).fetchall(),
                schema={c: decided.schema[c] for c in STORED}, orient="row")
            if seen.height:
                conflict = seen.join(decided, on=key).filter(
                    (pl.col("amount_cents") != pl.col("amount_cents_right"))
                    | (pl.col("payment_method_id") != pl.col("payment_method_id_right")))
                if conflict.height:
                    raise IdempotencyConflict(f"key {conflict.item(0, key)} was used for another request")
                # A key seen before is answered as it was then, and charged nothing.
                db.execute("UPDATE charges SET times_requested = times_requested + 1 "
                           "WHERE idempotency_key IN (SELECT value FROM json_each(?))",
                           (json.dumps(seen.get_column(key).to_list()),))
            new = decided.join(seen.select(key), on=key, how="anti")
            db.executemany(f"INSERT INTO charges ({', '.join(STORED)}) VALUES ({', '.join('?' * len(STORED))})",
                           new.select(STORED).iter_rows())
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return pl.concat([new, seen]).select(key, "outcome", "decline_code", "reference")

    def captured(self) -> dict[str, int]:
        """Money actually taken, by idempotency key (approved charges)."""
        rows = self._db.execute("SELECT idempotency_key, amount_cents FROM charges WHERE outcome = 'approved'")
        return dict(rows.fetchall())
