"""The ledger invariant (SPEC 5), checked after every step that writes the ledger."""

from __future__ import annotations

import dagster as dg
import duckdb

from assets.resources import markdown_table
from billing_pipeline.warehouse.ledger import ledger_problems

LEDGER_CHECK = "ledger_balances"


def ledger_check_spec(asset: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(LEDGER_CHECK, asset=asset,
                             description="For every customer balance = debits - credits; no ledger key twice.")


def ledger_check_result(conn: duckdb.DuckDBPyConnection, asset: dg.AssetKey) -> dg.AssetCheckResult:
    problems = ledger_problems(conn)
    metadata = {name: frame.height for name, frame in problems.items()}
    for name, frame in problems.items():
        if frame.height:
            metadata[f"{name}_sample"] = dg.MetadataValue.md(markdown_table(frame.head(20)))
    return dg.AssetCheckResult(check_name=LEDGER_CHECK, asset_key=asset,
                               passed=not any(f.height for f in problems.values()), metadata=metadata)
