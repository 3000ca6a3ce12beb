"""Dues posting (SPEC 1.2, 1.3): due contracts, postings to the ledger, and posting errors."""

import dagster as dg

from assets.maintenance import CONTRACT_STATUS_DAILY
from assets.partitions import facility_day_windows
from assets.resources import ExportFolder, WarehouseResource, frame_metadata, warehouse_table
from billing_pipeline import cycle
from billing_pipeline.warehouse.ledger import ledger_problems
from checks.ledger import ledger_check_result, ledger_check_spec

DUE_CONTRACTS = dg.AssetKey("due_contracts")
DUES_POSTINGS = dg.AssetKey("dues_postings")
DUES_POSTING_ERRORS = dg.AssetKey("dues_posting_errors")


@dg.multi_asset(
    specs=[
        warehouse_table(DUE_CONTRACTS, "dues", [CONTRACT_STATUS_DAILY],
                        "Every unposted period due on or before the business date, before holds."),
        warehouse_table(DUES_POSTINGS, "dues", [DUE_CONTRACTS],
                        "Dues and freeze fees posted to the ledger (once per contract and bill date)."),
        warehouse_table(DUES_POSTING_ERRORS, "dues", [DUE_CONTRACTS],
                        "Contracts whose dues could not post, with a reason a person understands."),
    ],
    check_specs=[ledger_check_spec(DUES_POSTINGS)],
    partitions_def=facility_day_windows,
)
def dues_posting(context: dg.AssetExecutionContext, export: ExportFolder, warehouse: WarehouseResource):
    """Posts every unposted period up to the business date for the window's facilities."""
    night = export.night(context.partition_key)
    with warehouse.get().connect(echo=context.log.info) as conn:
        out, new_entries = cycle.post_dues(conn, night)
        ledger = ledger_check_result(ledger_problems(conn, night.facility_days), DUES_POSTINGS)
    yield dg.MaterializeResult(asset_key=DUE_CONTRACTS, metadata=frame_metadata(out["due_contracts"]))
    yield dg.MaterializeResult(asset_key=DUES_POSTINGS, metadata={
        **frame_metadata(out["dues_postings"]), "new_ledger_entries": new_entries,
        "amount_cents": int(out["dues_postings"].get_column("amount_cents").sum())})
    yield dg.MaterializeResult(asset_key=DUES_POSTING_ERRORS, metadata=frame_metadata(out["dues_posting_errors"]))
    yield ledger
