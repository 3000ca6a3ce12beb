"""Nightly maintenance (SPEC 1.1): contract status on the business date, and status-change errors."""

import dagster as dg

from assets.inputs import INPUT_SPECS
from assets.partitions import facility_day_windows
from assets.resources import ExportFolder, WarehouseResource, frame_metadata, warehouse_table
from billing_pipeline import cycle

CONTRACT_STATUS_DAILY = dg.AssetKey("contract_status_daily")
STATUS_CHANGE_ERRORS = dg.AssetKey("status_change_errors")


@dg.multi_asset(
    specs=[
        warehouse_table(CONTRACT_STATUS_DAILY, "maintenance", [s.key for s in INPUT_SPECS],
                        "Status of every contract on each processed date (stored as intervals)."),
        warehouse_table(STATUS_CHANGE_ERRORS, "maintenance", [s.key for s in INPUT_SPECS],
                        "Freeze / thaw / terminate requests that do not apply, reported once."),
    ],
    partitions_def=facility_day_windows,
)
def maintenance(context: dg.AssetExecutionContext, export: ExportFolder, warehouse: WarehouseResource):
    """Applies status changes up to the business date for the window's facilities."""
    night = export.night(context.partition_key)
    with warehouse.get().connect(echo=context.log.info) as conn:
        out = cycle.maintenance(conn, night)
    days = {"facility_days": night.facility_days.height}
    yield dg.MaterializeResult(asset_key=CONTRACT_STATUS_DAILY, metadata={
        **frame_metadata(out["contract_status_daily"]), **days,
        "status_changes_stored": out["contract_status_log"].height})
    yield dg.MaterializeResult(asset_key=STATUS_CHANGE_ERRORS, metadata={**frame_metadata(out["status_change_errors"]), **days})
