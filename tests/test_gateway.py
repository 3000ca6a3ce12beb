"""The simulated gateway and bounded charging: idempotency, tokens, concurrency bound, retries."""

import asyncio
import datetime as dt

import polars as pl
import pytest

from billing_pipeline.charging import ChargeSettings, run_charges
from billing_pipeline.gateway import GatewayError, IdempotencyConflict, SimulatedGateway


def requests(*rows):
    """rows: (key, token, amount)"""
    return pl.DataFrame([{"idempotency_key": k, "customer_id": f"C-{k}", "payment_method_id": f"PM-{k}", "token": t,
                          "charge_cents": a} for k, t, a in rows])


def answers(gateway, *rows):
    return {r["idempotency_key"]: r for r in asyncio.run(gateway.charge(requests(*rows))).iter_rows(named=True)}


def test_a_repeated_key_is_answered_from_the_record_and_charged_once(tmp_path):
    gateway = SimulatedGateway(tmp_path / "gw.sqlite")
    first = answers(gateway, ("k1", "tok_ok", 1000))
    again = answers(SimulatedGateway(tmp_path / "gw.sqlite"), ("k1", "tok_ok", 1000), ("k2", "tok_ok", 500))
    assert first["k1"]["outcome"] == again["k1"]["outcome"] == "approved"
    assert first["k1"]["reference"] == again["k1"]["reference"] is not None
    assert gateway.captured() == {"k1": 1000, "k2": 500}
    assert gateway._db.execute("SELECT times_requested FROM charges WHERE idempotency_key = 'k1'").fetchone() == (2,)
    # The same key for another amount is refused, and nothing of that call is kept.
    with pytest.raises(IdempotencyConflict):
        answers(gateway, ("k3", "tok_ok", 700), ("k1", "tok_ok", 999))
    assert gateway.captured() == {"k1": 1000, "k2": 500}


def test_overlapping_calls_record_each_key_once(tmp_path):
    """Calls overlap (their records are written in a thread, one at a time): 20 calls at once,
    each sharing keys with the next, charge every key once and answer repeats from the record."""
    gateway = SimulatedGateway(tmp_path / "gw.sqlite")

    async def all_calls():
        return await asyncio.gather(*(gateway.charge(requests(*[(f"k{i + j}", "tok", 100) for j in range(10)]))
                                      for i in range(0, 100, 5)))

    got = asyncio.run(all_calls())
    assert all(set(a["idempotency_key"]) == {f"k{i + j}" for j in range(10)} and a.height == 10
               for i, a in zip(range(0, 100, 5), got))
    assert gateway.captured() == {f"k{i}": 100 for i in range(105)}
    references = {}
    for answer in got:
        for key, reference in zip(answer["idempotency_key"], answer["reference"]):
            assert references.setdefault(key, reference) == reference  # a repeat gets the first answer
    requested = dict(gateway._db.execute("SELECT idempotency_key, times_requested FROM charges").fetchall())
    assert requested["k0"] == 1 and requested["k5"] == 2 and sum(requested.values()) == 200


def test_tokens_decide_the_answer(tmp_path):
    gateway = SimulatedGateway(tmp_path / "gw.sqlite")
    got = answers(gateway, ("a", "decline_insufficient_funds", 100), ("b", "error_timeout", 100), ("c", "tok", 100))
    assert (got["a"]["outcome"], got["a"]["decline_code"]) == ("declined", "insufficient_funds")
    assert got["b"]["outcome"] == "error" and "error_timeout" in got["b"]["message"]
    assert (got["c"]["outcome"], got["c"]["decline_code"]) == ("approved", None)
    assert gateway.captured() == {"c": 100}


def test_random_declines_are_stable_per_key(tmp_path):
    rows = [(f"k{i}", "tok", 100) for i in range(400)]
    gateway = SimulatedGateway(tmp_path / "gw.sqlite", decline_rate=0.5, seed=1)
    outcomes = {k: r["outcome"] for k, r in answers(gateway, *rows).items()}
    assert 140 < list(outcomes.values()).count("declined") < 260
    fresh = SimulatedGateway(tmp_path / "other.sqlite", decline_rate=0.5, seed=1)
    assert {k: r["outcome"] for k, r in answers(fresh, *rows).items()} == outcomes
    none = SimulatedGateway(tmp_path / "none.sqlite", decline_rate=0.0)
    assert {r["outcome"] for r in answers(none, *rows).values()} == {"approved"}


