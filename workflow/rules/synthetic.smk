rule synthesize_cohort:
    output:
        cohort=directory(LAYOUT.synthetic_cohort),
    params:
        synthetic=CFG.synthetic.model_dump(mode="json"),
    conda:
        ENV
    log:
        LOGS / "synthetic" / "synthesize_cohort.log",
    benchmark:
        BENCH / "synthetic" / "synthesize_cohort.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/synthesize_cohort.py"


rule synthetic:
    """Target: regenerate the synthetic cohort only."""
    input:
        rules.synthesize_cohort.output,
    default_target: False
