rule segment_baseline:
    """Segment the prompted lesions at the baseline of every patient of a shard (model loaded once)."""
    input:
        manifest=LAYOUT.manifest,
        weights=stage_weights("segment_baseline"),
    output:
        report=shard_report("segment_baseline", "{shard}"),
    params:
        patients=lambda wc: shard_list(wc.shard),
        config=stage_config("segment_baseline"),
    conda:
        ENV
    log:
        LOGS / "segment_baseline" / "shard-{shard}.log",
    benchmark:
        BENCH / "segment_baseline" / "shard-{shard}.tsv"
    threads: 1
    resources:
        gpu=SEGMENT_GPU,
        mem_mb=8000,
        runtime=120,
    script:
        "../scripts/segment_baseline.py"
