"""State a night reads instead of the whole history, and how it is moved.

`contract_periods` (each contract's latest period in the ledger, the last day its periods
cover, its earliest period and series start) moves with every ledger
posting (`ledger.move_state`); `unanswered_charge_days` with every write of charge requests and
every charging that recorded all its outcomes (`cycle.charge`). At every open of the warehouse
each also takes in the history rows written since it last did (`CATCH_UPS`, run by
`store.create_schema` in one transaction with the schema): a warehouse written before a state
table existed gets it filled from its whole history (an interrupted fill is redone whole), and
rows written by anything that did not keep the state (an older version of the pipeline run
against the warehouse) are taken in at the next open. Taking a row in twice is harmless. A state
table written before one of its columns existed (`REBUILT_WITHOUT`) is dropped and filled again.
"""

from __future__ import annotations

PERIOD_KINDS = ("dues", "freeze_fee")  # the ledger entries that post a contract's period
PERIOD_KINDS_SQL = "(" + ", ".join(f"'{kind}'" for kind in PERIOD_KINDS) + ")"


# The last day a period entry covers; an entry written before periods had an end covers its bill
# date (a night then opens the window after it, as that version did).
PERIOD_END_SQL = "coalesce(period_end, bill_date)"


def contract_periods_upsert(entries: str) -> str:
    """The statement moving contract_periods by the period entries of `entries` (ledger rows:
    a table or a subquery). (least and greatest skip a null: a series_from posted before the
    column existed is overtaken by the first one known.)"""
    return f"""
        INSERT INTO contract_periods
        SELECT contract_id, max(bill_date), max(business_date), max({PERIOD_END_SQL}), min(bill_date),
               min(series_from) FROM {entries}
        WHERE kind IN {PERIOD_KINDS_SQL}
        GROUP BY contract_id ORDER BY contract_id
        ON CONFLICT (contract_id) DO UPDATE
        SET last_bill_date = greatest(last_bill_date, excluded.last_bill_date),
            last_business_date = greatest(last_business_date, excluded.last_business_date),
            paid_through = greatest(paid_through, excluded.paid_through),
            first_period_date = least(first_period_date, excluded.first_period_date),
            series_from = least(series_from, excluded.series_from)"""


# A state table whose file lacks this column (its newest) is dropped, then made and filled again
# from the history.
REBUILT_WITHOUT = {"contract_periods": "series_from"}


# Per state table: the write time of the newest history row, and the statement taking in the rows
# written at or after $since (null: all of them).
CATCH_UPS = {
    "contract_periods": ("SELECT max(posted_at) FROM ledger", contract_periods_upsert(
        "(SELECT * FROM ledger WHERE $since IS NULL OR posted_at >= $since)")),
    # The attempts are read for the new requests' days only (an attempt has its request's day).
    "unanswered_charge_days": ("SELECT max(requested_at) FROM charge_requests", """
        INSERT INTO unanswered_charge_days
        WITH fresh AS (SELECT facility_id, business_date, idempotency_key FROM charge_requests
                       WHERE $since IS NULL OR requested_at >= $since),
             answered AS (SELECT idempotency_key FROM billing_attempts
                          SEMI JOIN (SELECT DISTINCT facility_id, business_date FROM fresh) USING (facility_id, business_date))
        SELECT DISTINCT facility_id, business_date FROM fresh ANTI JOIN answered USING (idempotency_key)
        ON CONFLICT DO NOTHING"""),
}
