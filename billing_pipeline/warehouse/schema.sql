-- The analysts' tables (SPEC section 4). Money in cents (BIGINT); debits positive, credits negative.
-- Tables written per facility-day carry business_date and facility_id: a rerun deletes the
-- facility-day's rows and inserts the new ones in one transaction.

-- run_at: the scheduled instant (03:00 local); processed_at: the last time the day ran.
-- dues_first_posted_at / billed_first_at: when its dues step / billing step first finished (kept
-- by reruns): which facility-days' dues a home facility's billing counts goes by them.
CREATE TABLE IF NOT EXISTS processed_days (
    facility_id VARCHAR, business_date DATE, partition_key VARCHAR, run_at TIMESTAMPTZ,
    processed_at TIMESTAMPTZ, dues_first_posted_at TIMESTAMPTZ, billed_first_at TIMESTAMPTZ);
ALTER TABLE processed_days ADD COLUMN IF NOT EXISTS dues_first_posted_at TIMESTAMPTZ;  -- older files
ALTER TABLE processed_days ADD COLUMN IF NOT EXISTS billed_first_at TIMESTAMPTZ;
-- billed_last_at: when its billing step last worked out the balances (the ledger as it then stood).
ALTER TABLE processed_days ADD COLUMN IF NOT EXISTS billed_last_at TIMESTAMPTZ;

-- Status intervals: a row when a contract's status at a facility on a processed date differs
-- from that facility's processed date before (or it was not there), and a row with a null status
-- (and customer) when the facility no longer has it (moved out, gone from the export). Each
-- facility's rows stand alone. The daily view below expands them.
CREATE TABLE IF NOT EXISTS contract_status_log (
    business_date DATE, facility_id VARCHAR, contract_id VARCHAR, customer_id VARCHAR, status VARCHAR);

CREATE TABLE IF NOT EXISTS status_change_errors (
    business_date DATE, facility_id VARCHAR, change_id VARCHAR, contract_id VARCHAR,
    error_code VARCHAR, message VARCHAR);

-- period_end: the last day a period covers (the day before the series' next bill date).
-- series_from: the date the contract's series counted from (its first bill date, else its start
-- date) when the period was worked out; a night compares it with the export's (`dues.early_windows`).
CREATE TABLE IF NOT EXISTS due_contracts (
    business_date DATE, facility_id VARCHAR, contract_id VARCHAR, customer_id VARCHAR,
    bill_date DATE, kind VARCHAR, amount_cents BIGINT, period_end DATE, series_from DATE);

CREATE TABLE IF NOT EXISTS dues_postings (
    business_date DATE, facility_id VARCHAR, contract_id VARCHAR, customer_id VARCHAR,
    bill_date DATE, kind VARCHAR, amount_cents BIGINT, entry_id VARCHAR, period_end DATE, series_from DATE);
ALTER TABLE due_contracts ADD COLUMN IF NOT EXISTS period_end DATE;  -- files written before it existed
ALTER TABLE dues_postings ADD COLUMN IF NOT EXISTS period_end DATE;
ALTER TABLE due_contracts ADD COLUMN IF NOT EXISTS series_from DATE;
ALTER TABLE dues_postings ADD COLUMN IF NOT EXISTS series_from DATE;

CREATE TABLE IF NOT EXISTS dues_posting_errors (
    business_date DATE, facility_id VARCHAR, contract_id VARCHAR, customer_id VARCHAR,
    error_code VARCHAR, message VARCHAR);

-- Append-only. One entry per period (entry_id 'period|contract|bill_date'), one payment and
-- one surcharge per idempotency key: a second posting of either is impossible. A period's
-- entry covers bill_date through period_end, and was posted with the series counted from
-- series_from (both null in files written before they existed).
CREATE TABLE IF NOT EXISTS ledger (
    entry_id VARCHAR PRIMARY KEY, business_date DATE NOT NULL, facility_id VARCHAR NOT NULL,
    customer_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, amount_cents BIGINT NOT NULL,
    contract_id VARCHAR, bill_date DATE, idempotency_key VARCHAR, product_id VARCHAR, posted_at TIMESTAMPTZ,
    period_end DATE, series_from DATE);

ALTER TABLE ledger ADD COLUMN IF NOT EXISTS product_id VARCHAR;  -- files written before it existed
ALTER TABLE ledger ADD COLUMN IF NOT EXISTS period_end DATE;
ALTER TABLE ledger ADD COLUMN IF NOT EXISTS series_from DATE;

-- Running balance per customer, updated in the same transaction as the ledger; the ledger
-- check compares it with the sum of the ledger after every run.
CREATE TABLE IF NOT EXISTS customer_balances (
    customer_id VARCHAR PRIMARY KEY, balance_cents BIGINT NOT NULL, entries BIGINT NOT NULL);

-- Per contract: the latest dues / freeze fee period in the ledger, the last day its periods
-- cover (paid_through: a later period half or more paid by then does not post) and the latest business date that
-- posted one; its earliest period (first_period_date) and the earliest date its series counted
-- from when one posted (series_from: null if every one predates the column). Moved in the same
-- transaction as the ledger: a night reads it instead of every
-- period ever posted (`ledger.last_posted_periods`). Caught up with entries posted by anything
-- else at every open (`state.CATCH_UPS`); the daily audit checks it against the ledger.
CREATE TABLE IF NOT EXISTS contract_periods (
    contract_id VARCHAR PRIMARY KEY, last_bill_date DATE NOT NULL, last_business_date DATE NOT NULL,
    paid_through DATE NOT NULL, first_period_date DATE NOT NULL, series_from DATE);

