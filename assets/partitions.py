"""Hourly UTC windows: a partition holds every facility-day whose 03:00 local falls in it.

See billing_pipeline.facility_clock for the rule; about 24 partitions a day whatever the number
of facilities, so a year is under 9,000 partitions.
"""

import dagster as dg

from billing_pipeline.facility_clock import PARTITION_FORMAT

# The first business date is 2026-01-01 in every zone: its earliest run, 03:00 at UTC+14
# (Kiritimati), is 13:00 UTC the day before, in the window that starts at 12:00.
facility_day_windows = dg.HourlyPartitionsDefinition(start_date="2025-12-31-12:00", fmt=PARTITION_FORMAT)
