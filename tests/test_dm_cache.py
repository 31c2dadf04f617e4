"""The DM's data live in nnU-Net's preprocessed space: same crop, resampling and normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import PHANTOM_ID, use_nnunet_folders
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

from nnunet_dkm.preprocessing import PlannedDataset, PreprocessedSpaceError, build_cache, find_pretraining_exams


def test_precontrast_channel_equals_nnunet_preprocessing(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    cache = build_cache(PlannedDataset.load(PHANTOM_ID, "2d"), progress=False)

    preprocessed = next(planned_phantom["nnUNet_preprocessed"].glob(f"Dataset{PHANTOM_ID}_*"))
    nnunet_data = nnUNetDatasetBlosc2(str(preprocessed / "nnUNetPlans_2d"))
    labelled = [exam for exam in cache.exams if exam.source == "labelled"]
    assert sorted(exam.case_id for exam in labelled) == sorted(nnunet_data.identifiers)
    for exam in labelled:
        images, seg = exam.load()
        reference, reference_seg, _, _ = nnunet_data.load_case(exam.case_id)
        assert images.shape[0] == 1 + cache.num_post_phases
        # stored as float16: equal to its precision (relative 2**-11, subnormals below 6e-5 to 3e-8)
        np.testing.assert_allclose(images[0], np.asarray(reference[0]), rtol=2**-11, atol=1e-7)
        np.testing.assert_array_equal(seg, np.asarray(reference_seg[0]) > 0)
        assert list(exam.tumour_slices) == [i for i in range(seg.shape[0]) if seg[i].any()]


def test_postcontrast_is_normalised_with_precontrast_statistics(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``post - pre`` is the enhancement: tumours enhance far more than the rest of the breast."""
    use_nnunet_folders(planned_phantom, monkeypatch)
    cache = build_cache(PlannedDataset.load(PHANTOM_ID, "2d"), progress=False)
    for exam in cache.exams:
        images, seg = exam.load()
        enhancement = images[1] - images[0]
        if seg is not None:
            assert enhancement[seg > 0].mean() > 2 * enhancement[seg == 0].mean()
        # same statistics: where nothing enhances (air / fat) pre and post agree on the normalised scale
        assert abs(float(np.median(enhancement))) < 0.5


def test_cache_holds_unlabelled_exams_but_never_the_test_split(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    cache = build_cache(PlannedDataset.load(PHANTOM_ID, "2d"), progress=False)
    raw = next(planned_phantom["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*"))
    test_cases = {p.name.split("_0000")[0] for p in (raw / "imagesTs").iterdir()}
    sources = [exam.source for exam in cache.exams]
    assert sources.count("labelled") == 3 and sources.count("unlabelled") == 2
    assert not test_cases & {exam.case_id for exam in cache.exams}
    preprocessed = next(planned_phantom["nnUNet_preprocessed"].glob(f"Dataset{PHANTOM_ID}_*"))
    assert cache.folder == preprocessed / "dkm" / "2d" / "cache"


def test_cache_is_rebuilt_for_other_plans(planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    cache = build_cache(PlannedDataset.load(PHANTOM_ID, "2d"), progress=False)
    manifest = cache.folder / "manifest.json"
    meta = json.loads(manifest.read_text())
    meta["plans_identity"]["configuration"] = "something_else"
    manifest.write_text(json.dumps(meta))
    rebuilt = build_cache(PlannedDataset.load(PHANTOM_ID, "2d"), progress=False)
    assert rebuilt.plans_identity["configuration"] == "2d"


def test_missing_planning_and_kinetics_are_explained(nnunet_folders: dict[str, Path], tmp_path: Path) -> None:
    (nnunet_folders["nnUNet_preprocessed"] / "Dataset123_Nothing").mkdir()
    with pytest.raises(PreprocessedSpaceError, match="nnUNetv2_plan_and_preprocess -d 123 -c 2d"):
        PlannedDataset.load(123, "2d")
    raw = tmp_path / "Dataset124_NoKinetics"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    with pytest.raises(PreprocessedSpaceError, match="no post-contrast phases"):
        find_pretraining_exams(raw)
