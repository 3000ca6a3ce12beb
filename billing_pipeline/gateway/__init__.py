"""Payment gateways: the interface the pipeline charges through, and the simulated one."""

from billing_pipeline.gateway.interface import (
    ANSWER_SCHEMA,
    REQUEST_SCHEMA,
    GatewayError,
    IdempotencyConflict,
    PaymentGateway,
)
from billing_pipeline.gateway.simulated import SimulatedGateway

__all__ = ["ANSWER_SCHEMA", "REQUEST_SCHEMA", "GatewayError", "IdempotencyConflict", "PaymentGateway",
           "SimulatedGateway"]
