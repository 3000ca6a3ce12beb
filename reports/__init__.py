"""Pre- and post-billing reports (SPEC 1.7).

Today the reports are the warehouse tables `duplicate_contracts`,
`recurring_dues_without_payment_method`, `dues_posting_errors` and `failed_billing_events`, written
by the nightly cycle. Rendering them per facility and delivering them by email is a later issue.
"""

PRE_BILLING = ("duplicate_contracts", "recurring_dues_without_payment_method")
POST_BILLING = ("dues_posting_errors", "failed_billing_events")
