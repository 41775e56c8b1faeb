from lesionlocator.core.config import validate_config
from lesionlocator.core.logs import log_to_file
from lesionlocator.pipeline import aggregate_results

log_to_file(snakemake.log[0])
aggregate_results(
    snakemake.input.manifest,
    validate_config(snakemake.params.config),
    list(snakemake.input.reports),
    snakemake.output.dataset,
    snakemake.output.run,
)
