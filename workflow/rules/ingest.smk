rule ingest_cohort:
    input:
        **cohort_input(),
    output:
        manifest=LAYOUT.manifest,
    params:
        verify_pixels=CFG.cohort.verify_pixels,
        strict=CFG.cohort.strict,
    conda:
        ENV
    log:
        LOGS / "ingest" / "ingest_cohort.log",
    benchmark:
        BENCH / "ingest" / "ingest_cohort.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/ingest_cohort.py"
