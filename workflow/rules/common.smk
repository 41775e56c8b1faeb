# Shared helpers: the config is validated once through the pydantic model; the cohort layout
# (patients and their sessions in time order) is planned at parse time without opening images.
from pathlib import Path

from lesionlocator.config import validate_config

CFG = validate_config(config, source="the Snakemake config")
RESULTS = Path(CFG.results_dir)
LOGS = Path("logs")
BENCH = Path("benchmarks")

SYNTHETIC_COHORT = RESULTS / "synthetic" / "cohort"
MANIFEST = RESULTS / "ingest" / "manifest.parquet"


def cohort_source():
    """(kind, path) of the cohort that ingest reads: bids root, tsv table, or the synthetic cohort."""
    if CFG.cohort.table is not None:
        return "table", CFG.cohort.table
    if CFG.cohort.root is not None:
        return "root", CFG.cohort.root
    return "root", SYNTHETIC_COHORT


def final_outputs():
    return [MANIFEST]
