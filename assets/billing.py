"""Billing (SPEC 1.4 - 1.6): billable customers and sweeps with the pre-billing checks, then charging."""

import dagster as dg
import polars as pl

from assets.dues import DUES_POSTINGS
from assets.partitions import facility_day_windows
from assets.resources import (BillingSettings, ExportFolder, GatewayResource, WarehouseResource, frame_metadata,
                              warehouse_table)
from billing_pipeline import cycle
from billing_pipeline.warehouse.ledger import ledger_problems
from checks import prebilling
from checks.ledger import ledger_check_result, ledger_check_spec

BILLABLE_CUSTOMERS = prebilling.BILLABLE_CUSTOMERS
SWEEP_CANDIDATES = dg.AssetKey("sweep_candidates")
DUPLICATE_CONTRACTS = dg.AssetKey("duplicate_contracts")
WITHOUT_PAYMENT_METHOD = dg.AssetKey("recurring_dues_without_payment_method")
BILLING_ATTEMPTS = dg.AssetKey("billing_attempts")
FAILED_BILLING_EVENTS = dg.AssetKey("failed_billing_events")


@dg.multi_asset(
    specs=[
        warehouse_table(BILLABLE_CUSTOMERS, "billing", [DUES_POSTINGS],
                        "Who is billed tonight, with every reason, balance due now and any hold."),
        warehouse_table(SWEEP_CANDIDATES, "billing", [DUES_POSTINGS],
                        "Customers billed by a fixed or rolling sweep, with the sweep day each is for."),
        warehouse_table(DUPLICATE_CONTRACTS, "billing", [DUES_POSTINGS],
                        "Pre-billing report: two or more contracts in effect for one plan."),
        warehouse_table(WITHOUT_PAYMENT_METHOD, "billing", [DUES_POSTINGS],
                        "Pre-billing report: recurring dues and no usable payment method."),
    ],
    check_specs=prebilling.CHECK_SPECS,
    partitions_def=facility_day_windows,
)
def billable(context: dg.AssetExecutionContext, export: ExportFolder, warehouse: WarehouseResource,
             billing: BillingSettings):
    """Selects billable customers and runs the pre-billing checks before any charge."""
    night = export.night(context.partition_key)
    with warehouse.get().connect(echo=context.log.info) as conn:
        out = cycle.select_billable(conn, night, billing.cycle())
    held = out["billable_customers"].group_by("hold_reason").len().sort("hold_reason")
    yield dg.MaterializeResult(asset_key=BILLABLE_CUSTOMERS, metadata={
        **frame_metadata(out["billable_customers"].with_columns(pl.col("reasons").list.join(", "))),
        "holds": dg.MetadataValue.json({str(r["hold_reason"]): r["len"] for r in held.iter_rows(named=True)})})
    yield dg.MaterializeResult(asset_key=SWEEP_CANDIDATES, metadata=frame_metadata(out["sweep_candidates"]))
    yield dg.MaterializeResult(asset_key=DUPLICATE_CONTRACTS, metadata=frame_metadata(
        out["duplicate_contracts"].with_columns(pl.col("contract_ids").list.join(", "))))
    yield dg.MaterializeResult(asset_key=WITHOUT_PAYMENT_METHOD,
                               metadata=frame_metadata(out["recurring_dues_without_payment_method"]))
    yield from prebilling.check_results(out)


@dg.multi_asset(
    specs=[
        warehouse_table(BILLING_ATTEMPTS, "billing", [BILLABLE_CUSTOMERS],
                        "One charge per billable customer not on hold, with its outcome."),
        warehouse_table(FAILED_BILLING_EVENTS, "billing", [BILLING_ATTEMPTS],
                        "Post-billing report: declines and gateway errors, with the reason."),
    ],
    check_specs=[ledger_check_spec(BILLING_ATTEMPTS)],
    partitions_def=facility_day_windows,
)
def charging(context: dg.AssetExecutionContext, export: ExportFolder, warehouse: WarehouseResource,
             gateway: GatewayResource, billing: BillingSettings):
    """Charges through the payment gateway; a rerun resends only what has no outcome yet."""
    night = export.night(context.partition_key)
    store = warehouse.get()
    store.refuse_a_clash()  # before the gateway record, named by the same stem, is opened
    gw = gateway.open()
    try:
        with store.connect(echo=context.log.info) as conn:
            attempts, sent, held = cycle.charge(conn, night, gw, billing.cycle())
            ledger = ledger_check_result(ledger_problems(conn, night.facility_days), BILLING_ATTEMPTS)
    finally:
        gw.close()
    if held:
        context.log.warning(f"{held} customers held at charging: another day charged or selected them after this "
                            "partition's billable customers were selected (billable_customers.hold_reason says which)")
    outcomes = attempts.group_by("outcome").len().sort("outcome")
    yield dg.MaterializeResult(asset_key=BILLING_ATTEMPTS, metadata={
        **frame_metadata(attempts), "sent_this_run": sent, "held_at_charging": held,
        "outcomes": dg.MetadataValue.json({r["outcome"]: r["len"] for r in outcomes.iter_rows(named=True)})})
    yield dg.MaterializeResult(asset_key=FAILED_BILLING_EVENTS, metadata=frame_metadata(
        attempts.filter(pl.col("outcome") != "approved")))
    yield ledger
