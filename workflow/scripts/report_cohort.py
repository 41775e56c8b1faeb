from lesionlocator.aggregate.report import report_cohort
from lesionlocator.core.logs import log_to_file
from lesionlocator.core.shards import failure_table

log_to_file(snakemake.log[0])
report_cohort(
    snakemake.input.dataset,
    snakemake.output.html,
    failed_patients=failure_table(snakemake.input.reports),
    manifest=snakemake.input.manifest,
    results_dir=snakemake.params.results_dir,
    workers=snakemake.threads,
)
