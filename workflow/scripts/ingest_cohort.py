from lesionlocator.core.logs import log_to_file
from lesionlocator.ingest.cohort import ingest_cohort

log_to_file(snakemake.log[0])
ingest_cohort(snakemake.output.manifest, **dict(snakemake.input.items()), verify_pixels=snakemake.params.verify_pixels)
