"""The code location `dagster dev` loads (workspace.yaml): assets, checks, job, schedule, resources."""

from __future__ import annotations

import dagster as dg

from assets import audit, billing, dues, inputs, maintenance
from assets.resources import resources_from_env
from assets.schedules import NIGHTLY_JOB, build_schedule

NIGHTLY_ASSETS = [inputs.export_tables, maintenance.maintenance, dues.dues_posting, billing.billable, billing.charging]
ALL_ASSETS = [*NIGHTLY_ASSETS, audit.ledger_audit]


def build_definitions(data_dir: str | None = None, db_path: str | None = None) -> dg.Definitions:
    # One process per run: DuckDB allows one writer, and steps are cheap in-process.
    # Partitioned by the hourly windows: the selected assets' partitions.
    job = dg.define_asset_job(NIGHTLY_JOB, selection=dg.AssetSelection.assets(*NIGHTLY_ASSETS),
                              executor_def=dg.in_process_executor,
                              description="Maintenance -> dues posting -> pre-billing checks -> charging.")
    audit_job = dg.define_asset_job(audit.AUDIT_JOB, selection=dg.AssetSelection.assets(audit.ledger_audit),
                                    executor_def=dg.in_process_executor, description="The full ledger audit.")
    return dg.Definitions(assets=ALL_ASSETS, jobs=[job, audit_job],
                          schedules=[build_schedule(job), audit.build_audit_schedule(audit_job)],
                          resources=resources_from_env(data_dir, db_path))


defs = build_definitions()
