"""Training throughput of the promptable trainer (iterations/s), on the CPU or a GPU.

Two parts:

1. ``--patch/--batch``: a small PlainConvUNet (8..64 features) on random data: (a) prompt
   simulation + encoding for a batch, (b) forward+backward+step, on ``--device``.
2. A real run of ``train_model`` (planning, preprocessing, nnU-Net's loader and augmentation,
   simulated prompts, checkpoints, export) of ``--epochs`` epochs of ``--iters`` iterations. Settings
   come from ``--config`` (a shipped recipe: config/train_small_finetune.yaml,
   config/train_resenc_l.yaml) or the built-in small defaults; the data is ``--dataset`` (an nnU-Net
   raw dataset), a synthetic cohort of ``--patients`` patients generated from the bundled real CT and
   MR, or (default) three tiny generated cases. Steady-state figures come from nnU-Net's own epoch
   times in the training log, leaving out the first epoch (worker start-up and, on a GPU,
   torch.compile), so planning, preprocessing and export are not in them either.

    .venv/bin/python bench/bench_train.py [--patch 48 48 48] [--batch 2] [--threads 2] [--iters 10]
    .venv/bin/python bench/bench_train.py --device cuda --config config/train_resenc_l.yaml --patients 24 \\
        --iters 100 --workers 12 --skip-random
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "train"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_data_step(args, device: torch.device) -> None:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from lesionlocator.train.simulate import encode_prompt, sample_kind, simulate_prompt

    patch = tuple(args.patch)
    n_stages = 5 if min(patch) >= 64 else 4
    net = PlainConvUNet(2, n_stages, [min(64, 8 * 2**i) for i in range(n_stages)], torch.nn.Conv3d, 3,
                        [1] + [2] * (n_stages - 1), 2, 2, [2] * (n_stages - 1), True, torch.nn.InstanceNorm3d,
                        {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True},
                        deep_supervision=False).to(device)
    params = sum(p.numel() for p in net.parameters())
    optim = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    x = torch.randn(args.batch, 2, *patch, device=device)
    y = torch.randint(0, 2, (args.batch, *patch), device=device)

    rng = np.random.default_rng(0)
    seg = np.zeros(patch, np.uint8)
    zz, yy, xx = np.indices(patch)
    for c in ((12, 14, 16), (30, 30, 28)):
        seg[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 36] = 1
    t = time.perf_counter()
    for _ in range(args.iters * args.batch):
        encode_prompt(simulate_prompt(seg, sample_kind({"point": 1, "box": 1, "mask": 1}, rng), rng), patch)
    sim = (time.perf_counter() - t) / args.iters

    for i in range(args.iters + 2):
        if i == 2:
            sync(device)
            t = time.perf_counter()
        optim.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optim.step()
    sync(device)
    step = (time.perf_counter() - t) / args.iters
    print(f"network: {params / 1e6:.2f} M parameters, patch {list(patch)}, batch {args.batch}, on {where(device, args)}")
    print(f"prompt simulation + encoding: {sim * 1000:.1f} ms per batch")
    print(f"forward+backward+step: {step:.3f} s/iteration = {1 / step:.2f} iterations/s")


def where(device: torch.device, args) -> str:
    if device.type == "cuda":
        compiled = os.environ.get("nnUNet_compile", "true").lower() in ("true", "1", "t")
        return f"cuda ({torch.cuda.get_device_name(device)}; nnU-Net torch.compile {'on' if compiled else 'off'})"
    return f"cpu, {args.threads} thread(s)"


def steady_epoch_times(run: Path) -> list[float]:
    """nnU-Net's 'Epoch time: X s' of the run's training log, all but the first epoch."""
    (log,) = run.rglob("training_log_*.txt")
    return [float(m) for m in re.findall(r"Epoch time: ([0-9.]+) s", log.read_text())][1:]


def real_run(args, device: torch.device, tmp: Path) -> None:
    from lesionlocator.core.config import TrainConfig, load_config
    from lesionlocator.train.run import train_model

    if args.dataset:
        dataset, what = Path(args.dataset), args.dataset
    elif args.patients:
        from lesionlocator.train.data import generate_dataset

        t = time.perf_counter()
        (dataset,) = generate_dataset(args.seed, args.patients, 2, tmp / "cohort", tmp, 990, "BenchSynth")
        what = f"synthetic cohort, {args.patients} patients x 2 sessions, seed {args.seed}"
        print(f"generated {what} in {time.perf_counter() - t:.1f} s")
    else:
        from conftest import make_raw_dataset

        dataset, what = make_raw_dataset(tmp, n_cases=3, shape=(40, 64, 64)), "3 tiny generated cases"

    base = load_config(args.config).train if args.config else TrainConfig(patch_size=list(args.patch), batch_size=args.batch)
    overrides = {"dataset": dataset, "iterations_per_epoch": args.iters, "val_iterations_per_epoch": 1,
                 "device": device.type, "num_threads": args.threads, "save_every": 1, "time_limit_minutes": None}
    if args.workers:
        overrides["data_workers"] = args.workers
    if args.init_from:
        overrides["init_from"] = Path(args.init_from)
    run = tmp / "run"
    settings = base.model_copy(update={**overrides, "epochs": args.epochs, "resume": False})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    model = train_model(settings, dataset, run)
    elapsed = time.perf_counter() - t
    plans = json.loads((model / "plans.json").read_text())["configurations"]["3d_fullres"]
    arch = plans["architecture"]
    ckpt = torch.load(model / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    params = sum(v.numel() for k, v in ckpt["network_weights"].items() if not k.endswith("num_batches_tracked"))
    per_epoch = statistics.median(steady_epoch_times(run))
    print(f"recipe: {args.config or 'built-in small defaults'}{' fine-tuning ' + args.init_from if args.init_from else ''}; "
          f"data: {what}")
    print(f"network: {arch['network_class_name'].rsplit('.', 1)[-1]}, {params / 1e6:.2f} M parameters, "
          f"features {arch['arch_kwargs']['features_per_stage']}, patch {plans['patch_size']}, "
          f"batch {plans['batch_size']}, spacing {plans['spacing']} mm; on {where(device, args)}, "
          f"{settings.data_workers} augmentation worker(s)")
    print(f"train_model: {args.epochs} epochs x {args.iters} iterations (+ 1 validation iteration each), with "
          f"planning, preprocessing, start-up, checkpoints and export: {elapsed:.1f} s")
    print(f"steady state (median nnU-Net epoch time, epochs 2-{args.epochs}): {per_epoch:.2f} s per epoch of {args.iters} "
          f"iterations = {args.iters / per_epoch:.2f} iterations/s = {args.iters * plans['batch_size'] / per_epoch:.1f} "
          f"patches/s")
    if device.type == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 48, 48])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10, help="iterations timed (per epoch in the real run)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the real run (the first is not timed)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--config", help="study config whose train section is the recipe (default: built-in small)")
    parser.add_argument("--init-from", help="fine-tune this trained-model folder (e.g. models/lesionlocator_small)")
    parser.add_argument("--dataset", help="nnU-Net raw dataset for the real run")
    parser.add_argument("--patients", type=int, default=0, help="generate a synthetic cohort of this many patients")
    parser.add_argument("--seed", type=int, default=9001, help="seed of the generated cohort")
    parser.add_argument("--workers", type=int, default=0, help="augmentation workers (default: the recipe's)")
    parser.add_argument("--skip-random", action="store_true", help="skip the random-data timing")
    parser.add_argument("--skip-run", action="store_true", help="skip the end-to-end train_model timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if not args.skip_random:
        random_data_step(args, device)
    if not args.skip_run:
        with tempfile.TemporaryDirectory() as tmp:
            real_run(args, device, Path(tmp))


if __name__ == "__main__":
    main()
