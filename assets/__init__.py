"""The Dagster shell: assets, partitions, schedules and resources around billing_pipeline's core."""
