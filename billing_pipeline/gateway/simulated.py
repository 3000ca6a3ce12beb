"""The simulated gateway: deterministic answers from the token, real idempotency on disk.

`decline_<code>` tokens are declined with <code>; `error_...` tokens raise a retryable
GatewayError; anything else is approved, unless a configured random decline rate says
otherwise (decided by a hash of the key, so a resent request gets the same answer).
Answers are kept in a SQLite file by idempotency key, committed before the answer is
returned, like a real gateway (synchronous=OFF: a killed process loses nothing committed, only a
machine crash could, which a simulation need not survive): a killed and rerun pipeline that resends a key is answered from
the record and nobody is charged twice. `captured` counts the money really taken per key.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

from billing_pipeline.gateway.interface import ChargeRequest, ChargeResult, GatewayError, IdempotencyConflict


class SimulatedGateway:
    def __init__(self, state_path: str | Path, latency_s: float = 0.0, decline_rate: float = 0.0, seed: int = 0):
        self.state_path = Path(state_path)
        self.latency_s, self.decline_rate, self.seed = latency_s, decline_rate, seed
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.state_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("""CREATE TABLE IF NOT EXISTS charges (
            idempotency_key TEXT PRIMARY KEY, customer_id TEXT, payment_method_id TEXT,
            amount_cents INTEGER, outcome TEXT, decline_code TEXT, reference TEXT,
            times_requested INTEGER DEFAULT 1)""")

    def close(self) -> None:
        self._db.close()

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if request.token.startswith("error_"):
            raise GatewayError(f"gateway error for token {request.token}")
        result = self._decide(request)
        inserted = self._db.execute(
            "INSERT INTO charges (idempotency_key, customer_id, payment_method_id, amount_cents, outcome, "
            "decline_code, reference) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
            (request.idempotency_key, request.customer_id, request.payment_method_id, request.amount_cents,
             result.outcome, result.decline_code, result.reference)).rowcount
        if inserted:
            return result
        # The key was seen before: answer what was answered then, and charge nothing.
        seen = self._db.execute(
            "SELECT amount_cents, payment_method_id, outcome, decline_code, reference FROM charges "
            "WHERE idempotency_key = ?", (request.idempotency_key,)).fetchone()
        if (seen[0], seen[1]) != (request.amount_cents, request.payment_method_id):
            raise IdempotencyConflict(f"key {request.idempotency_key} was used for another request")
        self._db.execute("UPDATE charges SET times_requested = times_requested + 1 WHERE idempotency_key = ?",
                         (request.idempotency_key,))
        return ChargeResult(seen[2], seen[3], seen[4])

    def _decide(self, request: ChargeRequest) -> ChargeResult:
        reference = "sim_" + hashlib.sha256(request.idempotency_key.encode()).hexdigest()[:16]
        if request.token.startswith("decline_"):
            return ChargeResult("declined", request.token.removeprefix("decline_"), reference)
        if self.decline_rate > 0:
            digest = hashlib.sha256(f"{self.seed}:{request.idempotency_key}".encode()).digest()
            if int.from_bytes(digest[:8], "big") / 2**64 < self.decline_rate:
                return ChargeResult("declined", "do_not_honor", reference)
        return ChargeResult("approved", None, reference)

    def captured(self) -> dict[str, int]:
        """Money actually taken, by idempotency key (approved charges)."""
        rows = self._db.execute("SELECT idempotency_key, amount_cents FROM charges WHERE outcome = 'approved'")
        return dict(rows.fetchall())
