"""Asset checks: pre-billing checks (SPEC 1.6) and the ledger invariant (SPEC 5)."""
