from lesionlocator.core.config import SyntheticConfig
from lesionlocator.core.logs import log_to_file
from synthetic.cohort import generate_cohort

log_to_file(snakemake.log[0])
generate_cohort(SyntheticConfig.model_validate(snakemake.params.synthetic), snakemake.output.cohort)
