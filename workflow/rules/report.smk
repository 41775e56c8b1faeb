rule report_cohort:
    """One self-contained HTML report of the cohort (also part of `snakemake --report`): cohort figures,
    the review queue, and per patient its lesions with thumbnails from the scans and the tracker's label maps."""
    input:
        dataset=LAYOUT.cohort_dataset,
        manifest=LAYOUT.manifest,
        reports=final_reports(),
    output:
        html=report(LAYOUT.report, category="Cohort report"),
    params:
        results_dir=LAYOUT.root,
    conda:
        ENV
    log:
        LOGS / "report" / "report_cohort.log",
    benchmark:
        BENCH / "report" / "report_cohort.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/report_cohort.py"
