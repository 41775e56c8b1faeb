from lesionlocator.core.logs import log_to_file
from lesionlocator.pipeline import ingest_manifest

log_to_file(snakemake.log[0])
ingest_manifest(
    snakemake.output.manifest,
    verify_pixels=snakemake.params.verify_pixels,
    strict=snakemake.params.strict,
    **dict(snakemake.input.items()),
)
