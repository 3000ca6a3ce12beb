"""Once-only rewrites of a warehouse written by an earlier version, recorded in
`warehouse_upgrades` so they run once. A new warehouse records them as done without running them.
"""

from __future__ import annotations

UPGRADES = {
    # The status log's rows used to end at the contract's next row at any facility; each
    # facility's rows now stand alone, a move out ended by a row with a null status. An earlier
    # log gets those end rows where its next row (in the order the days ran: date, scheduled
    # run, last run) was at another facility, dated the facility's first processed day after its
    # row and on or after that next row (the days a night reads its rows on), unless a row of
    # its own comes by then.
    "contract_status_log_end_rows": """
        INSERT INTO contract_status_log (business_date, facility_id, contract_id, customer_id, status)
        WITH ordered AS (
            SELECT l.contract_id, l.facility_id, l.business_date, l.status,
                   lead(l.business_date) OVER w AS next_date, lead(l.facility_id) OVER w AS next_facility
            FROM contract_status_log l LEFT JOIN processed_days p USING (facility_id, business_date)
            WINDOW w AS (PARTITION BY l.contract_id ORDER BY l.business_date, p.run_at, p.processed_at, l.facility_id)),
        ends AS (
            SELECT o.contract_id, o.facility_id, o.business_date AS row_date, min(q.business_date) AS end_date
            FROM ordered o JOIN processed_days q
              ON q.facility_id = o.facility_id AND q.business_date > o.business_date AND q.business_date >= o.next_date
            WHERE o.status IS NOT NULL AND o.next_facility <> o.facility_id
            GROUP BY ALL)
        SELECT e.end_date, e.facility_id, e.contract_id, NULL, NULL FROM ends e
        WHERE NOT EXISTS (SELECT 1 FROM contract_status_log x WHERE x.contract_id = e.contract_id
                          AND x.facility_id = e.facility_id AND x.business_date > e.row_date
                          AND x.business_date <= e.end_date)""",
}
