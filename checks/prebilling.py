"""Pre-billing checks, evaluated in the billable-customers step, before billing materializes.

Both checks list what they flagged (those customers are held either way) and warn. A check
that flagged anyone fails with ERROR, and being blocking stops the billing step of the
partition, only when the flagged customers exceed the configured share of the customers who
would be billed that day in the window (SPEC 1.6) on every facility-day of the partition. A
window holding two business dates can block one and not the other: then the checks warn, their
metadata names the blocked facility-days, billing runs and those customers stay held.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from assets.resources import markdown_table

BILLABLE_CUSTOMERS = dg.AssetKey("billable_customers")
DUPLICATE_CONTRACTS_CHECK = "no_duplicate_contracts"
PAYMENT_METHOD_CHECK = "recurring_dues_have_payment_method"

CHECK_SPECS = [
    dg.AssetCheckSpec(DUPLICATE_CONTRACTS_CHECK, asset=BILLABLE_CUSTOMERS, blocking=True,
                      description="Customers with two or more contracts in effect for one plan (held)."),
    dg.AssetCheckSpec(PAYMENT_METHOD_CHECK, asset=BILLABLE_CUSTOMERS, blocking=True,
                      description="Contracts in effect with dues whose customer has no usable payment method."),
]


def check_results(out: dict[str, pl.DataFrame], listed: int = 50) -> list[dg.AssetCheckResult]:
    blocks = out["billing_blocks"]
    blocked = blocks.filter(pl.col("blocked"))
    # The share is per business date of the window. A window holding two dates (zones 24 hours
    # apart) may block one and not the other: then the check only warns, billing runs, and the
    # blocked date's customers stay held (`billing_blocked`), as `billing-pipeline run` does.
    whole_window = blocked.height > 0 and blocked.height == blocks.height
    share = float(blocks.get_column("window_flagged_share").max() or 0.0)
    max_share = float(blocks.get_column("max_share").max() or 0.0)
    common = {
        "window_flagged_share": share,
        "max_share": max_share,
        "blocked_facility_days": blocked.height,
        "blocked": ", ".join(f"{f} {d}" for f, d in blocked.select("facility_id", "business_date").iter_rows()) or "none",
        "billing": ("BLOCKED: dues posted, no one charged" if whole_window
                    else f"blocked for {blocked.height} facility-days of one business date (held)" if blocked.height
                    else "allowed"),
    }
    results = []
    for name, frame in ((DUPLICATE_CONTRACTS_CHECK, out["duplicate_contracts"]),
                        (PAYMENT_METHOD_CHECK, out["recurring_dues_without_payment_method"])):
        # Each check answers for its own flags: none, it passes; some, a warning (they are held);
        # some while the window's share is over the limit, an error that blocks billing.
        severity = dg.AssetCheckSeverity.ERROR if whole_window else dg.AssetCheckSeverity.WARN
        results.append(dg.AssetCheckResult(
            check_name=name, asset_key=BILLABLE_CUSTOMERS, passed=frame.height == 0, severity=severity,
            metadata={**common, "flagged_rows": frame.height,
                      "flagged_customers": frame.get_column("customer_id").n_unique() if frame.height else 0,
                      "flagged": dg.MetadataValue.md(markdown_table(
                          frame.head(listed).with_columns(pl.col(pl.List(pl.String)).list.join(", "))))},
        ))
    return results
