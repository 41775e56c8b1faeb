"""The bundled model: segmenter nnunet without a checkpoint uses it, and its card's scores reproduce."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionlocator.core.config import BUNDLED_MODEL, REPO_ROOT, validate_config
from lesionlocator.core.regions import dice
from lesionlocator.segment.api import Prompt
from lesionlocator.segment.classical import ClassicalSegmenter
from lesionlocator.segment.fallback import WithFallback
from lesionlocator.segment.nnunet import NnUNetSegmenter
from lesionlocator.segment.session import build_segmenter
from tests.segment.simulate import insert_lesions

SCORES = BUNDLED_MODEL / "heldout_scores.tsv"


def test_bundled_model_is_a_small_nnunet_folder():
    sidecar = json.loads((BUNDLED_MODEL / "lesionlocator.json").read_text())
    assert sidecar["trainer_name"] == "nnUNetTrainerLesionLocator"
    size = sum(p.stat().st_size for p in BUNDLED_MODEL.rglob("*") if p.is_file())
    assert size <= 20 * 2**20
    assert (BUNDLED_MODEL / "MODEL_CARD.md").is_file() and SCORES.is_file()


def test_the_default_segmenter_is_the_bundled_model_with_a_classical_fallback():
    segment = validate_config({"segment": {"device": "cpu"}}).segment
    assert segment.segmenter == "nnunet" and segment.checkpoint is None and segment.model_folder == BUNDLED_MODEL
    segmenter = build_segmenter(segment)
    assert isinstance(segmenter, WithFallback)
    assert isinstance(segmenter.primary, NnUNetSegmenter) and isinstance(segmenter.fallback, ClassicalSegmenter)
    assert list(segmenter.primary.folders.values()) == [BUNDLED_MODEL]


def test_nnunet_without_checkpoint_segments_with_the_bundled_model():
    segment = validate_config({"segment": {"segmenter": "nnunet", "device": "cpu", "fallback": "none"}}).segment
    assert segment.checkpoint is None and segment.model_folder == BUNDLED_MODEL
    segmenter = build_segmenter(segment)
    assert isinstance(segmenter, NnUNetSegmenter)

    # A lesion model other than the one it was trained on, in the real CT (HU), oblique geometry kept.
    case = insert_lesions(sitk.ReadImage(str(REPO_ROOT / "data" / "real" / "example_ct.nii.gz")), n_lesions=3, seed=4)
    prompts = [Prompt(i, "box", box=b) for i, b in case.boxes.items()]
    result = segmenter.segment(case.image, prompts)
    scores = [dice(result.labels == i, case.labels == i) for i in case.boxes]
    assert np.mean(scores) > 0.7 and min(scores) > 0.5, scores


def test_missing_bundled_model_is_a_clear_config_error(monkeypatch, tmp_path):
    import lesionlocator.core.config as config

    monkeypatch.setattr(config, "BUNDLED_MODEL", tmp_path / "gone")
    with pytest.raises(config.ConfigError, match="bundled model is missing"):
        config.validate_config({"segment": {"segmenter": "nnunet"}})
    assert config.validate_config({"segment": {"segmenter": "classical"}}).segment.model_folder is None


@pytest.mark.slow
def test_model_card_scores_reproduce(tmp_path):
    """``evaluate-model`` on the regenerated held-out cohort gives the card's table (deterministic on CPU)."""
    from lesionlocator.train.data import generate_dataset
    from lesionlocator.train.evaluate_model import evaluate_models

    card = pd.read_csv(SCORES, sep="\t")
    (dataset,) = generate_dataset(2003, 16, 1, tmp_path / "cohort", tmp_path, 820, "SynthHeldout")
    summary = evaluate_models([dataset], None, tmp_path / "eval.parquet", seed=0,
                              models={"lesionlocator_small": BUNDLED_MODEL})
    merged = card.merge(summary, on=["cohort", "modality", "segmenter"], suffixes=("_card", ""))
    assert len(merged) == len(card) == 4
    for kind in ("point", "box", "mask"):
        np.testing.assert_allclose(merged[kind], merged[f"{kind}_card"], atol=0.005, err_msg=kind)
    assert (merged["lesions"] == merged["lesions_card"]).all()


@pytest.mark.slow
def test_model_card_zero_shot_scores_reproduce(tmp_path):
    """``bench/bench_zero_shot.py`` (lesions in real scans never used in training) gives the card's
    zero-shot table: every source, size class and prompt type, both segmenters."""
    from lesionlocator.train.zero_shot import CARD_TABLE, POOLED, zero_shot_scores

    card = pd.read_csv(CARD_TABLE, sep="\t")
    table, summary = zero_shot_scores(tmp_path)
    keys = ["cohort", "modality", "segmenter", "size"]
    merged = card.merge(summary, on=keys, suffixes=("_card", ""), how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"][keys]
    for kind in ("point", "box", "mask"):
        np.testing.assert_allclose(merged[kind], merged[f"{kind}_card"], atol=0.005, err_msg=kind)
    assert (merged["lesions"] == merged["lesions_card"]).all()
    # pooled over the unseen sources, every size class has lesions (CT: none over 30 mm fits its 40 mm of slices)
    pooled = summary[summary.cohort == POOLED]
    classes = {(m, s) for m, s in zip(pooled.modality, pooled["size"])}
    assert classes >= {("MR", "<=10 mm"), ("MR", "10-30 mm"), ("MR", ">30 mm"), ("CT", "<=10 mm"), ("CT", "10-30 mm")}
