"""`billing-pipeline`: generate demo data, run the nightly cycle, run the demo (SPEC 7).

Errors a user can fix (bad input, a bad date) are one readable line and a non-zero exit.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import click

from billing_pipeline.charging import ChargeSettings

EXIT_BAD_INPUT = 2
EXIT_BLOCKED = 3
EXIT_LEDGER = 4


def parse_date(_ctx, _param, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class OneLineErrors(click.Group):
    """Any failure the commands do not handle themselves is still one line, not a traceback
    (BILLING_DEBUG=1 shows the traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if os.environ.get("BILLING_DEBUG"):
                raise
            fail(f"{exc.__class__.__name__}: {exc}".splitlines()[0], 1)


@click.group(cls=OneLineErrors)
def main() -> None:
    """Batch billing for gym chains and certifying associations."""


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write.")
@click.option("--contracts", default=20_000, show_default=True, type=click.IntRange(min=1))
@click.option("--facilities", default=12, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--start", default="2026-03-28", show_default=True, callback=parse_date,
              help="First business date the data is meant to be billed for.")
@click.option("--format", "fmt", default="parquet", show_default=True, type=click.Choice(["parquet", "csv"]))
def generate(out: Path, contracts: int, facilities: int, seed: int, start: dt.date, fmt: str) -> None:
    """Write demo data in the input contract, deterministic for a seed."""
    from billing_pipeline.demo_data import generate as generate_data

    counts = generate_data(out, contracts=contracts, facilities=facilities, seed=seed, start=start, fmt=fmt,
                           progress=contracts >= 100_000)
    click.echo(f"wrote {', '.join(f'{n} {t}' for t, n in counts.items())} to {out}")


@main.command()
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Export folder (one file per table).")
@click.option("--db", required=True, type=click.Path(dir_okay=False, path_type=Path), help="DuckDB file to write.")
@click.option("--date", "date", required=True, callback=parse_date, help="Business date D (YYYY-MM-DD).")
@click.option("--through", default=None, callback=parse_date, help="Last business date, day by day from D.")
@click.option("--facility", default=None, help="Only this facility.")
@click.option("--gateway-state", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Simulated gateway's record of charges (default: beside the DuckDB file).")
@click.option("--gateway-latency-ms", default=0.0, show_default=True, type=float)
@click.option("--decline-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1))
@click.option("--max-in-flight", default=ChargeSettings.max_in_flight, show_default=True, type=click.IntRange(min=1),
              help="Charges waiting on the gateway at once, at most.")
@click.option("--batch-size", default=ChargeSettings.batch_size, show_default=True, type=click.IntRange(min=1),
              help="Charges per gateway call.")
@click.option("--max-flagged-share", default=0.02, show_default=True, type=click.FloatRange(0, 1),
              help="Block a window's billing for a date above this share of flagged billable customers.")
def run(data: Path, db: Path, date: dt.date, through: dt.date | None, facility: str | None,
        gateway_state: Path | None, gateway_latency_ms: float, decline_rate: float, max_in_flight: int,
        batch_size: int, max_flagged_share: float) -> None:
    """Run the nightly cycle for business date D (to --through), for every facility."""
    from billing_pipeline.cycle import RefusedDay
    from billing_pipeline.inputs.load import InputError
    from billing_pipeline.runner import RunOptions, run_dates

    through = through or date
    if through < date:
        fail(f"--through {through} is before --date {date}", EXIT_BAD_INPUT)
    options = RunOptions(gateway_state=gateway_state, latency_s=gateway_latency_ms / 1000,
                         decline_rate=decline_rate, max_in_flight=max_in_flight, batch_size=batch_size,
                         max_flagged_share=max_flagged_share)
    try:
        summaries = run_dates(data, db, date, through, facility, options, echo=click.echo)
    except InputError as exc:
        fail(f"bad input, nothing written: {exc}", EXIT_BAD_INPUT)
    except (LookupError, RefusedDay) as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    if any(s.ledger_problems.get(k) for s in summaries for k in s.ledger_problems):
        fail("the ledger check failed: see the ledger and customer_balances tables", EXIT_LEDGER)
    blocked = [day for s in summaries for day in s.blocked_facility_days]
    if blocked:
        billed = sum(s.facility_days for s in summaries) - len(blocked)
        days = "facility-day" if len(blocked) == 1 else "facility-days"
        fail(f"billing blocked by the pre-billing checks for {len(blocked)} {days} "
             f"({', '.join(blocked[:5])}{'...' if len(blocked) > 5 else ''}): their dues posted, none of their "
             f"customers charged{f' (the other {billed} billed)' if billed else ''}; "
             "see tables billing_blocks, duplicate_contracts, recurring_dues_without_payment_method", EXIT_BLOCKED)


@main.command("audit-ledger")
@click.option("--db", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The warehouse DuckDB file.")
def audit_ledger(db: Path) -> None:
    """The full ledger audit (every customer, every key), recorded in table ledger_audits."""
    from billing_pipeline.warehouse.ledger import audit
    from billing_pipeline.warehouse.store import Warehouse

    with Warehouse(db).connect(echo=click.echo) as conn:
        problems, record = audit(conn)
    click.echo(f"{record['ledger_entries']:,} ledger entries, {record['customers']:,} customers: "
               + ("balanced, no key twice" if not record["problems"] else
                  ", ".join(f"{name} {frame.height}" for name, frame in problems.items() if frame.height)))
    if record["problems"]:
        fail("the ledger audit failed: see the ledger, customer_balances and ledger_audits tables", EXIT_LEDGER)


@main.command()
@click.option("--dir", "workdir", default=Path("demo"), show_default=True, type=click.Path(path_type=Path))
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 31))
@click.option("--contracts", default=20_000, show_default=True, type=click.IntRange(min=100))
def demo(workdir: Path, days: int, contracts: int) -> None:
    """Generate demo data and run it through the Dagster job for several days, then summarize."""
    from billing_pipeline.demo import run_demo

    run_demo(workdir, days=days, contracts=contracts, echo=click.echo)


if __name__ == "__main__":
    main()
