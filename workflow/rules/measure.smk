rule measure_lesions:
    """Volume, RECIST diameters, centroid and intensity of every tracked lesion at every session."""
    input:
        manifest=LAYOUT.manifest,
        upstream=upstream_reports("measure"),
    output:
        report=shard_report("measure", "{shard}"),
    params:
        patients=lambda wc: shard_list(wc.shard),
        config=stage_config("measure"),
    conda:
        ENV
    log:
        LOGS / "measure_lesions" / "shard-{shard}.log",
    benchmark:
        BENCH / "measure_lesions" / "shard-{shard}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/measure_lesions.py"


rule evaluate_tracking:
    """Dice, centre distances, detection and tracking metrics against the ground truth."""
    input:
        manifest=LAYOUT.manifest,
        upstream=upstream_reports("evaluate"),
    output:
        report=shard_report("evaluate", "{shard}"),
    params:
        patients=lambda wc: shard_list(wc.shard),
        config=stage_config("evaluate"),
    conda:
        ENV
    log:
        LOGS / "evaluate_tracking" / "shard-{shard}.log",
    benchmark:
        BENCH / "evaluate_tracking" / "shard-{shard}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/evaluate_tracking.py"
