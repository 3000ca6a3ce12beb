"""The ledger invariant (SPEC 5): after every step that writes the ledger, for what the step's
facility-days wrote; once a day, a full audit of every customer (`assets/audit.py`)."""

from __future__ import annotations

import dagster as dg
import polars as pl

from assets.resources import markdown_table

LEDGER_CHECK = "ledger_balances"


def ledger_check_spec(asset: dg.AssetKey, description: str | None = None) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(LEDGER_CHECK, asset=asset, description=description or (
        "For every customer the window's facility-days posted to: balance = debits - credits; "
        "no period, payment or entry key twice; the ledger matches approved charges and dues postings."))


def ledger_check_result(problems: dict[str, pl.DataFrame], asset: dg.AssetKey) -> dg.AssetCheckResult:
    metadata = {name: frame.height for name, frame in problems.items()}
    for name, frame in problems.items():
        if frame.height:
            metadata[f"{name}_sample"] = dg.MetadataValue.md(markdown_table(frame.head(20)))
    return dg.AssetCheckResult(check_name=LEDGER_CHECK, asset_key=asset,
                               passed=not any(f.height for f in problems.values()), metadata=metadata)
