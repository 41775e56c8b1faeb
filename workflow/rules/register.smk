rule register_pair:
    """Register session t to session t-1 for every patient of a shard that has a session t."""
    input:
        manifest=LAYOUT.manifest,
        weights=stage_weights("register"),
    output:
        report=shard_report("register", "{shard}", "{t}"),
    params:
        patients=lambda wc: shard_list(wc.shard),
        t=lambda wc: int(wc.t),
        config=stage_config("register"),
    conda:
        ENV
    log:
        LOGS / "register_pair" / "shard-{shard}_t{t}.log",
    benchmark:
        BENCH / "register_pair" / "shard-{shard}_t{t}.tsv"
    threads: CFG.register.threads
    resources:
        gpu=REGISTER_GPU,
        mem_mb=6000,
        runtime=120,
    script:
        "../scripts/register_pair.py"