class CountingGateway:
    """Wraps a gateway to watch how many charges wait on it at once; the first call of each
    batch can fail as a whole (an outage)."""

    def __init__(self, inner, fail_first_call=False):
        self.inner, self.in_flight, self.peak, self.calls = inner, 0, 0, 0
        self.fail_first_call, self.failed = fail_first_call, set()

    async def charge(self, batch):
        self.calls += 1
        self.in_flight += batch.height
        self.peak = max(self.peak, self.in_flight)
        try:
            first = batch.item(0, "idempotency_key")
            if self.fail_first_call and first not in self.failed:
                self.failed.add(first)
                await asyncio.sleep(0.001)
                raise GatewayError("connection reset")
            return await self.inner.charge(batch)
        finally:
            self.in_flight -= batch.height


@pytest.mark.parametrize("batch_size", [1, 3])
def test_charging_is_concurrent_but_bounded_and_records_every_outcome(tmp_path, batch_size):
    gateway = CountingGateway(SimulatedGateway(tmp_path / "gw.sqlite", latency_s=0.01))
    chunks = []
    todo = requests(*[(f"k{i}", "error_x" if i % 10 == 0 else "tok", 100 + i) for i in range(100)])
    settings = ChargeSettings(max_in_flight=9, batch_size=batch_size, attempts=2, backoff_s=0.001, flush_every=30)
    sent = run_charges(todo, gateway, settings, chunks.append)
    outcomes = pl.concat(chunks)
    assert sent == 100 and gateway.peak == 9
    assert max(c.height for c in chunks) <= 30 + batch_size and len(chunks) >= 3
    assert sorted(outcomes.get_column("idempotency_key")) == sorted(todo.get_column("idempotency_key"))
    errors = outcomes.filter(pl.col("outcome") == "error")
    assert errors.height == 10 and errors.get_column("tries").to_list() == [2] * 10
    assert errors.get_column("message").str.contains("after 2 tries").all()
    assert outcomes.filter(pl.col("outcome") == "approved").get_column("tries").to_list() == [1] * 90


def test_a_failed_call_is_resent_and_charges_once(tmp_path):
    inner = SimulatedGateway(tmp_path / "gw.sqlite")
    gateway = CountingGateway(inner, fail_first_call=True)
    chunks = []
    todo = requests(*[(f"k{i}", "tok", 100) for i in range(20)])
    run_charges(todo, gateway, ChargeSettings(max_in_flight=10, batch_size=5, backoff_s=0.001), chunks.append)
    outcomes = pl.concat(chunks)
    assert outcomes.get_column("outcome").to_list() == ["approved"] * 20
    assert set(outcomes.get_column("tries")) == {2}
    assert gateway.calls == 8 and len(inner.captured()) == 20


def test_a_request_waiting_to_be_resent_holds_up_no_other_charge(tmp_path):
    gateway = SimulatedGateway(tmp_path / "gw.sqlite")
    chunks = []
    todo = requests(("k0", "error_timeout", 100), *[(f"k{i}", "tok", 100) for i in range(1, 21)])
    # One call at a time and a 2 s backoff: if the wait held the call slot, nobody else would be
    # charged before it ends. Twenty charges at zero latency take well under a second.
    started = dt.datetime.now(dt.timezone.utc)
    run_charges(todo, gateway, ChargeSettings(max_in_flight=1, batch_size=1, attempts=2, backoff_s=2.0),
                chunks.append)
    outcomes = pl.concat(chunks)
    failed = outcomes.filter(pl.col("idempotency_key") == "k0").row(0, named=True)
    others = outcomes.filter(pl.col("idempotency_key") != "k0")
    assert (failed["outcome"], failed["tries"]) == ("error", 2)
    assert others.get_column("outcome").to_list() == ["approved"] * 20
    assert others.get_column("completed_at").max() < failed["completed_at"]
    # everyone else was charged during k0's backoff, not after it
    assert others.get_column("completed_at").max() < started + dt.timedelta(seconds=1.0)


def test_the_latency_is_the_answer_time_and_the_record_is_kept_within_it(tmp_path):
    """A remote gateway keeps its record within its answer time: the key is on record while the
    call still waits, and the answer comes no sooner than the latency."""
    gateway = SimulatedGateway(tmp_path / "gw.sqlite", latency_s=1.0)
    seen_while_waiting = []

    async def call_and_watch():
        started = asyncio.get_running_loop().time()
        call = asyncio.ensure_future(gateway.charge(requests(("k1", "tok", 100))))
        while not call.done() and not seen_while_waiting:
            await asyncio.sleep(0.02)
            if SimulatedGateway(tmp_path / "gw.sqlite").captured():  # another connection: committed
                seen_while_waiting.append(asyncio.get_running_loop().time() - started)
        answer = await call
        return answer, asyncio.get_running_loop().time() - started

    answer, took = asyncio.run(call_and_watch())
    assert answer.get_column("outcome").to_list() == ["approved"]
    assert took >= 0.99  # asyncio may wake a timer up to its clock resolution early
    assert seen_while_waiting and seen_while_waiting[0] < 0.5  # kept while the latency ran, not after it
