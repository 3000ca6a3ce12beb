"""Once-only rewrites of a warehouse written by an earlier version, recorded in
`warehouse_upgrades` so they run once. A new warehouse records them as done without running them.
"""

from __future__ import annotations

UPGRADES = {
    # The status log's rows used to end at the contract's next row at any facility; each
    # facility's rows now stand alone, a move out ended by a row with a null status. An earlier
    # log gets those end rows where its next row was at another facility.
    "contract_status_log_end_rows": """
        INSERT INTO contract_status_log (business_date, facility_id, contract_id, customer_id, status)
        SELECT l.next_date, l.facility_id, l.contract_id, l.customer_id, NULL
        FROM (SELECT *, lead(business_date) OVER w AS next_date, lead(facility_id) OVER w AS next_facility
              FROM contract_status_log
              WINDOW w AS (PARTITION BY contract_id ORDER BY business_date, facility_id)) l
        WHERE l.status IS NOT NULL AND l.next_facility <> l.facility_id
          AND NOT EXISTS (SELECT 1 FROM contract_status_log x WHERE x.contract_id = l.contract_id
                          AND x.facility_id = l.facility_id AND x.business_date = l.next_date)""",
}
