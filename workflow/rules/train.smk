rule export_training_data:
    """The synthetic cohort in nnU-Net raw layout (one combined CT + MR dataset, one modality-agnostic channel)."""
    input:
        cohort=LAYOUT.synthetic_cohort,
    output:
        raw=directory(LAYOUT.root / "train" / "nnunet_raw"),
    conda:
        ENV
    log:
        LOGS / "train" / "export_training_data.log",
    benchmark:
        BENCH / "train" / "export_training_data.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/export_training_data.py"


rule train_model:
    """Train the promptable nnU-Net (extra prompt channel) on train.dataset or the synthetic export."""
    input:
        dataset=training_dataset(),
    output:
        model=directory(Path(CFG.train.output_dir) / "model"),
    params:
        train=CFG.train.model_dump(mode="json"),
        run_dir=lambda wildcards, output: str(Path(output.model).parent),
    conda:
        ENV
    log:
        LOGS / "train" / "train_model.log",
    benchmark:
        BENCH / "train" / "train_model.tsv"
    threads: 4
    resources:
        gpu=TRAIN_GPU,
        mem_mb=16000,
        runtime=24 * 60,
    script:
        "../scripts/train_model.py"


rule train:
    """Target: train a promptable model (a separate target; not part of `all`)."""
    input:
        rules.train_model.output.model,
    default_target: False
