"""Every dataset our converters write passes nnU-Net's own integrity check and planning.

Runs the real command ``nnUNetv2_plan_and_preprocess -d ID -c 2d --verify_dataset_integrity``
as a user would, on a small synthetic phantom and on the converted real TCIA case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import PHANTOM_ID, plan_and_preprocess

from dataset_conversion.convert_nact import convert_nact


def preprocessed_case_ids(preprocessed: Path, dataset_folder: str) -> list[str]:
    data_folder = preprocessed / dataset_folder / "nnUNetPlans_2d"
    names = {p.name.split(".")[0] for p in data_folder.iterdir() if not p.name.endswith("pkl")}
    return sorted(name for name in names if not name.endswith("_seg"))


def test_synthetic_dataset_passes_nnunet_planning(planned_phantom: dict[str, Path]) -> None:
    preprocessed = next(planned_phantom["nnUNet_preprocessed"].glob(f"Dataset{PHANTOM_ID}_*"))
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    assert "2d" in plans["configurations"]
    # nnU-Net sees the pre-contrast image only, and only the labelled training cases (not unlabelledTr/, imagesTs/)
    fingerprint = json.loads((preprocessed / "dataset_fingerprint.json").read_text())
    assert len(fingerprint["spacings"]) == 3
    assert len(preprocessed_case_ids(planned_phantom["nnUNet_preprocessed"], preprocessed.name)) == 3


@pytest.mark.slow
def test_converted_real_case_passes_nnunet_planning(nact_pilot_folder: Path, nnunet_folders: dict[str, Path]) -> None:
    dataset = convert_nact(nact_pilot_folder, 991)
    plan_and_preprocess(991)

    case_ids = preprocessed_case_ids(nnunet_folders["nnUNet_preprocessed"], dataset.name)
    assert case_ids == ["UCSF-BR-06"]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTr" / "UCSF-BR-06.nii.gz")))
    assert abs(int((label > 0).sum()) - 41105) <= 0.001 * 41105
    assert np.unique(label).tolist() == [0, 1]
