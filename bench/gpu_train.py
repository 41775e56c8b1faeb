"""Train the medium GPU recipe (config/train_medium_gpu.yaml) and score it, in one run on a CUDA machine.

Steps, each timed, all inside ``--budget-s`` seconds of wall clock:

1. data, generated with the machine's cores: the training cohort (``config/synth_mr_weighted.yaml``,
   seed 1003, 300 patients x 2 sessions: the data of the bundled model's stages 4-6), the model
   card's held-out cohort (default sources, seed 2003, 16 x 1) and its unseen-CT cohort (the DICOM
   CT of ``data/real/example_ct_dicom``, seed 2003, 16 x 1, lesions of 10-22 mm);
2. training from scratch with ``train_model``; its wall-clock budget is what is left of
   ``--budget-s`` after the data, a reserve for nnU-Net's planning and preprocessing
   (``--preprocess-reserve-s``) and one for step 3 (``--eval-reserve-s``);
3. ``evaluate-model`` (no TTA, tight boxes and the box cut, simulated mask prompts of seed 0, no
   classical segmenter) of the new model and then of the bundled one, on both cohorts;
4. under ``--out``: the exported model folder as a tar (``model_medium_gpu.tar``), the scores
   (``scores.tsv``, per lesion ``scores.parquet``), nnU-Net's training log and ``figures.json``.

    python3 bench/gpu_train.py --out OUT                       # on one H200: bench/gpu_train_h200.log
    python3 bench/gpu_train.py --out OUT --budget-s 1500 --max-train-minutes 20   # a longer lease
    # a rehearsal on a CPU (about 3 minutes on 2 cores):
    .venv/bin/python bench/gpu_train.py --out /tmp/rehearsal --device cpu --patients 2 --epochs 1 --iters 2 \\
        --batch 2 --workers 2 --threads 2 --max-lesions 2

The model card of ``models/lesionlocator_small`` gives the same cohorts' commands; the scores of
the bundled model here reproduce its "no TTA" figures (0.0002 apart on a GPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import statistics
import sys
import tarfile
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("nnUNet_compile", "f")  # torch.compile's minutes of compiling do not pay in a short run
os.environ.setdefault("TQDM_DISABLE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

BUNDLED = REPO / "models" / "lesionlocator_small"
RECIPE = REPO / "config" / "train_medium_gpu.yaml"
TAR_LIMIT = 16 * 2**20  # what one file of the device's $OUT may hold
log = logging.getLogger("gpu_train")


class Clock:
    """Seconds since the start, and what is left of the budget."""

    def __init__(self, budget_s: float):
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def step(clock: Clock, title: str):
    log.info("=== %s (at %.0f s, %.0f s left)", title, clock.elapsed(), clock.left())
    return time.perf_counter()


def make_data(work: Path, patients: int, workers: int) -> dict[str, Path]:
    """The training cohort, the held-out cohort and the unseen-CT cohort as nnU-Net raw datasets."""
    from lesionlocator.core.config import SyntheticConfig, load_config
    from lesionlocator.core.io import read_image, write_image
    from lesionlocator.train.data import export_dataset, generate_dataset
    from synthetic.cohort import generate_cohort

    t = time.perf_counter()
    mr_weighted = load_config(REPO / "config" / "synth_mr_weighted.yaml").synthetic
    (train,) = generate_dataset(1003, patients, 2, work / "cohort_train_seed1003", work / "raw", 803,
                                "LesionLocatorSynth", config=mr_weighted, workers=workers)
    log.info("training cohort: seed 1003, %d patients x 2 sessions (config/synth_mr_weighted.yaml), %d workers: %.1f s",
             patients, workers, time.perf_counter() - t)
    t = time.perf_counter()
    (heldout,) = generate_dataset(2003, 16, 1, work / "cohort_heldout_seed2003", work / "heldout", 820, "SynthHeldout",
                                  workers=workers)
    dicom_ct = work / "dicom_ct.nii.gz"
    write_image(read_image(REPO / "data" / "real" / "example_ct_dicom"), dicom_ct)
    unseen_config = SyntheticConfig(seed=2003, n_patients=16, n_sessions=1, sources=[f"ct:{dicom_ct}"], organ_labels={},
                                    diameter_mm=(10, 22), lesions_per_patient=(1, 3), margin_mm=3)
    generate_cohort(unseen_config, work / "cohort_unseen_ct", workers=workers)
    (unseen,) = export_dataset(work / "cohort_unseen_ct", work / "unseen", 823, "UnseenCT")
    log.info("held-out (seed 2003, 16 x 1) and unseen-CT (seed 2003, 16 x 1) cohorts: %.1f s", time.perf_counter() - t)
    return {"train": train, "heldout": heldout, "unseen": unseen}


def training_figures(run: Path, settings, seconds: float) -> dict:
    """Epochs, iterations/s (median nnU-Net epoch time, first epoch left out) and the last losses."""
    (log_file,) = run.rglob("training_log_*.txt")
    text = log_file.read_text()
    times = [float(m) for m in re.findall(r"Epoch time: ([0-9.]+) s", text)]
    steady = times[1:] or times
    per_epoch = statistics.median(steady)
    iters = settings.iterations_per_epoch
    figures = {
        "epochs": len(times),
        "iterations": len(times) * iters,
        "batch_size": settings.batch_size,
        "median_epoch_s": round(per_epoch, 2),
        "iterations_per_s": round(iters / per_epoch, 2),
        "patches_per_s": round(iters * settings.batch_size / per_epoch, 1),
        "train_model_s": round(seconds, 1),
        "train_loss_last": _last(r"train_loss (-?[0-9.]+)", text),
        "val_loss_last": _last(r"val_loss (-?[0-9.]+)", text),
        "pseudo_dice_last": _last(r"Pseudo dice \[(?:np\.float32\()?([0-9.]+)", text),
    }
    return figures


def _last(pattern: str, text: str) -> float | None:
    found = re.findall(pattern, text)
    return float(found[-1]) if found else None


def pack_model(model: Path, out: Path) -> list[Path]:
    """The model folder as one tar under ``out`` (split into parts of at most 16 MiB when larger)."""
    tar = out / "model_medium_gpu.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(model, arcname="lesionlocator_medium_gpu")
    size = tar.stat().st_size
    if size <= TAR_LIMIT:
        return [tar]
    parts = []
    with tar.open("rb") as whole:
        while chunk := whole.read(TAR_LIMIT - 2**20):
            part = out / f"model_medium_gpu.tar.part{len(parts)}"
            part.write_bytes(chunk)
            parts.append(part)
    tar.unlink()
    return parts


def iteration_split(model: Path, settings, device: str, repeats: int = 20) -> dict:
    """Milliseconds per batch of the recipe: prompt simulation + encoding on this process's CPU (as the
    trainer does, one sample after another) and the network's forward + backward + step on ``device``
    (fp16 autocast on cuda, as nnU-Net), on a synthetic patch with two lesions."""
    import numpy as np

    from lesionlocator.train.simulate import encode_prompt, sample_kind, simulate_prompt
    from lesionlocator.train.trainer import nnUNetTrainerLesionLocator

    patch, batch = tuple(settings.patch_size), settings.batch_size
    rng = np.random.default_rng(0)
    seg = np.zeros(patch, np.uint8)
    zz, yy, xx = np.indices(patch)
    for centre, label in (((14, 16, 18), 1), ((32, 30, 28), 2)):
        seg[(zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= 49] = label
    t = time.perf_counter()
    for _ in range(repeats * batch):
        simulated = simulate_prompt(seg, sample_kind(settings.prompt_mix, rng), rng, settings.prompt_noise())
        encode_prompt(simulated, patch, settings.point_radius)
    simulation_ms = (time.perf_counter() - t) / repeats * 1000

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(json.loads((model / "plans.json").read_text()))
    net = nnUNetTrainerLesionLocator.build_network_architecture(plans, plans.get_configuration("3d_fullres"), 1, 2,
                                                                enable_deep_supervision=True)
    net = net.to(device)
    optim = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
    x = torch.randn(batch, 2, *patch, device=device)
    y = torch.randint(0, 2, (batch, *patch), device=device)
    for i in range(repeats + 3):
        if i == 3:
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        optim.zero_grad()
        with torch.autocast(device, enabled=device == "cuda"):
            loss = torch.nn.functional.cross_entropy(net(x)[0], y)  # the full-resolution output
        loss.backward()
        optim.step()
    if device == "cuda":
        torch.cuda.synchronize()
    step_ms = (time.perf_counter() - t) / repeats * 1000
    return {"prompt_simulation_ms_per_batch": round(simulation_ms, 1), "network_step_ms_per_batch": round(step_ms, 1)}


def evaluate(name: str, model: Path, cohorts: list[Path], out: Path, device: str, max_lesions: int | None) -> pd.DataFrame:
    from lesionlocator.train.evaluate_model import evaluate_models

    t = time.perf_counter()
    summary = evaluate_models(cohorts, model=None, models={name: model}, output=out / f"scores_{name}.parquet", seed=0,
                              max_lesions=max_lesions, classical=False, device=device, mirroring=False)
    log.info("evaluate-model %s (%s): %.1f s\n%s", name, device, time.perf_counter() - t, summary.to_string(index=False))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the results (the device's $OUT)")
    parser.add_argument("--work", help="scratch folder (default: a temporary one)")
    parser.add_argument("--budget-s", type=float, default=520, help="wall clock for everything (default %(default)s)")
    parser.add_argument("--preprocess-reserve-s", type=float, default=70,
                        help="nnU-Net's planning, preprocessing and start-up, before the training budget starts")
    parser.add_argument("--eval-reserve-s", type=float, default=110, help="export, evaluation and packing")
    parser.add_argument("--max-train-minutes", type=float, default=7.0)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--patients", type=int, default=300, help="training cohort: patients x 2 sessions")
    parser.add_argument("--workers", type=int, default=None, help="data and augmentation workers (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the main process (default: the recipe's)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (rehearsal)")
    parser.add_argument("--iters", type=int, help="override the recipe's iterations per epoch (rehearsal)")
    parser.add_argument("--batch", type=int, help="override the recipe's batch size (rehearsal)")
    parser.add_argument("--max-lesions", type=int, help="evaluate at most this many lesions per cohort (rehearsal)")
    args = parser.parse_args()
    clock = Clock(args.budget_s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("nnunetv2", "lesionlocator", "synthetic", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import SimpleITK

    from lesionlocator.core.config import load_config
    from lesionlocator.train.run import train_model

    recipe = load_config(RECIPE).train
    workers = args.workers or recipe.data_workers
    figures: dict = {
        "python": platform.python_version(), "torch": torch.__version__, "nnunetv2": version("nnunetv2"),
        "SimpleITK": SimpleITK.__version__, "cpus": os.cpu_count(), "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "nnUNet_compile": os.environ["nnUNet_compile"],
    }
    log.info("environment: %s", json.dumps(figures))
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        t = step(clock, "data")
        data = make_data(work, args.patients, workers)
        figures["data_s"] = round(time.perf_counter() - t, 1)

        t = step(clock, "training")
        budget = clock.left() - args.preprocess_reserve_s - args.eval_reserve_s
        minutes = max(0.5, min(args.max_train_minutes, budget / 60))
        overrides = {"dataset": data["train"], "device": args.device, "data_workers": workers,
                     "time_limit_minutes": round(minutes, 2), "output_dir": work / "run"}
        for key, value in (("epochs", args.epochs), ("iterations_per_epoch", args.iters), ("batch_size", args.batch),
                           ("num_threads", args.threads)):
            if value is not None:
                overrides[key] = value
        settings = type(recipe).model_validate({**recipe.model_dump(), **overrides})
        log.info("recipe %s: patch %s, features %d..%d, batch %d, %d workers, augmentation %s, lr %g, "
                 "prompt mix %s, training budget %.2f min", RECIPE.relative_to(REPO), settings.patch_size,
                 settings.features_base, settings.features_max, settings.batch_size, settings.data_workers,
                 settings.augmentation, settings.initial_lr, settings.prompt_mix, minutes)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        model = train_model(settings, data["train"], work / "run")
        seconds = time.perf_counter() - t
        figures["training_budget_min"] = round(minutes, 2)
        figures.update(training_figures(work / "run", settings, seconds))
        if args.device == "cuda":
            figures["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        checkpoint = torch.load(model / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        unique = {v.data_ptr(): v.numel() for v in checkpoint["network_weights"].values()}  # the decoder shares the encoder
        figures["parameters_m"] = round(sum(unique.values()) / 1e6, 2)
        figures["checkpoint_mb"] = round((model / "fold_all" / "checkpoint_final.pth").stat().st_size / 1e6, 2)
        (log_file,) = (work / "run").rglob("training_log_*.txt")
        (out / "training_log.txt").write_text(log_file.read_text())
        figures["model_files"] = [p.name for p in pack_model(model, out)]
        log.info("training: %s", json.dumps(figures))
        (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")

        cohorts = [data["heldout"], data["unseen"]]
        summaries = []
        t = step(clock, "evaluation")
        summaries.append(evaluate("medium_gpu", model, cohorts, out, args.device, args.max_lesions))
        figures["evaluate_medium_s"] = round(time.perf_counter() - t, 1)
        if clock.left() > 30:
            t = step(clock, "evaluation of the bundled model")
            summaries.append(evaluate("lesionlocator_small", BUNDLED, cohorts, out, args.device, args.max_lesions))
            figures["evaluate_bundled_s"] = round(time.perf_counter() - t, 1)
        else:
            log.info("!!! no time left to evaluate the bundled model")
        pd.concat(summaries).to_csv(out / "scores.tsv", sep="\t", index=False)
        per_lesion = [pd.read_parquet(p) for p in sorted(out.glob("scores_*.parquet"))]
        pd.concat(per_lesion).to_parquet(out / "scores.parquet", index=False)
        for p in out.glob("scores_*.parquet*"):
            p.unlink()
        if clock.left() > 25:
            t = step(clock, "where an iteration's time goes")
            try:
                figures.update(iteration_split(model, settings, args.device,
                                               repeats=20 if args.device == "cuda" else 1))
            except Exception as err:  # a diagnosis only: the figures above stand without it
                log.info("!!! iteration split failed: %r", err)
            log.info("%.1f s", time.perf_counter() - t)
    figures["total_s"] = round(clock.elapsed(), 1)
    (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    log.info("=== done in %.0f s: %s", clock.elapsed(), json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
