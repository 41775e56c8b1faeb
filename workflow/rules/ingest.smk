rule ingest_cohort:
    input:
        cohort=cohort_source()[1],
    output:
        manifest=MANIFEST,
    params:
        kind=cohort_source()[0],
        verify_pixels=CFG.cohort.verify_pixels,
    log:
        LOGS / "ingest" / "ingest_cohort.log",
    benchmark:
        BENCH / "ingest" / "ingest_cohort.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/ingest_cohort.py"
