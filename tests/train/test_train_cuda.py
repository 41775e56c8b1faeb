"""Training and evaluation on a CUDA GPU (skipped where torch sees no GPU)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lesionlocator.cli import main
from lesionlocator.core.config import BUNDLED_MODEL
from tests.train.conftest import segment_first_case

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_train_on_cuda_writes_a_model_that_loads_on_the_cpu(raw_dataset, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--dataset", str(raw_dataset), "-o", str(run), "--epochs", "1", "--iterations-per-epoch", "3",
            "--patch-size", "16", "32", "32", "--device", "cuda"]
    assert main(args) == 0
    checkpoint = torch.load(run / "model" / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["init_args"]["device"] == torch.device("cpu")  # the exported model names no GPU
    assert all(v.device.type == "cpu" for v in checkpoint["network_weights"].values())
    assert main(args[:5] + ["--epochs", "2"] + args[7:] + ["--resume"]) == 0  # resume on the GPU
    resumed = torch.load(run / "model" / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert resumed["current_epoch"] == 2
    result, labels = segment_first_case(run / "model", raw_dataset)  # on the CPU
    assert result.labels.shape == labels.shape and set(np.unique(result.labels)) <= {0, 3}


@pytest.mark.slow
def test_model_card_scores_reproduce_on_cuda(tmp_path):
    """The bundled model's held-out Dice on the GPU (mixed precision) is its card's CPU figure within 0.01."""
    from lesionlocator.train.data import generate_dataset
    from lesionlocator.train.evaluate_model import evaluate_models

    card = pd.read_csv(BUNDLED_MODEL / "heldout_scores.tsv", sep="\t")
    card = card[card["segmenter"] == "lesionlocator_small"]
    (dataset,) = generate_dataset(2003, 16, 1, tmp_path / "cohort", tmp_path, 820, "SynthHeldout")
    summary = evaluate_models([dataset], None, tmp_path / "eval.parquet", seed=0, classical=False, device="cuda",
                              models={"lesionlocator_small": BUNDLED_MODEL})
    merged = card.merge(summary, on=["cohort", "modality", "segmenter"], suffixes=("_card", ""))
    assert len(merged) == len(card) == 2
    print(merged.to_string(index=False))
    for kind in ("point", "box", "mask"):
        np.testing.assert_allclose(merged[kind], merged[f"{kind}_card"], atol=0.01, err_msg=kind)
