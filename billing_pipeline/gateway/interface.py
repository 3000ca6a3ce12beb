"""What the pipeline needs from a payment gateway (SPEC 1.5).

The pipeline hands the gateway a batch of requests as a frame and gets one answer per request:
a batch API call (or, for a gateway that only takes one charge per call, an adapter that sends
the batch's charges concurrently). Columns are fixed so a gateway never sees more than it needs.
"""

from __future__ import annotations

from typing import Protocol

import polars as pl

REQUEST_SCHEMA = {
    "idempotency_key": pl.String,
    "customer_id": pl.String,
    "payment_method_id": pl.String,
    "token": pl.String,
    "charge_cents": pl.Int64,  # the whole amount charged: balance plus surcharge
}

ANSWER_SCHEMA = {
    "idempotency_key": pl.String,
    "outcome": pl.String,  # approved / declined / error (could not answer this request now: retryable)
    "decline_code": pl.String,
    "reference": pl.String,
    "message": pl.String,
}


class GatewayError(Exception):
    """The gateway could not answer the call at all (timeout, outage): every request may be retried."""


class IdempotencyConflict(Exception):
    """A key was reused for a different request: a bug, never retried."""


class PaymentGateway(Protocol):
    async def charge(self, requests: pl.DataFrame) -> pl.DataFrame:
        """Charges each request (REQUEST_SCHEMA) at most once per idempotency key: a repeated key
        is answered with its first answer. Returns one row per request (ANSWER_SCHEMA)."""
        ...

    # Optional (the pipeline asks `getattr(gateway, "answered", None)`): a gateway that can say,
    # without charging, which keys it has already answered. Without it, a request written by a
    # run that died before hearing back is sent as written, since it may have gone through.
    async def answered(self, keys: pl.Series) -> pl.DataFrame:
        """The answers on record for these idempotency keys (ANSWER_SCHEMA), charging nothing:
        a key the gateway never charged (or declined) has no row."""
        ...
