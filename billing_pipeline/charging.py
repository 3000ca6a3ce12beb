"""Sends charge requests through a gateway: many in flight at once, bounded, with retries.

Workers pull requests from one queue, so at most `max_in_flight` charges wait on the gateway
at any moment. A GatewayError is retried with exponential backoff, then recorded as an
`error` outcome; it never stops the other charges. Outcomes are handed to `record` in batches,
which writes them durably before the next batch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from billing_pipeline.gateway.interface import ChargeRequest, GatewayError, PaymentGateway


@dataclass(frozen=True)
class ChargeSettings:
    max_in_flight: int = 64
    attempts: int = 3
    backoff_s: float = 0.05
    flush_every: int = 5000


@dataclass(frozen=True)
class Outcome:
    idempotency_key: str
    outcome: str  # approved / declined / error
    decline_code: str | None
    reference: str | None
    tries: int
    message: str | None
    completed_at: dt.datetime


async def charge_one(gateway: PaymentGateway, request: ChargeRequest, settings: ChargeSettings) -> Outcome:
    for attempt in range(1, settings.attempts + 1):
        try:
            result = await gateway.charge(request)
            return Outcome(request.idempotency_key, result.outcome, result.decline_code, result.reference,
                           attempt, None, dt.datetime.now(dt.timezone.utc))
        except GatewayError as exc:
            if attempt == settings.attempts:
                return Outcome(request.idempotency_key, "error", None, None, attempt,
                               f"gateway error after {attempt} tries: {exc}", dt.datetime.now(dt.timezone.utc))
            await asyncio.sleep(settings.backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


async def charge_all(requests: Iterable[ChargeRequest], gateway: PaymentGateway, settings: ChargeSettings,
                     record: Callable[[list[Outcome]], None]) -> int:
    queue = iter(requests)
    buffer: list[Outcome] = []
    done = 0

    async def worker() -> None:
        nonlocal done
        for request in queue:  # a shared iterator: each request goes to exactly one worker
            buffer.append(await charge_one(gateway, request, settings))
            done += 1
            if len(buffer) >= settings.flush_every:
                batch = buffer[:]
                buffer.clear()
                record(batch)

    await asyncio.gather(*(worker() for _ in range(settings.max_in_flight)))
    if buffer:
        record(buffer[:])
    return done


def run_charges(requests: list[ChargeRequest], gateway: PaymentGateway, settings: ChargeSettings,
                record: Callable[[list[Outcome]], None]) -> int:
    if not requests:
        return 0
    return asyncio.run(charge_all(requests, gateway, settings, record))