-- How far each state table above has taken in the history (write time of the latest row).
CREATE TABLE IF NOT EXISTS state_caught_up (state_table VARCHAR PRIMARY KEY, caught_up_to TIMESTAMPTZ NOT NULL);

-- The daily full audit of the ledger (every customer, every key): when it ran and what it found.
CREATE TABLE IF NOT EXISTS ledger_audits (
    audited_at TIMESTAMPTZ NOT NULL, ledger_entries BIGINT NOT NULL, customers BIGINT NOT NULL,
    problems BIGINT NOT NULL, problems_by_check VARCHAR NOT NULL);

CREATE TABLE IF NOT EXISTS duplicate_contracts (
    business_date DATE, facility_id VARCHAR, customer_id VARCHAR, plan_id VARCHAR, contract_ids VARCHAR[]);

CREATE TABLE IF NOT EXISTS recurring_dues_without_payment_method (
    business_date DATE, facility_id VARCHAR, customer_id VARCHAR, contract_id VARCHAR);

CREATE TABLE IF NOT EXISTS billing_blocks (
    business_date DATE, facility_id VARCHAR, partition_key VARCHAR, billable_customers BIGINT,
    flagged_customers BIGINT, window_billable BIGINT, window_flagged BIGINT,
    window_flagged_share DOUBLE, max_share DOUBLE, blocked BOOLEAN);

CREATE TABLE IF NOT EXISTS billable_customers (
    business_date DATE, facility_id VARCHAR, customer_id VARCHAR, reasons VARCHAR[],
    balance_cents BIGINT, hold_reason VARCHAR, payment_method_id VARCHAR);

-- sweep_day: the sweep day a row is for: business_date, or for a fixed sweep made up after a
-- sweep day the facility did not bill (its night missed, its billing never finished), that day.
CREATE TABLE IF NOT EXISTS sweep_candidates (
    business_date DATE, facility_id VARCHAR, customer_id VARCHAR, reason VARCHAR, balance_cents BIGINT,
    sweep_day DATE);
ALTER TABLE sweep_candidates ADD COLUMN IF NOT EXISTS sweep_day DATE;  -- files written before it existed

-- Write-ahead record of every charge before the gateway sees it: a killed run resends exactly
-- these requests, with the same idempotency keys.
CREATE TABLE IF NOT EXISTS charge_requests (
    idempotency_key VARCHAR PRIMARY KEY, business_date DATE NOT NULL, facility_id VARCHAR NOT NULL,
    customer_id VARCHAR NOT NULL, payment_method_id VARCHAR NOT NULL, payment_kind VARCHAR,
    token VARCHAR, amount_cents BIGINT NOT NULL, surcharge_cents BIGINT NOT NULL,
    surcharge_product_id VARCHAR, requested_at TIMESTAMPTZ);
-- balance_as_of: the billing step whose balance the request charges (its processed_days.billed_last_at):
-- a ledger entry posted later is not in its amount.
ALTER TABLE charge_requests ADD COLUMN IF NOT EXISTS balance_as_of TIMESTAMPTZ;

-- Facility-days that may have a charge request without an outcome: listed in the transaction
-- that writes their requests, struck off once their charging has recorded every outcome. The
-- holds of other days' customers (`charge_pending`) look only at these days' requests, not at
-- every request ever written. (Caught up with requests written by anything else at every
-- open: `state.CATCH_UPS`.)
CREATE TABLE IF NOT EXISTS unanswered_charge_days (
    facility_id VARCHAR NOT NULL, business_date DATE NOT NULL, PRIMARY KEY (facility_id, business_date));

-- Final outcomes only (approved / declined / error), one per idempotency key.
CREATE TABLE IF NOT EXISTS billing_attempts (
    idempotency_key VARCHAR PRIMARY KEY, business_date DATE NOT NULL, facility_id VARCHAR NOT NULL,
    customer_id VARCHAR NOT NULL, payment_method_id VARCHAR NOT NULL, amount_cents BIGINT NOT NULL,
    surcharge_cents BIGINT NOT NULL, outcome VARCHAR NOT NULL, decline_code VARCHAR,
    gateway_reference VARCHAR, tries INTEGER, message VARCHAR, completed_at TIMESTAMPTZ);

CREATE OR REPLACE VIEW failed_billing_events AS
SELECT business_date, facility_id, customer_id, amount_cents, surcharge_cents, outcome,
       decline_code, coalesce(decline_code, message) AS reason, payment_method_id, idempotency_key
FROM billing_attempts WHERE outcome IN ('declined', 'error');

CREATE OR REPLACE VIEW contract_status_intervals AS
SELECT * FROM (
    SELECT facility_id, contract_id, customer_id, status, business_date AS valid_from,
           lead(business_date) OVER (PARTITION BY contract_id, facility_id ORDER BY business_date) AS valid_until
    FROM contract_status_log)
WHERE status IS NOT NULL;

-- Status of every contract on every processed date of its facility.
CREATE OR REPLACE VIEW contract_status_daily AS
SELECT p.business_date, i.facility_id, i.contract_id, i.customer_id, i.status
FROM processed_days p
JOIN contract_status_intervals i
  ON i.facility_id = p.facility_id AND i.valid_from <= p.business_date
 AND (i.valid_until IS NULL OR p.business_date < i.valid_until);

-- The once-only rewrites of an earlier version's warehouse done on this file (`upgrades.py`).
CREATE TABLE IF NOT EXISTS warehouse_upgrades (upgrade VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ);
