from lesionlocator.ingest import ingest_cohort
from lesionlocator.logs import log_to_file

log_to_file(snakemake.log[0])
ingest_cohort(snakemake.output.manifest, **dict(snakemake.input.items()), verify_pixels=snakemake.params.verify_pixels)
