"""Sends charge requests through a gateway: many in flight at once, bounded, with retries.

Requests go to the gateway in batches of `batch_size`, by `max_in_flight // batch_size`
workers pulling from one queue, so at most `max_in_flight` charges wait on the gateway at any
moment (`batch_size=1, max_in_flight=64` is 64 single charges in flight). A request the gateway
could not answer (`error`, or the whole call raising GatewayError) is resent with exponential
backoff, then recorded as an `error` outcome; it never holds up the other charges. Outcomes go
to `record` in chunks of about `flush_every`, one chunk at a time in a thread (DuckDB releases
the GIL), so charging goes on while the last chunk is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from billing_pipeline.gateway.interface import (
    ANSWER_SCHEMA,
    REQUEST_SCHEMA,
    GatewayError,
    PaymentGateway,
)

OUTCOME_SCHEMA = {**ANSWER_SCHEMA, "tries": pl.Int32, "completed_at": pl.Datetime("us", "UTC")}


@dataclass(frozen=True)
class ChargeSettings:
    max_in_flight: int = 8000
    batch_size: int = 2000
    attempts: int = 3
    backoff_s: float = 0.05
    flush_every: int = 50_000


def _now() -> pl.Expr:
    return pl.lit(dt.datetime.now(dt.UTC), pl.Datetime("us", "UTC")).alias("completed_at")


async def charge_batch(gateway: PaymentGateway, batch: pl.DataFrame, settings: ChargeSettings) -> pl.DataFrame:
    """One batch to its final outcomes (OUTCOME_SCHEMA), resending what the gateway could not answer."""
    final: list[pl.DataFrame] = []
    waiting = batch.select(list(REQUEST_SCHEMA)).cast(REQUEST_SCHEMA)
    for attempt in range(1, settings.attempts + 1):
        try:
            answers = await gateway.charge(waiting)
        except GatewayError as exc:
            answers = waiting.select("idempotency_key", outcome=pl.lit("error"), decline_code=pl.lit(None, pl.String),
                                     reference=pl.lit(None, pl.String), message=pl.lit(str(exc)))
        answers = answers.select(list(ANSWER_SCHEMA)).cast(ANSWER_SCHEMA)
        if not answers.get_column("idempotency_key").sort().equals(waiting.get_column("idempotency_key").sort()):
            raise RuntimeError(f"the gateway answered {answers.height} requests for the {waiting.height} sent")
        answers = answers.with_columns(pl.lit(attempt, pl.Int32).alias("tries"), _now())
        unanswered = pl.col("outcome") == "error"
        if attempt == settings.attempts:
            final.append(answers.with_columns(pl.when(unanswered).then(
                pl.format(f"gateway error after {attempt} tries: {{}}", "message")).otherwise("message").alias("message")))
            break
        final.append(answers.filter(~unanswered))
        retry = answers.filter(unanswered)
        if retry.height == 0:
            break
        waiting = waiting.join(retry.select("idempotency_key"), on="idempotency_key", how="semi")
        await asyncio.sleep(settings.backoff_s * 2 ** (attempt - 1))
    return pl.concat(final).select(list(OUTCOME_SCHEMA))


async def charge_all(requests: pl.DataFrame, gateway: PaymentGateway, settings: ChargeSettings,
                     record: Callable[[pl.DataFrame], None]) -> int:
    size = max(1, min(settings.batch_size, settings.max_in_flight))
    batches = iter(requests.iter_slices(size))  # shared: each batch goes to exactly one worker
    buffer: list[pl.DataFrame] = []
    recording = asyncio.Lock()  # one write at a time; the workers go on charging meanwhile

    async def flush() -> None:
        async with recording:
            if buffer:
                chunk = pl.concat(buffer)
                buffer.clear()
                await asyncio.to_thread(record, chunk)

    async def worker() -> None:
        for batch in batches:
            buffer.append(await charge_batch(gateway, batch, settings))
            if not recording.locked() and sum(b.height for b in buffer) >= settings.flush_every:
                await flush()

    await asyncio.gather(*(worker() for _ in range(max(1, settings.max_in_flight // size))))
    await flush()
    return requests.height


def run_charges(requests: pl.DataFrame, gateway: PaymentGateway, settings: ChargeSettings,
                record: Callable[[pl.DataFrame], None]) -> int:
    """Charges every request (REQUEST_SCHEMA columns, unique keys); returns how many were sent."""
    if requests.height == 0:
        return 0
    return asyncio.run(charge_all(requests, gateway, settings, record))
