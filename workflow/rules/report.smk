rule report_cohort:
    """One self-contained HTML report of the cohort (also part of `snakemake --report`)."""
    input:
        dataset=LAYOUT.cohort_dataset,
        reports=final_reports(),
    output:
        html=report(LAYOUT.report, category="Cohort report"),
    conda:
        ENV
    log:
        LOGS / "report" / "report_cohort.log",
    benchmark:
        BENCH / "report" / "report_cohort.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/report_cohort.py"
