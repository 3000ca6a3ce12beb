"""The nightly schedule: at the end of every UTC hour, run the window that just ended if any
facility's 03:00 fell in it."""

import datetime as dt

import dagster as dg

from assets.resources import ExportFolder
from billing_pipeline.facility_clock import facility_days_for_partition, partition_key

NIGHTLY_JOB = "nightly_facility_cycle"


def build_schedule(job) -> dg.ScheduleDefinition:
    @dg.schedule(job=job, cron_schedule="0 * * * *", execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.STOPPED,
                 description="Each facility's business day at 03:00 local, in hourly UTC windows.")
    def facility_nights(context: dg.ScheduleEvaluationContext, export: ExportFolder):
        ends = context.scheduled_execution_time.astimezone(dt.timezone.utc)
        key = partition_key(ends)  # the window (start, end] that ends now
        days = facility_days_for_partition(export.load().facilities, key)
        if days.height == 0:
            return dg.SkipReason(f"no facility's 03:00 falls in the window {key}")
        return dg.RunRequest(partition_key=key, run_key=key,
                             tags={"facility_days": str(days.height)})

    return facility_nights
