rule aggregate_cohort:
    """The cohort tables (partitioned Parquet, built with dask) and run.json (provenance)."""
    input:
        manifest=LAYOUT.manifest,
        reports=final_reports(),
    output:
        dataset=directory(LAYOUT.cohort_dataset),
        run=LAYOUT.run_manifest,
    params:
        config=stage_config("aggregate"),
    conda:
        ENV
    log:
        LOGS / "aggregate" / "aggregate_cohort.log",
    benchmark:
        BENCH / "aggregate" / "aggregate_cohort.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/aggregate_cohort.py"
