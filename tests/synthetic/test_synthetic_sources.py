"""Sources (nnU-Net datasets with lesions, organ label maps) and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from lesionlocator.core.config import SyntheticConfig, validate_config
from lesionlocator.core.errors import ConfigError, InputError
from synthetic import generate_cohort
from synthetic.phantom import PHANTOM_LABELS, make_phantom
from synthetic.sources import SourceSpec, load_source
from tests.synthetic.conftest import phantom_config


def _phantom_files(tmp_path, size=(72, 60, 40)):
    image, labels = make_phantom(size, np.random.default_rng(1))
    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(ct))
    seg_image = sitk.GetImageFromArray(labels)
    seg_image.CopyInformation(image)
    return image, labels, ct, seg_image


def _nnunet_dataset(tmp_path, shift_label_spacing=False):
    image, _, _, _ = _phantom_files(tmp_path)
    array = sitk.GetArrayFromImage(image)
    labels = np.zeros(array.shape, dtype=np.uint8)
    zz, yy, xx = np.indices(array.shape)
    for centre, radius in (((20, 30, 25), 4), ((20, 30, 50), 3)):
        ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2
        labels[ball] = 1
        array[ball] += 60
    folder = tmp_path / "Dataset009_Lesions"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    out = sitk.GetImageFromArray(array.astype(np.int16))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(folder / "imagesTr" / "case01_0000.nii.gz"))
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    if shift_label_spacing:
        label_image.SetSpacing(tuple(s * 1.1 for s in image.GetSpacing()))
    sitk.WriteImage(label_image, str(folder / "labelsTr" / "case01.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 1, "file_ending": ".nii.gz"}))
    return folder, labels


def test_existing_lesions_of_an_nnunet_dataset_are_progressed(tmp_path):
    folder, labels = _nnunet_dataset(tmp_path)
    config = phantom_config(sources=[f"nnunet:{folder}"], n_patients=1, n_sessions=2, p_new=0.0, p_vanish=0.0)
    truth = generate_cohort(config, tmp_path / "out")
    baseline = truth[truth.session_index == 0]
    assert sorted(baseline.lesion_id) == [1, 2]
    assert set(baseline.site) == {"existing"}
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "derivatives" / "groundtruth" / "sub-P001" / "ses-01" / "lesions.nii.gz")))
    assert np.array_equal(mask > 0, labels > 0)  # baseline keeps the source lesions exactly
    assert set(truth[truth.session_index == 1].lesion_id) == {1, 2}


def test_source_mask_with_other_geometry_is_rejected(tmp_path):
    folder, _ = _nnunet_dataset(tmp_path, shift_label_spacing=True)
    config = phantom_config(sources=[f"nnunet:{folder}"], n_patients=1)
    with pytest.raises(InputError) as err:
        generate_cohort(config, tmp_path / "out")
    assert "case01.nii.gz" in str(err.value) and "spacing" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_organ_missing_from_the_label_map_is_named(tmp_path):
    _, labels, ct, seg_image = _phantom_files(tmp_path)
    no_spleen = sitk.GetArrayFromImage(seg_image)
    no_spleen[no_spleen == PHANTOM_LABELS["spleen"]] = 0
    seg = tmp_path / "seg.nii.gz"
    edited = sitk.GetImageFromArray(no_spleen)
    edited.CopyInformation(seg_image)
    sitk.WriteImage(edited, str(seg))
    config = phantom_config(sources=[f"ct:{ct}"], organ_labels={str(ct): str(seg)}, n_patients=1)
    with pytest.raises(InputError) as err:
        generate_cohort(config, tmp_path / "out")
    assert "seg.nii.gz" in str(err.value) and "spleen" in str(err.value) and "organ_label_ids" in str(err.value)


def test_label_map_with_a_stale_origin_is_realigned(tmp_path):
    image, labels, ct, _ = _phantom_files(tmp_path, size=(72, 60, 48))
    # a 16-slice cut from slice 24 on that kept the full scan's origin (like example_seg.nii.gz)
    cut = sitk.GetImageFromArray(labels[24:40])
    cut.SetSpacing(image.GetSpacing())
    cut.SetDirection(image.GetDirection())
    cut.SetOrigin(image.GetOrigin())
    seg = tmp_path / "cut.nii.gz"
    sitk.WriteImage(cut, str(seg))
    config = phantom_config(sources=[f"ct:{ct}"], organ_labels={str(ct): str(seg)}, site_weights={"liver": 1.0, "body": 1.0})
    source = load_source(SourceSpec("ct", image=ct, label=seg, modality="CT"), config, np.random.default_rng(0))
    expected = np.zeros_like(labels, dtype=bool)
    expected[24:40] = np.isin(labels[24:40], [PHANTOM_LABELS["liver"]])
    assert np.array_equal(source.sites["liver"], expected & source.body)


def test_more_lesions_than_fit_is_a_clear_error_before_any_output(tmp_path):
    config = phantom_config(lesions_per_patient=(40, 40), diameter_mm=(90.0, 100.0), n_patients=1)
    with pytest.raises(ConfigError, match="lesions_per_patient"):
        generate_cohort(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"n_sessions": 0}, "synthetic.n_sessions"),
        ({"n_patients": 0}, "synthetic.n_patients"),
        ({"diameter_mm": [-5, 10]}, "diameter_mm"),
        ({"diameter_mm": [30, 10]}, "diameter_mm: min 30.0 > max 10.0"),
        ({"lesions_per_patient": [5, 2]}, "lesions_per_patient: min 5 > max 2"),
        ({"lesions_per_patient": [0, 2]}, "lesions_per_patient"),
        ({"p_vanish": 1.5}, "synthetic.p_vanish"),
        ({"sources": ["pet:/x.nii.gz"]}, "sources"),
        ({"site_weights": {"brain": 1.0}}, "site_weights"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"margin_mm": -1}, "synthetic.margin_mm"),
    ],
)
def test_impossible_settings_name_the_field(settings, key):
    with pytest.raises(ConfigError) as err:
        validate_config({"synthetic": settings})
    assert key in str(err.value)


def test_missing_source_file_is_named(tmp_path):
    config = SyntheticConfig(sources=[f"ct:{tmp_path / 'nope.nii.gz'}"], organ_labels={})
    with pytest.raises(InputError, match="nope.nii.gz"):
        generate_cohort(config, tmp_path / "out")


def test_existing_foreign_output_folder_is_not_replaced(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "data.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a synthetic cohort"):
        generate_cohort(phantom_config(n_patients=1), out)
    assert (out / "data.txt").read_text() == "keep me"


def test_a_patient_whose_lesions_do_not_fit_is_redrawn_and_the_others_are_unchanged():
    from lesionlocator.core.config import REPO_ROOT
    from synthetic.cohort import _draw_patient, _Room, plan_patient
    from synthetic.sources import expand_sources

    # Seed 1002 on the thin real MR (20 slices, 60 mm): P039's own draw has a 38 mm lesion that
    # grows to 54 mm, with no room for it; P038's fits.
    config = SyntheticConfig(seed=1002, sources=[f"mr:{REPO_ROOT / 'data/real/example_mr_sm.nii.gz'}"], organ_labels={})
    spec = expand_sources(config)[0]
    source = load_source(spec, config, np.random.default_rng(0))
    room = _Room(source)
    own, why = _draw_patient(38, 0, spec, source, config, room)
    assert own is None and "P039" in why and "no room" in why
    redrawn = plan_patient(38, spec, source, config, room)
    second, _ = _draw_patient(38, 1, spec, source, config, room)
    assert redrawn.patient == "P039" and redrawn.source_seed == second.source_seed
    assert [les.shape.radius for les in redrawn.lesions] == [les.shape.radius for les in second.lesions]
    fits, _ = _draw_patient(37, 0, spec, source, config, room)
    assert plan_patient(37, spec, source, config, room).source_seed == fits.source_seed


def test_a_folder_of_scans_gives_one_source_per_scan_with_its_own_organ_labels(tmp_path):
    """``ct:FOLDER``: every scan file and DICOM series folder in it, in name order; label maps left out;
    an organ label map keyed by FOLDER/NAME goes with its scan."""
    from synthetic.sources import expand_sources

    image, _, ct, seg_image = _phantom_files(tmp_path)
    folder = tmp_path / "sources"
    folder.mkdir()
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(folder / "b_chest.nrrd"))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(folder / "a_abdomen.nii.gz"))
    sitk.WriteImage(seg_image, str(folder / "a_abdomen_seg.nii.gz"))
    (folder / "notes.txt").write_text("not a scan")
    series = folder / "c_series"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    volume = sitk.Cast(image, sitk.sitkInt16)
    for k in range(volume.GetDepth()):
        writer.SetFileName(str(series / f"{k:03d}.dcm"))
        writer.Execute(volume[:, :, k])
    config = SyntheticConfig(sources=[f"ct:{folder}"], organ_labels={str(folder / "a_abdomen.nii.gz"): str(folder / "a_abdomen_seg.nii.gz")})
    specs = expand_sources(config)
    assert [s.image.name for s in specs] == ["a_abdomen.nii.gz", "b_chest.nrrd", "c_series"]
    assert [s.label.name if s.label else None for s in specs] == ["a_abdomen_seg.nii.gz", None, None]
    assert {s.modality for s in specs} == {"CT"}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no scan"):
        expand_sources(SyntheticConfig(sources=[f"mr:{empty}"], organ_labels={}))


@pytest.mark.parametrize(
    "name, size, spacing, oblique",
    [
        ("mr_t1_head_itk.nii.gz", (128, 128, 62), (2.0, 2.0, 3.0), False),
        ("mr_t1_head_colin27.nii.gz", (181, 217, 181), (1.0, 1.0, 1.0), False),
        ("mr_pd_head_oblique.nii.gz", (256, 256, 20), (0.859375, 0.859375, 7.0005), True),
    ],
)
def test_the_unseen_scans_are_what_their_source_note_says_and_load_as_sources(name, size, spacing, oblique):
    """data/unseen/ (kept out of training, SOURCE.md): real head MRs the generator can insert lesions into."""
    from lesionlocator.core.config import REPO_ROOT
    from lesionlocator.core.io import read_image
    from synthetic.sources import expand_sources

    path = REPO_ROOT / "data" / "unseen" / name
    assert name in (path.parent / "SOURCE.md").read_text()
    image = read_image(path)
    assert image.GetSize() == size and image.GetSpacing() == pytest.approx(spacing, abs=1e-4)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    assert (np.abs(direction) % 1 > 1e-3).any() == oblique
    config = SyntheticConfig(sources=[f"mr:{path}"], organ_labels={})
    source = load_source(expand_sources(config)[0], config, np.random.default_rng(0))
    assert source.modality == "MR" and source.sites["body"].sum() * source.geometry.voxel_volume_ml() > 500
