"""What the pipeline needs from a payment gateway (SPEC 1.5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class ChargeRequest:
    idempotency_key: str
    customer_id: str
    payment_method_id: str
    token: str
    amount_cents: int  # the whole amount charged: balance plus surcharge


@dataclass(frozen=True)
class ChargeResult:
    outcome: Literal["approved", "declined"]
    decline_code: str | None = None
    reference: str | None = None


class GatewayError(Exception):
    """The gateway could not answer (timeout, outage): the charge may be retried."""


class IdempotencyConflict(Exception):
    """A key was reused for a different request: a bug, never retried."""


class PaymentGateway(Protocol):
    async def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charges once per idempotency key: a repeated key returns the first answer."""
        ...
