"""The user's journey through the command line on one REAL exam: the shared TCIA case UCSF-BR-06.

nnUNetv2_dkm_convert_nact -> nnUNetv2_plan_and_preprocess -c 2d --verify_dataset_integrity -> a hand-written
splits_final.json (one case: train = val = that case, as a user with one or two patients would write it) ->
nnUNetv2_dkm_pretrain (a few steps) -> nnUNetv2_train -tr nnUNetTrainerDKM_debug -> nnUNetv2_predict on the
pre-contrast image. The exam is 256x256x60 at 0.703x0.703x2.0 mm, so nnU-Net plans 256x256 patches (batch 3,
7 stages): the point is that the real geometry goes through every command, not a good model. The whole
journey runs once (module fixture); each command's wall time is kept in ``journey["seconds"]`` and printed
(see with ``-s``). Measured on 2 busy cores: convert 2 s, plan 20 s, pretrain 7-56 s, train 165-190 s (two
epochs of 4 iterations, 25-60 s each, then nnU-Net's full validation of the 60 slices with mirroring, 75 s),
predict 23 s with ``--disable_tta`` (70 s with mirroring, which the phantom journey already covers).
Skipped where the real case is absent (see ``nact_pilot_folder``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import journey_environment, plan_and_preprocess
from conftest import run_command as run

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow  # a command-line journey on the real case
DATASET = 996
CASE = "UCSF-BR-06"
OFFICIAL_FTV_VOXELS = 41105
TRAINER = "nnUNetTrainerDKM_debug"


def write_single_case_splits(preprocessed: Path, case: str) -> Path:
    """splits_final.json with one fold that trains and validates on ``case`` (nnU-Net needs 5+ cases for its own)."""
    path = preprocessed / "splits_final.json"
    path.write_text(json.dumps([{"train": [case], "val": [case]}], indent=2))
    return path


@pytest.fixture(scope="module")
def journey(nact_pilot_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("real_journey")
    env = journey_environment(root)
    env.pop("nnUNet_n_proc_DA", None)  # planning needs it unset or > 0
    seconds: dict[str, float] = {}

    def timed(step: str, action) -> None:
        start = time.perf_counter()
        action()
        seconds[step] = time.perf_counter() - start

    timed("convert", lambda: run([str(BIN / "nnUNetv2_dkm_convert_nact"), "-i", str(nact_pilot_folder), "-d",
                                  str(DATASET)], env))  # fmt: skip
    raw = next((root / "nnUNet_raw").glob(f"Dataset{DATASET}_*"))
    timed("plan_and_preprocess", lambda: plan_and_preprocess(DATASET, env))
    preprocessed = root / "nnUNet_preprocessed" / raw.name
    write_single_case_splits(preprocessed, CASE)
    env["nnUNet_n_proc_DA"] = "0"  # augmentation in the training process: no worker start-up cost
    timed("pretrain", lambda: run([str(BIN / "nnUNetv2_dkm_pretrain"), "-d", str(DATASET), "-c", "2d", "--steps", "3",
                                   "--batch-size", "2", "--patch-size", "32", "32", "--channels", "16", "32", "32",
                                   "32"], env))  # fmt: skip
    timed("train", lambda: run([str(BIN / "nnUNetv2_train"), str(DATASET), "2d", "0", "-tr", TRAINER, "-device",
                                "cpu"], env))  # fmt: skip
    prediction = root / "prediction"
    timed("predict", lambda: run([str(BIN / "nnUNetv2_predict"), "-i", str(raw / "imagesTr"), "-o", str(prediction),
                                  "-d", str(DATASET), "-c", "2d", "-f", "0", "-tr", TRAINER, "-device", "cpu", "-npp",
                                  "0", "-nps", "0", "--disable_tta"], env))  # fmt: skip
    print("real-data journey, seconds per command:", {k: round(v, 1) for k, v in seconds.items()})
    results = root / "nnUNet_results" / raw.name / f"{TRAINER}__nnUNetPlans__2d"
    return {"raw": raw, "preprocessed": preprocessed, "results": results, "prediction": prediction,
            "seconds": seconds}  # fmt: skip


def test_the_real_exam_is_converted_with_its_official_label(journey: dict) -> None:
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(journey["raw"] / "labelsTr" / f"{CASE}.nii.gz")))
    assert int(label.sum()) == OFFICIAL_FTV_VOXELS
    record = json.loads((journey["raw"] / "dataset.json").read_text())["dkm"]["cases"][CASE]
    assert record["label_grid_mapping"] == "same grid"


def test_nnunet_plans_trains_and_validates_on_the_hand_written_split(journey: dict) -> None:
    plans = json.loads((journey["preprocessed"] / "nnUNetPlans.json").read_text())
    assert "2d" in plans["configurations"]
    fold = journey["results"] / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    validation = json.loads((fold / "validation" / "summary.json").read_text())
    assert [case["prediction_file"].endswith(f"{CASE}.nii.gz") for case in validation["metric_per_case"]] == [True]
    assert (journey["preprocessed"] / "dkm" / "2d" / "dm_checkpoint.pt").is_file()  # found by the trainer, no flags


def test_prediction_on_the_pre_contrast_image_keeps_its_geometry(journey: dict) -> None:
    image = sitk.ReadImage(str(journey["raw"] / "imagesTr" / f"{CASE}_0000.nii.gz"))
    prediction = sitk.ReadImage(str(journey["prediction"] / f"{CASE}.nii.gz"))
    assert prediction.GetSize() == image.GetSize() == (256, 256, 60)
    assert np.allclose(prediction.GetSpacing(), image.GetSpacing())
    assert np.allclose(prediction.GetOrigin(), image.GetOrigin())
    assert np.allclose(prediction.GetDirection(), image.GetDirection())
    assert set(np.unique(sitk.GetArrayFromImage(prediction)).tolist()) <= {0, 1}
