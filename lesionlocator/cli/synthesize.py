"""``lesionlocator synthesize``: generate the synthetic longitudinal cohort (and an nnU-Net export)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionlocator.cli.command import Command, Output


def run(args: argparse.Namespace) -> None:
    from synthetic import export_nnunet, generate_cohort

    config = args.config.synthetic
    overrides = {k: v for k, v in (("seed", args.seed), ("n_patients", args.patients), ("n_sessions", args.sessions)) if v is not None}
    if overrides:
        from lesionlocator.core.config import StudyConfig, config_to_dict, validate_config

        study = config_to_dict(StudyConfig(synthetic=config))
        study["synthetic"].update(overrides)
        config = validate_config(study, source="command line").synthetic
    output = Path(args.output) if args.output else config.output
    truth = generate_cohort(config, output)
    n_sessions = truth[["patient", "session"]].drop_duplicates().shape[0]
    print(f"{truth.patient.nunique()} patient(s), {n_sessions} session(s), {truth.lesion_id.groupby(truth.patient).nunique().sum()} lesion(s) -> {output}")
    if args.nnunet_export:
        folders = export_nnunet(output, args.nnunet_export, dataset_id=args.dataset_id, layout=args.nnunet_layout, overwrite=True)
        for folder in folders:
            print(f"nnU-Net dataset -> {folder}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, help="override synthetic.seed")
    parser.add_argument("--patients", type=int, help="override synthetic.n_patients")
    parser.add_argument("--sessions", type=int, help="override synthetic.n_sessions (baseline included)")
    parser.add_argument("--nnunet-export", metavar="DIR", help="also export nnU-Net raw dataset(s) under DIR")
    parser.add_argument("--nnunet-layout", choices=["per-modality", "combined"], default="per-modality",
                        help="per-modality: one dataset per modality (CT: channel 'CT', MR: 'MR'); combined: one "
                        "dataset with channel 'zscore' for mixed CT+MR training (default: %(default)s)")
    parser.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id of the (first) export (default: %(default)s)")


COMMANDS = [
    Command(
        "synthesize",
        help="generate a synthetic longitudinal lesion cohort (BIDS-like, with ground truth)",
        description="Insert lesions into real or phantom anatomy, let them grow, shrink, vanish or appear over "
        "the sessions with tissue displacement, repositioning, FOV, spacing and intensity changes, and write a "
        "BIDS-like cohort (images, baseline prompts.json, sessions.tsv) with ground-truth instance masks and "
        "derivatives/groundtruth/groundtruth.parquet. Settings: the synthetic section of the study config.",
        add_arguments=add_arguments,
        run=run,
        config=True,
        output=Output("cohort folder to write (default: synthetic.output)", required=False),
    ),
]
