"""Ingest: discover and validate a cohort (BIDS-like folder or table), write the manifest; plan it at
parse time."""
