"""What the steps of a batch of facility-days share: the export's frames derived once per batch.

A batch (one Dagster window, or one date for every facility) processes its facilities'
contracts, and sees every other contract of its customers (a duplicate or a missing payment
method is the customer's, wherever the contract is). Each frame is computed on first use and
dropped (`forget`) once no later step needs it: at 10M contracts they weigh gigabytes.
"""

from __future__ import annotations

from functools import cached_property

import polars as pl

from billing_pipeline.inputs.load import Inputs
from billing_pipeline.rules import contract_status, dues, prebilling


class Night:
    """What the steps of one batch share, each computed once, lazily."""

    def __init__(self, inputs: Inputs, facility_days: pl.DataFrame):
        self.inputs = inputs
        self.facility_days = facility_days

    @cached_property
    def keyed_contracts(self) -> pl.DataFrame:
        return contract_status.with_contract_key(self.inputs.contracts)

    @cached_property
    def routed(self) -> pl.DataFrame:
        """The batch's contracts with plan, customer and facility (before their status)."""
        i = self.inputs
        return dues.contracts_for_days(self.keyed_contracts.lazy(), i.customers.lazy(), i.facilities.lazy(),
                                       i.plans.lazy(), self.facility_days.lazy()).collect()

    @cached_property
    def customer_keys(self) -> pl.DataFrame:
        """(customer_id, business_date) of every customer the batch touches: billed at a home
        facility of the batch, or owning a contract processed in it."""
        at_home = self.customer_days.select("customer_id", "business_date")  # unique already
        # A processed contract's customer is at home in the batch when their home facility is in it
        # with the contract's date: found from the routed columns and the batch's few facility-days,
        # not by an anti join of 10M contracts against 8M customers on the customer_id string.
        # (An unknown customer has no home_facility_id: never at home.)
        home_days = self.facility_days.select(pl.col("facility_id").alias("home_facility_id"), "business_date")
        elsewhere = (self.routed.lazy().select("customer_id", "business_date", "home_facility_id")
                     .join(home_days.lazy(), on=["home_facility_id", "business_date"], how="anti")
                     .select("customer_id", "business_date").unique().collect())
        return pl.concat([at_home, elsewhere])

    @cached_property
    def elsewhere(self) -> pl.DataFrame:
        """The batch's customers' contracts not processed here for their date: at a facility of
        another window, at an unknown facility routed to a home outside the batch, or, in a window
        holding two dates (Kiritimati D+1 with Honolulu D), processed here for the other date. A
        duplicate or a missing payment method is the customer's, wherever the contract is."""
        i = self.inputs
        candidates = self.keyed_contracts.lazy()
        if self.facility_days.get_column("business_date").n_unique() == 1:
            # One date: a contract of a facility in the batch is processed here for that date.
            candidates = candidates.filter(
                ~pl.col("facility_id").is_in(self.facility_days.get_column("facility_id").implode()))
        return (
            candidates.select("contract_id", "contract_key", "customer_id", "plan_id", "dues_cents",
                              pl.col("status").alias("exported_status"), "start_date", "end_date")
            .join(self.customer_keys.lazy(), on="customer_id")
            .join(self.routed.lazy().select("contract_key", "business_date"), on=["contract_key", "business_date"],
                  how="anti")
            .pipe(dues.with_plan, i.plans.lazy())
        ).collect()

    @cached_property
    def own_contracts(self) -> pl.DataFrame:
        """The export's contracts whose status the batch needs: its own and its customers' others.
        A Dagster window of 100 facilities builds the timelines of their contracts, not of all 10M."""
        routed = self.routed.get_column("contract_key")
        if routed.len() == self.keyed_contracts.height and routed.n_unique() == routed.len():
            return self.keyed_contracts  # a date for every facility: every contract, no copy
        keys = pl.concat([routed, self.elsewhere.get_column("contract_key")])
        return self.keyed_contracts[keys.unique().sort()]  # contract_key is the row number

    @cached_property
    def changes(self) -> pl.DataFrame:
        return contract_status.applied_changes(self.own_contracts.lazy(), self.inputs.status_changes.lazy()).collect()

    @cached_property
    def unknown_contract_changes(self) -> pl.DataFrame:
        """Status changes naming a contract the export does not have, under the export's first
        facility (which reports what has no facility to go to, as `dues.contracts_for_days` routes
        a contract of unknown facility and customer); none for a batch without that facility."""
        first = self.inputs.facilities.get_column("facility_id").min()
        changes = self.inputs.status_changes
        if not (self.facility_days.get_column("facility_id") == first).any():
            changes = changes.clear()
        elif self.own_contracts is self.keyed_contracts:
            # Every contract's changes are in `changes` already: the rest name no contract (an
            # anti join on the change ids, not on 10M contract ids).
            changes = changes.join(self.changes.select("change_id"), on="change_id", how="anti")
        else:
            changes = changes.join(self.keyed_contracts.select("contract_id"), on="contract_id", how="anti")
        return changes.with_columns(pl.lit(first, pl.String).alias("facility_id"),
                                    pl.lit(None, pl.String).alias("state_before"), pl.lit(False).alias("applies"))

    @cached_property
    def timeline(self) -> pl.DataFrame:
        return contract_status.status_timeline(self.own_contracts.lazy(), self.changes.lazy()).collect()

    @cached_property
    def contracts(self) -> pl.DataFrame:
        """The batch's contracts with plan, customer, facility and their status on D."""
        return contract_status.status_on(self.timeline.lazy(), self.routed.lazy(), "business_date").collect()

    @cached_property
    def customer_days(self) -> pl.DataFrame:
        """The batch's customers (by home facility): customer_id, facility_id, business_date. Their
        facility's settings are joined where needed (`facility_day_settings`): on 8M customers they
        weigh 1 GiB."""
        days = self.facility_days.select("facility_id", "business_date")
        return self.inputs.customers.lazy().select("customer_id", "facility_id").join(days.lazy(), on="facility_id").collect()

    @cached_property
    def customer_contracts(self) -> pl.DataFrame:
        """Every contract of the batch's customers, at any facility, with its dues and status on D."""
        columns = ["contract_id", "customer_id", "plan_id", "contract_type", "business_date", "amount_cents", "status"]
        elsewhere = contract_status.status_on(self.timeline.lazy(), self.elsewhere.lazy(), "business_date").collect()
        return pl.concat([self.contracts.select(columns), elsewhere.select(columns)])

    @cached_property
    def usable_methods(self) -> pl.DataFrame:
        """Each batch customer's usable default method on their date (and, for a batch of every
        facility on one date, every other customer's: no step asks about those)."""
        methods = self.inputs.payment_methods.lazy()
        dates = self.facility_days.get_column("business_date").unique()
        if dates.len() == 1 and self.facility_days.height == self.inputs.facilities.height:
            return prebilling.usable_payment_methods_on(methods, dates.item()).collect()
        return prebilling.usable_payment_methods(methods, self.customer_keys.lazy()).collect()

    @cached_property
    def duplicates(self) -> pl.DataFrame:
        """Every duplicate of the batch's customers (their holds), under the home facility."""
        return prebilling.duplicate_contracts(self.customer_contracts.lazy(), self.inputs.customers.lazy()).collect()

    @cached_property
    def without_payment_method(self) -> pl.DataFrame:
        return prebilling.recurring_dues_without_payment_method(
            self.customer_contracts.lazy(), self.inputs.customers.lazy(), self.usable_methods.lazy()).collect()

    def forget(self, *names: str) -> None:
        """Drops cached frames no later step needs (10M contracts' frames are gigabytes)."""
        for name in names:
            self.__dict__.pop(name, None)

    def at_home(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of a customer-level report that belong to the batch's own facility-days."""
        return frame.join(self.facility_days.select("facility_id", "business_date"),
                          on=["facility_id", "business_date"], how="semi")
