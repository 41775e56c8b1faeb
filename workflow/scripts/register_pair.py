from lesionlocator.core.config import validate_config
from lesionlocator.core.logs import log_to_file
from lesionlocator.pipeline import register_shard

log_to_file(snakemake.log[0])
register_shard(
    snakemake.input.manifest,
    snakemake.params.patients,
    snakemake.params.t,
    validate_config(snakemake.params.config),
    snakemake.output.report,
)
