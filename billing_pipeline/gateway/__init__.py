"""Payment gateways: the interface the pipeline charges through, and the simulated one."""

from billing_pipeline.gateway.interface import ChargeRequest, ChargeResult, GatewayError, PaymentGateway
from billing_pipeline.gateway.simulated import SimulatedGateway

__all__ = ["ChargeRequest", "ChargeResult", "GatewayError", "PaymentGateway", "SimulatedGateway"]
