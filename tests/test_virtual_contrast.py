"""The virtual-contrast companion (synthesise, then segment): built from the pre-contrast images alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import PHANTOM_ID

from nnunet_dkm.evaluation.oracle import OracleDatasetError
from nnunet_dkm.evaluation.virtual_contrast import (
    SynthesisRecipe,
    make_virtual_contrast_dataset,
)
from nnunet_dkm.fingerprints import file_sha256
from pretrain_dm.settings import PretrainSettings
from pretrain_dm.training import DmPretrainer


@pytest.fixture
def own_phantom(planned_phantom: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A writable copy of the planned phantom with a DM pretrained for two steps."""
    folders = {}
    for name, folder in planned_phantom.items():
        folders[name] = tmp_path / name
        shutil.copytree(folder, folders[name])
        monkeypatch.setenv(name, str(folders[name]))
    checkpoint = tmp_path / "dm.pt"
    monkeypatch.setenv("nnUNet_dkm_checkpoint", str(checkpoint))
    settings = PretrainSettings(dataset_id=PHANTOM_ID, config_overrides={"channels": (16, 32, 32, 32)}, steps=2,
                                batch_size=2, patch_size=(32, 32), sample_ddim_steps=1)
    DmPretrainer(settings, progress=False).run()
    raw = next(folders["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*"))
    preprocessed = folders["nnUNet_preprocessed"] / raw.name
    recipe = SynthesisRecipe(str(checkpoint), file_sha256(checkpoint), "2d", ddim_steps=2, eta=0.0)
    return {"raw": raw, "preprocessed": preprocessed, "recipe": recipe}


def arrays_of(folder: Path) -> dict[str, np.ndarray]:
    return {f"{p.parent.name}/{p.name}": sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
            for p in sorted(folder.rglob("*.nii.gz"))}


def test_no_real_post_contrast_voxel_reaches_the_inputs(own_phantom: dict) -> None:
    raw, preprocessed, recipe = own_phantom["raw"], own_phantom["preprocessed"], own_phantom["recipe"]
    built, seconds = make_virtual_contrast_dataset(raw, preprocessed, recipe, "nnUNetPlans", "cpu")
    assert seconds > 0
    info = json.loads((built / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "pre-contrast", "1": "synthetic post-contrast 1"}
    assert info["dkm"]["virtual_contrast_of"] == raw.name and info["dkm"]["synthesis"]["ddim_steps"] == 2
    first = arrays_of(built)
    test_inputs = [name for name in first if name.startswith("imagesTs/") and name.endswith("_0001.nii.gz")]
    assert test_inputs
    pre = arrays_of(raw / "imagesTs")
    for name in test_inputs:  # channel 0 is the pre-contrast image, channel 1 is not a copy of the truth
        case = Path(name).name[: -len("_0001.nii.gz")]
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "kineticsTs" / f"{case}_0001.nii.gz")))
        np.testing.assert_array_equal(first[f"imagesTs/{case}_0000.nii.gz"], pre[f"imagesTs/{case}_0000.nii.gz"])
        assert not np.array_equal(first[name], truth)

    # replace every real post-contrast phase by noise and rebuild: the companion is identical
    rng = np.random.default_rng(0)
    for post in [*(raw / "kineticsTr").glob("*.nii.gz"), *(raw / "kineticsTs").glob("*.nii.gz")]:
        image = sitk.ReadImage(str(post))
        noise = sitk.GetImageFromArray(rng.normal(0, 1e4, sitk.GetArrayFromImage(image).shape).astype(np.float32))
        noise.CopyInformation(image)
        sitk.WriteImage(noise, str(post))
    shutil.rmtree(built)
    shutil.rmtree(preprocessed / "dkm" / "2d" / "virtual_contrast")
    rebuilt, _ = make_virtual_contrast_dataset(raw, preprocessed, recipe, "nnUNetPlans", "cpu")
    second = arrays_of(rebuilt)
    assert second.keys() == first.keys()
    for name in first:
        np.testing.assert_array_equal(second[name], first[name])


def test_a_companion_made_by_another_dm_is_refused(own_phantom: dict) -> None:
    raw, preprocessed, recipe = own_phantom["raw"], own_phantom["preprocessed"], own_phantom["recipe"]
    built, _ = make_virtual_contrast_dataset(raw, preprocessed, recipe, "nnUNetPlans", "cpu")
    assert make_virtual_contrast_dataset(raw, preprocessed, recipe, "nnUNetPlans", "cpu")[0] == built  # reused
    other = SynthesisRecipe(recipe.dm_checkpoint, "0" * 64, "2d", ddim_steps=2, eta=0.0)
    with pytest.raises(OracleDatasetError, match="another DM or sampler"):
        make_virtual_contrast_dataset(raw, preprocessed, other, "nnUNetPlans", "cpu")
