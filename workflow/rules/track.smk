rule track_followup:
    """Propagate every lesion from session t-1 into session t and segment it there (time order)."""
    input:
        manifest=LAYOUT.manifest,
        weights=stage_weights("track"),
        upstream=upstream_reports("track"),
    output:
        report=shard_report("track", "{shard}", "{t}"),
    params:
        patients=lambda wc: shard_list(wc.shard),
        t=lambda wc: int(wc.t),
        config=stage_config("track"),
    conda:
        ENV
    log:
        LOGS / "track_followup" / "shard-{shard}_t{t}.log",
    benchmark:
        BENCH / "track_followup" / "shard-{shard}_t{t}.tsv"
    threads: 1
    resources:
        gpu=SEGMENT_GPU,
        mem_mb=8000,
        runtime=120,
    script:
        "../scripts/track_followup.py"
