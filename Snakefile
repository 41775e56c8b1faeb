# lesionlocator: promptable 3D lesion segmentation and longitudinal tracking, cohort scale.
# Run: snakemake --profile profiles/default   (SLURM: --profile profiles/slurm)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
# include: "workflow/rules/synthetic.smk"
include: "workflow/rules/ingest.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
