"""Aggregate: the cohort tables (partitioned Parquet), run.json, the HTML report and the run summary."""
