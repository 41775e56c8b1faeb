# lesionlocator: promptable 3D lesion segmentation and longitudinal tracking, cohort scale.
#   snakemake --cores 2                                   the demo (profiles/default applies by itself)
#   snakemake --profile profiles/slurm --configfile my_study.yaml
from snakemake.utils import min_version

from lesionlocator.aggregate.summary import print_run_summary
from lesionlocator.core.lock import acquire_results_lock, release_results_lock

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    shard=r"\d{4}",
    t=r"\d+",


include: "workflow/rules/synthetic.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/train.smk"


rule all:
    input:
        final_outputs(),
    default_target: True


# One run at a time writes to results_dir (Snakemake's own lock covers only this working folder).
# Hooks run in the main process of a real run: not in a dry run, not in jobs (--no-hooks).
onstart:
    acquire_results_lock(LAYOUT.root)  # refuses while another live run holds it


onsuccess:
    release_results_lock(LAYOUT.root)
    print_run_summary(LAYOUT.root)  # patients done/failed, lesions, responses, review, where the report is


onerror:
    release_results_lock(LAYOUT.root)
