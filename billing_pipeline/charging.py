"""Sends charge requests through a gateway: many in flight at once, bounded, with retries.

Requests go to the gateway in batches of `batch_size`, at most `max_in_flight // batch_size`
calls at once, so at most `max_in_flight` charges wait on the gateway at any moment
(`batch_size=1, max_in_flight=64` is 64 single charges in flight). A request the gateway could
not answer (`error`, or the whole call raising GatewayError) is resent with exponential backoff,
then recorded as an `error` outcome; its wait holds up no other charge. Outcomes go
to `record` in chunks of about `flush_every`, one chunk at a time in a thread (DuckDB releases
the GIL), so charging goes on while the last chunk is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from billing_pipeline.gateway.interface import ANSWER_SCHEMA, REQUEST_SCHEMA, GatewayError, PaymentGateway
from billing_pipeline.rules.text import fmt

OUTCOME_SCHEMA = {**ANSWER_SCHEMA, "tries": pl.Int32, "completed_at": pl.Datetime("us", "UTC")}


@dataclass(frozen=True)
class ChargeSettings:
    max_in_flight: int = 8000
    batch_size: int = 2000
    attempts: int = 3
    backoff_s: float = 0.05
    flush_every: int = 50_000


def completed_now() -> pl.Expr:
    """`completed_at` of an outcome recorded now."""
    return pl.lit(dt.datetime.now(dt.UTC), pl.Datetime("us", "UTC")).alias("completed_at")


async def ask(gateway: PaymentGateway, requests: pl.DataFrame, attempt: int) -> pl.DataFrame:
    """The gateway's answers (OUTCOME_SCHEMA) to one call; a call that fails answers `error` for all."""
    try:
        answers = await gateway.charge(requests.select(list(REQUEST_SCHEMA)).cast(REQUEST_SCHEMA))
    except GatewayError as exc:
        answers = requests.select("idempotency_key", outcome=pl.lit("error"), decline_code=pl.lit(None, pl.String),
                                  reference=pl.lit(None, pl.String), message=pl.lit(str(exc)))
    answers = answers.select(list(ANSWER_SCHEMA)).cast(ANSWER_SCHEMA)
    if not answers.get_column("idempotency_key").sort().equals(requests.get_column("idempotency_key").sort()):
        raise RuntimeError(f"the gateway answered {answers.height} requests for the {requests.height} sent")
    return answers.with_columns(pl.lit(attempt, pl.Int32).alias("tries"), completed_now())


async def charge_all(requests: pl.DataFrame, gateway: PaymentGateway, settings: ChargeSettings,
                     record: Callable[[pl.DataFrame], None]) -> int:
    size = max(1, min(settings.batch_size, settings.max_in_flight))
    calls = asyncio.Semaphore(max(1, settings.max_in_flight // size))  # gateway calls under way at once
    buffer: list[pl.DataFrame] = []
    recording = asyncio.Lock()  # one write at a time; charging goes on meanwhile

    async def flush() -> None:
        async with recording:
            if buffer:
                chunk = pl.concat(buffer)
                buffer.clear()
                await asyncio.to_thread(record, chunk)

    async def send(batch: pl.DataFrame, attempt: int) -> None:
        async with calls:
            answers = await ask(gateway, batch, attempt)
        unanswered = pl.col("outcome") == "error"
        if attempt == settings.attempts:
            done, again = answers.with_columns(pl.when(unanswered).then(
                fmt(f"gateway error after {attempt} tries: {{}}", "message")).otherwise("message")), None
        else:
            done, again = answers.filter(~unanswered), answers.filter(unanswered)
        buffer.append(batch.join(done, on="idempotency_key"))
        if not recording.locked() and sum(b.height for b in buffer) >= settings.flush_every:
            await flush()
        if again is not None and again.height:
            # The backoff waits outside the call slots: other batches go on meanwhile.
            await asyncio.sleep(settings.backoff_s * 2 ** (attempt - 1))
            await send(batch.join(again.select("idempotency_key"), on="idempotency_key", how="semi"), attempt + 1)

    await asyncio.gather(*(send(batch, 1) for batch in requests.iter_slices(size)))
    await flush()
    return requests.height


def run_charges(requests: pl.DataFrame, gateway: PaymentGateway, settings: ChargeSettings,
                record: Callable[[pl.DataFrame], None]) -> int:
    """Charges every request (REQUEST_SCHEMA columns, unique keys; other columns are passed
    through to `record` with the outcome); returns how many were sent. A charge of zero or less
    is refused before anything is sent: it would move money the wrong way (the billable rules
    hold such customers; this is the last line)."""
    if requests.height == 0:
        return 0
    not_positive = requests.filter(pl.col("charge_cents") <= 0).get_column("idempotency_key")
    if not_positive.len():
        raise ValueError(f"{not_positive.len()} charge requests of zero or less, none sent: "
                         f"{', '.join(not_positive.head(5))}")
    return asyncio.run(charge_all(requests, gateway, settings, record))
