"""The validated input tables: one asset per table of the export (SPEC section 3).

All tables are loaded and validated together before anything downstream runs; a bad export
fails this step with the file, column and row key, and nothing is written.
"""

import dagster as dg

from assets.partitions import facility_day_windows
from assets.resources import ExportFolder, frame_metadata
from billing_pipeline.inputs.contract import TABLES

INPUT_SPECS = [
    dg.AssetSpec(name, group_name="inputs", kinds={"polars"}, description=f"The export's `{name}` table, validated.")
    for name in TABLES
]


@dg.multi_asset(specs=INPUT_SPECS, partitions_def=facility_day_windows)
def export_tables(context: dg.AssetExecutionContext, export: ExportFolder):
    """Loads and validates the export; materializes row counts, schemas and previews."""
    inputs = export.load()
    for name in TABLES:
        yield dg.MaterializeResult(asset_key=name, metadata={**frame_metadata(getattr(inputs, name)),
                                                             "export": dg.MetadataValue.path(export.path)})
