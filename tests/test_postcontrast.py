"""nnUNetv2_dkm_synthesize_postcontrast: DM-synthesised post-contrast images in the input's geometry."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import PHANTOM_ID, use_nnunet_folders

from nnunet_dkm.preprocessing import PlannedDataset, preprocess_like_precontrast, preprocessed_to_original_space

BIN = Path(sys.executable).parent


def test_preprocessing_round_trip_restores_the_image(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    dataset = PlannedDataset.load(PHANTOM_ID, "2d")
    plans_manager, configuration_manager = dataset.plans_manager, dataset.configuration_manager
    raw = next(planned_phantom["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*"))
    reader = plans_manager.image_reader_writer_class()
    data, properties = reader.read_images([str(next((raw / "imagesTs").iterdir()))])
    stack, stats, geometry = preprocess_like_precontrast([data], properties["spacing"], plans_manager,
                                                         configuration_manager)
    restored = preprocessed_to_original_space(stack, stats, geometry, plans_manager, configuration_manager)
    np.testing.assert_allclose(restored, data, rtol=1e-4, atol=1e-2)


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "nnUNetv2_dkm_synthesize_postcontrast"), *arguments], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_cli_writes_every_phase_in_the_input_geometry_deterministically(
    planned_phantom: dict[str, Path], tiny_dm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    images = next(planned_phantom["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*")) / "imagesTs"
    arguments = ["-i", str(images), "-o", str(tmp_path / "out"), "-d", str(PHANTOM_ID), "-chk", str(tiny_dm),
                 "--ddim-steps", "2"]
    first = run_cli(*arguments)
    assert first.returncode == 0, first.stderr[-2000:]
    for pre_file in images.iterdir():
        case = pre_file.name.replace("_0000.nii.gz", "")
        pre = sitk.ReadImage(str(pre_file))
        for phase in (1, 2):
            synthetic = sitk.ReadImage(str(tmp_path / "out" / f"{case}_{phase:04d}.nii.gz"))
            assert synthetic.GetSize() == pre.GetSize()
            assert np.allclose(synthetic.GetSpacing(), pre.GetSpacing())
            assert np.allclose(synthetic.GetOrigin(), pre.GetOrigin())
            assert np.allclose(synthetic.GetDirection(), pre.GetDirection())
            assert np.isfinite(sitk.GetArrayViewFromImage(synthetic)).all()

    first_arrays = {f.name: sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in (tmp_path / "out").iterdir()}
    refused = run_cli(*arguments)
    assert refused.returncode != 0 and "--overwrite" in refused.stderr and "Traceback" not in refused.stderr

    again = run_cli(*arguments, "--overwrite")
    assert again.returncode == 0
    for name, array in first_arrays.items():
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / name))), array)


@pytest.mark.slow
def test_cli_explains_a_missing_checkpoint(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    images = next(planned_phantom["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*")) / "imagesTs"
    result = run_cli("-i", str(images), "-o", str(tmp_path / "out"), "-d", str(PHANTOM_ID), "-chk",
                     str(tmp_path / "missing.pt"))
    assert result.returncode != 0
    assert "nnUNetv2_dkm_pretrain" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_folder_is_read_for_its_precontrast_images_only(
    planned_phantom: dict[str, Path], tiny_dm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A folder holding case_0000 and case_0001 (kinetics layout) gives phases of case only, not of case_0001."""
    use_nnunet_folders(planned_phantom, monkeypatch)
    raw = next(planned_phantom["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    case = sorted((raw / "imagesTs").iterdir())[0].name.replace("_0000.nii.gz", "")
    shutil.copy(raw / "imagesTs" / f"{case}_0000.nii.gz", mixed)
    shutil.copy(raw / "kineticsTs" / f"{case}_0001.nii.gz", mixed)
    result = run_cli("-i", str(mixed), "-o", str(tmp_path / "out"), "-d", str(PHANTOM_ID), "-chk", str(tiny_dm),
                     "--ddim-steps", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{case}_0001.nii.gz", f"{case}_0002.nii.gz"]
    assert "not an nnU-Net input folder" in result.stdout


@pytest.mark.slow
def test_outputs_are_never_written_where_nnunet_would_read_them_as_channels(
    planned_phantom: dict[str, Path], tiny_dm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    images = tmp_path / "images"
    shutil.copytree(next(planned_phantom["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*")) / "imagesTs", images)
    before = sorted(p.name for p in images.iterdir())
    for output in (images, images / ".." / "images"):
        result = run_cli("-i", str(images), "-o", str(output), "-d", str(PHANTOM_ID), "-chk", str(tiny_dm))
        assert result.returncode != 0 and "is the input folder" in result.stderr and "Traceback" not in result.stderr
    other_inputs = tmp_path / "other_inputs"
    shutil.copytree(images, other_inputs)
    result = run_cli("-i", str(images), "-o", str(other_inputs), "-d", str(PHANTOM_ID), "-chk", str(tiny_dm))
    assert result.returncode != 0 and "holds pre-contrast images" in result.stderr
    assert sorted(p.name for p in images.iterdir()) == before


@pytest.mark.slow
def test_missing_dm_message_names_this_dataset_and_the_variable(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    images = next(planned_phantom["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*")) / "imagesTs"
    monkeypatch.setenv("nnUNet_dkm_checkpoint", str(tmp_path / "nowhere.pt"))
    result = run_cli("-i", str(images), "-o", str(tmp_path / "out"), "-d", str(PHANTOM_ID))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"nnUNetv2_dkm_pretrain -d {PHANTOM_ID} -c 2d" in result.stderr and "DATASET" not in result.stderr
    assert "$nnUNet_dkm_checkpoint=" in result.stderr and "unset nnUNet_dkm_checkpoint" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("arguments", [["--ddim-steps", "0"], ["--ddim-steps", "-5"], ["--seed", "-1"]])
def test_bad_numbers_are_refused_by_the_parser(arguments: list[str], tmp_path: Path) -> None:
    result = run_cli("-i", str(tmp_path), "-o", str(tmp_path / "out"), "-d", "1", *arguments)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"argument {arguments[0]}" in result.stderr
