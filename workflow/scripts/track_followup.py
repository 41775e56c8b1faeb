from lesionlocator.core.config import validate_config
from lesionlocator.core.logs import log_to_file
from lesionlocator.pipeline import track_shard

log_to_file(snakemake.log[0])
track_shard(
    snakemake.input.manifest,
    snakemake.params.patients,
    snakemake.params.t,
    validate_config(snakemake.params.config),
    snakemake.output.report,
    upstream_reports=list(snakemake.input.upstream),
)
