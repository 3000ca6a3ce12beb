"""Resources: where the export is, the warehouse file, the payment gateway, billing settings."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import dagster as dg
import polars as pl

from billing_pipeline.charging import ChargeSettings
from billing_pipeline.cycle import CycleSettings
from billing_pipeline.facility_clock import facility_days_for_partition
from billing_pipeline.gateway import SimulatedGateway
from billing_pipeline.inputs.load import Inputs, load_inputs
from billing_pipeline.night import Night
from billing_pipeline.runner import default_gateway_state
from billing_pipeline.warehouse.store import Warehouse


@lru_cache(maxsize=2)
def _load(folder: str, fingerprint: tuple) -> Inputs:
    return load_inputs(folder)


@lru_cache(maxsize=1)
def _night(folder: str, fingerprint: tuple, partition_key: str) -> Night:
    # The steps of one run share the night's derived frames (status timeline, statuses on D).
    inputs = _load(folder, fingerprint)
    return Night(inputs, facility_days_for_partition(inputs.facilities, partition_key))


def fingerprint(folder: Path) -> tuple:
    return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*.*")))


class ExportFolder(dg.ConfigurableResource):
    """The cumulative export: one NAME.parquet or NAME.csv per table."""

    path: str

    def load(self) -> Inputs:
        """Validated tables; loaded once per process while the files are unchanged."""
        folder = Path(self.path)
        return _load(str(folder), fingerprint(folder) if folder.is_dir() else ())

    def night(self, partition_key: str) -> Night:
        folder = Path(self.path)
        return _night(str(folder), fingerprint(folder) if folder.is_dir() else (), partition_key)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file analysts query (the pipeline writes `<name>.writer.duckdb` and publishes)."""

    path: str

    def get(self) -> Warehouse:
        return Warehouse(self.path)


class GatewayResource(dg.ConfigurableResource):
    """The simulated payment gateway; its record of charges sits beside the warehouse by default."""

    state_path: str = ""
    warehouse_path: str = ""
    latency_ms: float = 0.0
    decline_rate: float = 0.0

    def open(self) -> SimulatedGateway:
        state = Path(self.state_path) if self.state_path else default_gateway_state(Path(self.warehouse_path))
        return SimulatedGateway(state, latency_s=self.latency_ms / 1000, decline_rate=self.decline_rate)


class BillingSettings(dg.ConfigurableResource):
    max_flagged_share: float = 0.02
    max_in_flight: int = ChargeSettings.max_in_flight  # charges waiting on the gateway at once
    batch_size: int = ChargeSettings.batch_size  # charges per gateway call

    def cycle(self) -> CycleSettings:
        return CycleSettings(max_flagged_share=self.max_flagged_share,
                             charging=ChargeSettings(max_in_flight=self.max_in_flight,
                                                     batch_size=self.batch_size))


def resources_from_env(data_dir: str | None = None, db_path: str | None = None) -> dict:
    data_dir = data_dir or os.getenv("BILLING_DATA_DIR", "demo/data")
    db_path = db_path or os.getenv("BILLING_DB", "demo/billing.duckdb")
    return {
        "export": ExportFolder(path=data_dir),
        "warehouse": WarehouseResource(path=db_path),
        "gateway": GatewayResource(warehouse_path=db_path,
                                   latency_ms=float(os.getenv("BILLING_GATEWAY_LATENCY_MS", "0")),
                                   decline_rate=float(os.getenv("BILLING_GATEWAY_DECLINE_RATE", "0"))),
        "billing": BillingSettings(max_flagged_share=float(os.getenv("BILLING_MAX_FLAGGED_SHARE", "0.02"))),
    }


def warehouse_table(key: dg.AssetKey, group: str, deps: list, description: str) -> dg.AssetSpec:
    """An asset that is a DuckDB warehouse table written per facility-day."""
    return dg.AssetSpec(key, group_name=group, kinds={"duckdb"}, deps=deps, description=description)


def frame_metadata(frame: pl.DataFrame, preview_rows: int = 10) -> dict:
    """Row count, column schema and a short markdown preview for the Dagster UI."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": schema,
        "preview": dg.MetadataValue.md(markdown_table(frame.head(preview_rows))),
    }


def markdown_table(frame: pl.DataFrame) -> str:
    if frame.width == 0:
        return "(no columns)"
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    rows = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in frame.iter_rows())
    return header + (rows or "| " + " | ".join("" for _ in frame.columns) + " |\n")
