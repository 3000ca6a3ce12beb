"""The simulated gateway and bounded charging: idempotency, tokens, concurrency bound, retries."""

import asyncio

import pytest

from billing_pipeline.charging import ChargeSettings, run_charges
from billing_pipeline.gateway import ChargeRequest, GatewayError, SimulatedGateway
from billing_pipeline.gateway.interface import ChargeResult, IdempotencyConflict


def request(key="k1", token="tok_ok", amount=1000):
    return ChargeRequest(key, "C1", "PM1", token, amount)


def test_a_repeated_key_is_answered_from_the_record_and_charged_once(tmp_path):
    gateway = SimulatedGateway(tmp_path / "gw.sqlite")
    first = asyncio.run(gateway.charge(request()))
    again = asyncio.run(SimulatedGateway(tmp_path / "gw.sqlite").charge(request()))  # another process, same file
    assert first.outcome == again.outcome == "approved" and first.reference == again.reference
    assert gateway.captured() == {"k1": 1000}
    with pytest.raises(IdempotencyConflict):
        asyncio.run(gateway.charge(request(amount=999)))


def test_tokens_decide_the_answer(tmp_path):
    gateway = SimulatedGateway(tmp_path / "gw.sqlite")
    assert asyncio.run(gateway.charge(request("a", "decline_insufficient_funds"))) == ChargeResult(
        "declined", "insufficient_funds", asyncio.run(gateway.charge(request("a", "decline_insufficient_funds"))).reference)
    with pytest.raises(GatewayError):
        asyncio.run(gateway.charge(request("b", "error_timeout")))
    assert gateway.captured() == {}


def test_random_declines_are_stable_per_key(tmp_path):
    gateway = SimulatedGateway(tmp_path / "gw.sqlite", decline_rate=0.5, seed=1)
    outcomes = [asyncio.run(gateway.charge(request(f"k{i}"))).outcome for i in range(200)]
    assert 60 < outcomes.count("declined") < 140
    fresh = SimulatedGateway(tmp_path / "other.sqlite", decline_rate=0.5, seed=1)
    assert [asyncio.run(fresh.charge(request(f"k{i}"))).outcome for i in range(200)] == outcomes


class CountingGateway:
    """Wraps the simulated gateway to watch how many charges wait on it at once."""

    def __init__(self, inner):
        self.inner, self.in_flight, self.peak = inner, 0, 0

    async def charge(self, req):
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self.inner.charge(req)
        finally:
            self.in_flight -= 1


def test_charging_is_concurrent_but_bounded_and_records_every_outcome(tmp_path):
    gateway = CountingGateway(SimulatedGateway(tmp_path / "gw.sqlite", latency_s=0.01))
    batches = []
    requests = [request(f"k{i}", "error_x" if i % 10 == 0 else "tok") for i in range(100)]
    sent = run_charges(requests, gateway, ChargeSettings(max_in_flight=8, attempts=2, backoff_s=0.001, flush_every=30),
                       batches.append)
    outcomes = [o for batch in batches for o in batch]
    assert sent == 100 and gateway.peak == 8
    assert max(len(b) for b in batches) <= 30 and len(batches) >= 4
    assert sorted(o.idempotency_key for o in outcomes) == sorted(r.idempotency_key for r in requests)
    errors = [o for o in outcomes if o.outcome == "error"]
    assert len(errors) == 10 and all(o.tries == 2 for o in errors)
