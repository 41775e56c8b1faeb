"""Training throughput of the promptable trainer (iterations/s) on this machine's CPU.

Builds the small default network (8..64 features) for a given patch size, then times
(a) prompt simulation + encoding for a batch, (b) forward+backward+step on random data, and
(c) a short real run of ``train_model`` on a tiny generated nnU-Net dataset (setup excluded).

    .venv/bin/python bench/bench_train.py [--patch 48 48 48] [--batch 2] [--threads 2] [--iters 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "train"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 48, 48])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--skip-run", action="store_true", help="skip the end-to-end train_model timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from lesionlocator.train.simulate import encode_prompt, sample_kind, simulate_prompt

    patch = tuple(args.patch)
    n_stages = 5 if min(patch) >= 64 else 4
    net = PlainConvUNet(2, n_stages, [min(64, 8 * 2**i) for i in range(n_stages)], torch.nn.Conv3d, 3,
                        [1] + [2] * (n_stages - 1), 2, 2, [2] * (n_stages - 1), True, torch.nn.InstanceNorm3d,
                        {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True},
                        deep_supervision=False)
    params = sum(p.numel() for p in net.parameters())
    optim = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    x = torch.randn(args.batch, 2, *patch)
    y = torch.randint(0, 2, (args.batch, *patch))

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
            t = time.perf_counter()
        optim.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optim.step()
    step = (time.perf_counter() - t) / args.iters
    print(f"network: {params / 1e6:.2f} M parameters, patch {list(patch)}, batch {args.batch}, {args.threads} thread(s)")
    print(f"prompt simulation + encoding: {sim * 1000:.1f} ms per batch")
    print(f"forward+backward+step: {step:.3f} s/iteration = {1 / step:.2f} iterations/s")

    if args.skip_run:
        return
    from conftest import make_raw_dataset
    from lesionlocator.config import TrainConfig
    from lesionlocator.train.run import train_model

    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_raw_dataset(Path(tmp), n_cases=3, shape=(40, 64, 64))
        for epochs in (1, 3):
            settings = TrainConfig(dataset=dataset, patch_size=list(patch), batch_size=args.batch, epochs=epochs,
                                   iterations_per_epoch=args.iters, val_iterations_per_epoch=1, num_threads=args.threads,
                                   device="cpu", resume=epochs > 1)
            t = time.perf_counter()
            train_model(settings, dataset, Path(tmp) / "run")
            elapsed = time.perf_counter() - t
            if epochs == 1:
                first = elapsed
    print(f"train_model, 2 resumed epochs x {args.iters} iterations (+1 validation iteration each; nnU-Net loader, "
          f"augmentation, prompts; resume and export included): {elapsed:.1f} s = {2 * args.iters / elapsed:.2f} "
          f"iterations/s (first call with planning/preprocessing: {first:.1f} s)")


if __name__ == "__main__":
    main()
