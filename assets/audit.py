"""The daily full audit of the ledger (SPEC 5): every customer's balance and every key.

Each window's steps check what their facility-days wrote; this checks everything once a day,
including what no window touched (a balance edited by hand, a row written outside the pipeline).
"""

import dagster as dg

from assets.billing import BILLING_ATTEMPTS
from assets.dues import DUES_POSTINGS
from assets.resources import WarehouseResource
from billing_pipeline.warehouse.ledger import audit
from checks.ledger import ledger_check_result, ledger_check_spec

LEDGER_AUDITS = dg.AssetKey("ledger_audits")
AUDIT_JOB = "ledger_audit"


@dg.asset(key=LEDGER_AUDITS, group_name="audit", kinds={"duckdb"}, deps=[DUES_POSTINGS, BILLING_ATTEMPTS],
          check_specs=[ledger_check_spec(LEDGER_AUDITS, "Every customer: balance = debits - credits; no key "
                                         "twice; the whole ledger matches approved charges and dues postings.")])
def ledger_audit(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    """Audits the whole ledger and appends the result to `ledger_audits`."""
    with warehouse.get().connect(echo=context.log.info) as conn:
        problems, record = audit(conn)
    yield dg.MaterializeResult(asset_key=LEDGER_AUDITS, metadata={
        "ledger_entries": record["ledger_entries"], "customers": record["customers"], "problems": record["problems"]})
    yield ledger_check_result(problems, LEDGER_AUDITS)


def build_audit_schedule(job) -> dg.ScheduleDefinition:
    # Runs queue behind the windows (one run at a time), so any hour will do.
    return dg.ScheduleDefinition(name="daily_ledger_audit", job=job, cron_schedule="30 12 * * *",
                                 execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED,
                                 description="The full ledger audit, once a day.")
