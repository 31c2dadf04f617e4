"""MAMA-MIA -> nnU-Net raw conversion, on a small fake MAMA-MIA tree written by the tests.

The fake tree follows the distributed dataset: upper-case patient folders, lower-case file names
(``images/DUKE_001/duke_001_0000.nii.gz``, ``segmentations/expert/duke_001.nii.gz``) and a
``train_test_splits.csv`` with columns ``train_split`` and ``test_split``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.convert_mamamia import cohort_of, convert_mamamia, read_splits
from dataset_conversion.raw_dataset import ConversionSummary, DatasetConversionError, RawDatasetWriter

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE = (16, 16, 4)  # SimpleITK (x, y, z); numpy arrays are (z, y, x)
SPACING = (0.7, 0.7, 2.0)
ORIGIN = (-40.0, 25.0, 12.5)
DIRECTION = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)  # a non-axial orientation, to see it preserved


def make_volume(array: np.ndarray, spacing=SPACING, origin=ORIGIN) -> sitk.Image:
    """A SimpleITK image from a (z, y, x) array on the default grid."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(DIRECTION)
    return image


def write_patient(
    root: Path,
    patient_id: str,
    num_post: int = 2,
    label: str | None = "tumour",
    upper_case_files: bool = False,
    label_value: int = 1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write one exam into a fake MAMA-MIA tree; returns the written arrays (``phase0``.., ``label``).

    ``label``: "tumour" (a block of ``label_value``), "empty" (all zero), "wrong_size" (a grid one slice
    short of the images) or None (no segmentation file).
    """
    rng = np.random.default_rng(seed)
    folder = root / "images" / patient_id
    folder.mkdir(parents=True, exist_ok=True)
    stem = patient_id.upper() if upper_case_files else patient_id.lower()
    arrays = {}
    for phase in range(num_post + 1):
        array = rng.integers(0, 1000, size=SIZE[::-1]).astype(np.int16)
        sitk.WriteImage(make_volume(array), str(folder / f"{stem}_{phase:04d}.nii.gz"))
        arrays[f"phase{phase}"] = array
    expert = root / "segmentations" / "expert"
    expert.mkdir(parents=True, exist_ok=True)
    if label is not None:
        shape = SIZE[::-1] if label != "wrong_size" else (SIZE[2] - 1, SIZE[1], SIZE[0])
        array = np.zeros(shape, dtype=np.uint8)
        if label != "empty":
            array[1:3, 4:9, 5:11] = label_value
        sitk.WriteImage(make_volume(array), str(expert / f"{stem}.nii.gz"))
        arrays["label"] = array
    return arrays


def write_splits(root: Path, train: list[str], test: list[str], header=("train_split", "test_split")) -> None:
    """MAMA-MIA's split file: two columns of patient ids, the shorter one padded with empty cells."""
    rows = [",".join(header)]
    for index in range(max(len(train), len(test))):
        rows.append(f"{train[index] if index < len(train) else ''},{test[index] if index < len(test) else ''}")
    (root / "train_test_splits.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def mamamia(tmp_path: Path) -> Path:
    """Five labelled exams, one per cohort plus a second DUKE one; DUKE_001 has three post phases."""
    root = tmp_path / "MAMA-MIA"
    write_patient(root, "DUKE_001", num_post=3, seed=1)
    write_patient(root, "DUKE_002", seed=2)
    write_patient(root, "ISPY1_1001", seed=3)
    write_patient(root, "ISPY2_100899", seed=4)
    write_patient(root, "NACT_01", seed=5)
    return root


def case_ids(folder: Path) -> set[str]:
    return {path.name.split(".")[0] for path in folder.iterdir()}


def read_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


# -- splits and cohorts -----------------------------------------------------------------------
def test_split_csv_puts_listed_patients_into_training_and_test(mamamia: Path, nnunet_folders: dict[str, Path]):
    # ids written in lower case in the csv are still matched to the upper-case patient folders
    write_splits(mamamia, train=["DUKE_001", "ispy1_1001", "NACT_01"], test=["DUKE_002", "ISPY2_100899"])
    dataset = convert_mamamia(mamamia, 992)
    assert case_ids(dataset / "imagesTr") == {"DUKE_001_0000", "ISPY1_1001_0000", "NACT_01_0000"}
    assert case_ids(dataset / "imagesTs") == {"DUKE_002_0000", "ISPY2_100899_0000"}
    assert case_ids(dataset / "labelsTs") == {"DUKE_002", "ISPY2_100899"}
    assert case_ids(dataset / "kineticsTs") == {f"{c}_{p:04d}" for c in ("DUKE_002", "ISPY2_100899") for p in (1, 2)}
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    assert dataset_json["numTraining"] == 3
    assert dataset_json["dkm"]["num_test"] == 2
    assert dataset_json["dkm"]["split_source"] == "train_test_splits.csv"


def test_without_split_csv_every_labelled_exam_is_training(mamamia: Path, nnunet_folders: dict[str, Path], capsys):
    dataset = convert_mamamia(mamamia, 992)
    assert len(case_ids(dataset / "imagesTr")) == 5
    assert not (dataset / "imagesTs").exists()
    assert "every labelled exam is a training case" in capsys.readouterr().out


def test_split_csv_without_the_expected_columns_is_a_clear_error(mamamia: Path, nnunet_folders: dict[str, Path]):
    write_splits(mamamia, train=["DUKE_001"], test=["DUKE_002"], header=("train", "test"))
    with pytest.raises(DatasetConversionError, match=r"train_test_splits\.csv: expected columns train_split"):
        convert_mamamia(mamamia, 992)
    assert list(nnunet_folders["nnUNet_raw"].iterdir()) == []


def test_read_splits_rejects_a_patient_listed_in_both_columns(tmp_path: Path):
    write_splits(tmp_path, train=["DUKE_001", "NACT_01"], test=["duke_001"])
    with pytest.raises(DatasetConversionError, match="duke_001 is listed in both"):
        read_splits(tmp_path / "train_test_splits.csv")


def test_cohort_filter_keeps_only_the_requested_cohorts(mamamia: Path, nnunet_folders: dict[str, Path]):
    dataset = convert_mamamia(mamamia, 992, cohorts=["nact", "DUKE"])
    assert case_ids(dataset / "imagesTr") == {"DUKE_001_0000", "DUKE_002_0000", "NACT_01_0000"}
    assert json.loads((dataset / "dataset.json").read_text())["dkm"]["cohorts"] == ["DUKE", "NACT"]


def test_cohort_without_patients_is_a_clear_error(mamamia: Path, nnunet_folders: dict[str, Path]):
    with pytest.raises(DatasetConversionError, match="no patient of cohort DUKE2.*cohorts found: DUKE, ISPY1"):
        convert_mamamia(mamamia, 992, cohorts=["DUKE2"])


def test_cohort_is_the_id_before_the_last_underscore():
    assert [cohort_of(p) for p in ("DUKE_001", "ispy1_1001", "ISPY2_100899", "NACT_01")] == [
        "DUKE", "ISPY1", "ISPY2", "NACT"
    ]


# -- layout and content -----------------------------------------------------------------------
def test_layout_and_dataset_json_dkm_block(mamamia: Path, nnunet_folders: dict[str, Path]):
    dataset = convert_mamamia(mamamia, 992, cohorts=["DUKE"])
    assert dataset == nnunet_folders["nnUNet_raw"] / "Dataset992_MAMAMIA"
    assert sorted(p.name for p in dataset.iterdir()) == ["dataset.json", "imagesTr", "kineticsTr", "labelsTr"]
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == ["DUKE_001_0000.nii.gz", "DUKE_002_0000.nii.gz"]
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == ["DUKE_001.nii.gz", "DUKE_002.nii.gz"]
    # DUKE_001 has three post-contrast phases; only the first two are kept
    assert sorted(p.name for p in (dataset / "kineticsTr").iterdir()) == [
        "DUKE_001_0001.nii.gz", "DUKE_001_0002.nii.gz", "DUKE_002_0001.nii.gz", "DUKE_002_0002.nii.gz"
    ]
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "pre-contrast"}
    assert dataset_json["labels"] == {"background": 0, "tumour": 1}
    assert dataset_json["file_ending"] == ".nii.gz"
    dkm = dataset_json["dkm"]
    assert dkm["label_source"] == "MAMA-MIA expert"
    assert dkm["cohorts"] == ["DUKE"]
    assert dkm["num_post_contrast_phases"] == 2
    assert dkm["phases"] == ["pre-contrast", "post-contrast 1", "post-contrast 2"]
    assert dkm["acquisition_times_s"] is None


def test_phases_are_copied_voxel_for_voxel_and_labels_binarised(tmp_path: Path, nnunet_folders: dict[str, Path]):
    root = tmp_path / "MAMA-MIA"
    # upper-case file names, as the MAMA-MIA helper code writes them, and a label stored as 0/255
    written = write_patient(root, "NACT_07", upper_case_files=True, label_value=255, seed=7)
    dataset = convert_mamamia(root, 992, num_post_phases=2)
    assert np.array_equal(read_array(dataset / "imagesTr" / "NACT_07_0000.nii.gz"), written["phase0"])
    for phase in (1, 2):
        kinetic = read_array(dataset / "kineticsTr" / f"NACT_07_{phase:04d}.nii.gz")
        assert np.array_equal(kinetic, written[f"phase{phase}"])
    label = sitk.ReadImage(str(dataset / "labelsTr" / "NACT_07.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(label), (written["label"] > 0).astype(np.uint8))
    pre = sitk.ReadImage(str(dataset / "imagesTr" / "NACT_07_0000.nii.gz"))
    assert pre.GetSpacing() == pytest.approx(SPACING)
    assert pre.GetOrigin() == pytest.approx(ORIGIN)
    assert pre.GetDirection() == pytest.approx(DIRECTION)
    assert label.GetOrigin() == pre.GetOrigin()


def test_tiny_float_noise_in_the_geometry_is_tolerated(tmp_path: Path, nnunet_folders: dict[str, Path]):
    root = tmp_path / "MAMA-MIA"
    write_patient(root, "DUKE_010")
    phase1 = root / "images" / "DUKE_010" / "duke_010_0001.nii.gz"
    image = sitk.ReadImage(str(phase1))
    image.SetOrigin(tuple(o + 1e-5 for o in ORIGIN))
    sitk.WriteImage(image, str(phase1))
    dataset = convert_mamamia(root, 992)
    assert case_ids(dataset / "imagesTr") == {"DUKE_010_0000"}


# -- skipped exams ----------------------------------------------------------------------------
def test_exam_with_too_few_phases_is_skipped_naming_it(mamamia: Path, nnunet_folders: dict[str, Path], capsys):
    summary = ConversionSummary()
    dataset = convert_mamamia(mamamia, 992, num_post_phases=3, summary=summary)
    # only DUKE_001 has three post-contrast phases
    assert case_ids(dataset / "imagesTr") == {"DUKE_001_0000"}
    skipped = dict(summary.skipped)
    assert set(skipped) == {"DUKE_002", "ISPY1_1001", "ISPY2_100899", "NACT_01"}
    assert "2 post-contrast phase(s), --num-post-phases 3 needs 0001..0003" in skipped["NACT_01"]
    assert str(mamamia / "images" / "NACT_01") in skipped["NACT_01"]
    out = capsys.readouterr().out
    assert "skipped                  : 4" in out
    assert "NACT_01" in out and "--num-post-phases 3" in out


def test_exam_without_pre_contrast_image_is_skipped_naming_the_file(mamamia: Path, nnunet_folders: dict[str, Path]):
    (mamamia / "images" / "ISPY1_1001" / "ispy1_1001_0000.nii.gz").unlink()
    summary = ConversionSummary()
    convert_mamamia(mamamia, 992, summary=summary)
    reason = dict(summary.skipped)["ISPY1_1001"]
    assert "pre-contrast image" in reason and "ispy1_1001_0000.nii.gz missing" in reason


def test_phase_on_another_grid_is_skipped_naming_the_file(mamamia: Path, nnunet_folders: dict[str, Path]):
    phase2 = mamamia / "images" / "ISPY2_100899" / "ispy2_100899_0002.nii.gz"
    image = sitk.ReadImage(str(phase2))
    image.SetSpacing((0.9, 0.9, 2.0))
    sitk.WriteImage(image, str(phase2))
    summary = ConversionSummary()
    dataset = convert_mamamia(mamamia, 992, summary=summary)
    assert "ISPY2_100899_0000" not in case_ids(dataset / "imagesTr")
    reason = dict(summary.skipped)["ISPY2_100899"]
    assert str(phase2) in reason and "spacing" in reason


def test_label_of_wrong_size_is_skipped_naming_the_file(mamamia: Path, nnunet_folders: dict[str, Path], capsys):
    write_patient(mamamia, "DUKE_003", label="wrong_size", seed=9)
    summary = ConversionSummary()
    dataset = convert_mamamia(mamamia, 992, summary=summary)
    assert "DUKE_003_0000" not in case_ids(dataset / "imagesTr")
    assert not (dataset / "unlabelledTr").exists()  # a broken label is not silently treated as no label
    reason = dict(summary.skipped)["DUKE_003"]
    assert str(mamamia / "segmentations" / "expert" / "duke_003.nii.gz") in reason
    assert "size (16, 16, 3) differs from the pre-contrast image's (16, 16, 4)" in reason
    assert "duke_003.nii.gz" in capsys.readouterr().out


def test_truncated_phase_is_skipped_naming_the_file_not_written_as_a_black_phase(
    mamamia: Path, nnunet_folders: dict[str, Path]
):
    # SimpleITK reads a .nii.gz cut to 300 bytes without an error and fills the rest with zeros
    truncated = mamamia / "images" / "DUKE_002" / "duke_002_0001.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:300])
    summary = ConversionSummary()
    dataset = convert_mamamia(mamamia, 992, summary=summary)
    assert "DUKE_002_0001" not in case_ids(dataset / "kineticsTr")
    reason = dict(summary.skipped)["DUKE_002"]
    assert reason.startswith(f"{truncated}: truncated") and "gzip stream ends early" in reason


def test_nan_voxels_are_refused_although_the_reader_turns_them_into_zeros(
    mamamia: Path, nnunet_folders: dict[str, Path]
):
    phase = mamamia / "images" / "ISPY1_1001" / "ispy1_1001_0002.nii.gz"
    array = read_array(phase).astype(np.float32)
    array[1, 2, 3] = np.nan
    sitk.WriteImage(make_volume(array), str(phase))
    assert not np.isnan(read_array(phase)).any()  # SimpleITK's NIfTI reader hides it
    summary = ConversionSummary()
    dataset = convert_mamamia(mamamia, 992, summary=summary)
    assert "ISPY1_1001_0000" not in case_ids(dataset / "imagesTr")
    assert f"{phase}: 1 of 1024 voxels are NaN or infinite" in dict(summary.skipped)["ISPY1_1001"]


def test_damaged_label_skips_the_exam_naming_the_file(mamamia: Path, nnunet_folders: dict[str, Path]):
    label = mamamia / "segmentations" / "expert" / "nact_01.nii.gz"
    data = label.read_bytes()
    label.write_bytes(data[:-20] + bytes(b ^ 0xFF for b in data[-20:]))  # a wrong CRC at the end of the gzip stream
    summary = ConversionSummary()
    dataset = convert_mamamia(mamamia, 992, summary=summary)
    assert "NACT_01_0000" not in case_ids(dataset / "imagesTr") and not (dataset / "unlabelledTr").exists()
    assert dict(summary.skipped)["NACT_01"].startswith(f"{label}: ")


def test_label_values_other_than_0_and_1_are_reported_when_merged(tmp_path: Path, nnunet_folders: dict[str, Path]):
    root = tmp_path / "MAMA-MIA"
    written = write_patient(root, "DUKE_004", label_value=2, seed=4)
    write_patient(root, "DUKE_005", seed=5)
    summary = ConversionSummary()
    dataset = convert_mamamia(root, 992, summary=summary)
    assert np.array_equal(read_array(dataset / "labelsTr" / "DUKE_004.nii.gz"), (written["label"] > 0))
    merged = [note for note in summary.notes if "other than 0 and 1" in note]
    assert merged == [f"DUKE_004: {root / 'segmentations' / 'expert' / 'duke_004.nii.gz'} holds values other than 0 "
                      f"and 1: 2 (60 voxels); every value > 0 was merged into the tumour label 1, the others into "
                      f"background 0"]
    assert merged[0] in summary.table()


def test_unreadable_image_is_skipped_naming_the_file(mamamia: Path, nnunet_folders: dict[str, Path]):
    broken = mamamia / "images" / "DUKE_002" / "duke_002_0001.nii.gz"
    broken.write_bytes(b"not a nifti file")
    summary = ConversionSummary()
    convert_mamamia(mamamia, 992, summary=summary)
    assert f"{broken} cannot be read" in dict(summary.skipped)["DUKE_002"]


# -- unlabelled exams -------------------------------------------------------------------------
def test_exams_without_or_with_empty_segmentation_go_to_unlabelled(mamamia: Path, nnunet_folders: dict[str, Path]):
    write_patient(mamamia, "ISPY2_200001", label=None, seed=11)
    write_patient(mamamia, "ISPY2_200002", label="empty", seed=12)
    summary = ConversionSummary()
    dataset = convert_mamamia(mamamia, 992, summary=summary)
    assert case_ids(dataset / "unlabelledTr") == {f"ISPY2_20000{i}_{p:04d}" for i in (1, 2) for p in (0, 1, 2)}
    assert "ISPY2_200001_0000" not in case_ids(dataset / "imagesTr")
    assert summary.written["unlabelled"] == ["ISPY2_200001", "ISPY2_200002"]
    assert summary.skipped == []
    notes = "\n".join(summary.notes)
    assert "ISPY2_200001 (no expert segmentation)" in notes and "ISPY2_200002 (empty expert segmentation)" in notes
    assert "unlabelled exams written : 2" in summary.table()
    assert json.loads((dataset / "dataset.json").read_text())["dkm"]["num_unlabelled"] == 2


def test_skip_unlabelled_drops_exams_without_segmentation(mamamia: Path, nnunet_folders: dict[str, Path]):
    write_patient(mamamia, "ISPY2_200001", label=None, seed=11)
    summary = ConversionSummary()
    dataset = convert_mamamia(mamamia, 992, skip_unlabelled=True, summary=summary)
    assert not (dataset / "unlabelledTr").exists()
    assert "no expert segmentation" in dict(summary.skipped)["ISPY2_200001"]


def test_unlabelled_test_split_exam_is_kept_out_of_pretraining(mamamia: Path, nnunet_folders: dict[str, Path]):
    write_patient(mamamia, "ISPY2_200001", label=None, seed=11)
    train = ["DUKE_001", "DUKE_002", "ISPY1_1001", "ISPY2_100899"]
    write_splits(mamamia, train=train, test=["NACT_01", "ISPY2_200001"])
    summary = ConversionSummary()
    dataset = convert_mamamia(mamamia, 992, summary=summary)
    assert not (dataset / "unlabelledTr").exists()
    assert "test-split exam with no expert segmentation" in dict(summary.skipped)["ISPY2_200001"]


# -- bad input and atomicity ------------------------------------------------------------------
def test_missing_input_or_empty_tree_is_a_clear_error(tmp_path: Path, nnunet_folders: dict[str, Path]):
    with pytest.raises(DatasetConversionError, match="input folder .*nowhere does not exist"):
        convert_mamamia(tmp_path / "nowhere", 992)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetConversionError, match="not a MAMA-MIA folder.*images is missing"):
        convert_mamamia(tmp_path / "empty", 992)
    (tmp_path / "empty" / "images").mkdir()
    (tmp_path / "empty" / "segmentations" / "expert").mkdir(parents=True)
    with pytest.raises(DatasetConversionError, match="no patient folder found"):
        convert_mamamia(tmp_path / "empty", 992)
    assert list(nnunet_folders["nnUNet_raw"].iterdir()) == []


def test_no_training_case_left_is_an_error_and_writes_nothing(mamamia: Path, nnunet_folders: dict[str, Path]):
    with pytest.raises(DatasetConversionError, match="no training case could be written"):
        convert_mamamia(mamamia, 992, num_post_phases=5)
    assert list(nnunet_folders["nnUNet_raw"].iterdir()) == []


def test_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(
    mamamia: Path, nnunet_folders: dict[str, Path]
):
    first = convert_mamamia(mamamia, 992, cohorts=["NACT"])
    before = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    with pytest.raises(DatasetConversionError, match="dataset 992 already exists.*--overwrite"):
        convert_mamamia(mamamia, 992)
    assert {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    assert [p.name for p in nnunet_folders["nnUNet_raw"].iterdir()] == ["Dataset992_MAMAMIA"]

    replaced = convert_mamamia(mamamia, 992, overwrite=True)
    assert replaced == first
    assert len(case_ids(replaced / "imagesTr")) == 5
    assert [p.name for p in nnunet_folders["nnUNet_raw"].iterdir()] == ["Dataset992_MAMAMIA"]


def test_failure_mid_conversion_leaves_no_temporary_folder(
    mamamia: Path, nnunet_folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
):
    original_add_case = RawDatasetWriter.add_case
    calls = []

    def add_case_then_fail(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise OSError("No space left on device")
        return original_add_case(self, *args, **kwargs)

    existing = convert_mamamia(mamamia, 992, cohorts=["NACT"])
    before = {p.relative_to(existing): p.read_bytes() for p in existing.rglob("*") if p.is_file()}
    monkeypatch.setattr(RawDatasetWriter, "add_case", add_case_then_fail)
    with pytest.raises(OSError, match="No space left"):
        convert_mamamia(mamamia, 992, overwrite=True)
    assert len(calls) == 3
    # neither a temporary folder nor a half-written dataset; the dataset being replaced is untouched
    assert [p.name for p in nnunet_folders["nnUNet_raw"].iterdir()] == ["Dataset992_MAMAMIA"]
    assert {p.relative_to(existing): p.read_bytes() for p in existing.rglob("*") if p.is_file()} == before


# -- command line -----------------------------------------------------------------------------
def run_cli(*args: str, raw: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "nnUNet_raw": str(raw)}
    return subprocess.run(
        [sys.executable, "-m", "dataset_conversion.convert_mamamia", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_cli_converts_and_prints_the_summary(mamamia: Path, nnunet_folders: dict[str, Path]):
    write_patient(mamamia, "ISPY2_200001", label=None, seed=11)
    result = run_cli("-i", str(mamamia), "-d", "992", "--cohort", "ISPY2", "NACT", raw=nnunet_folders["nnUNet_raw"])
    assert result.returncode == 0, result.stderr
    assert "training cases written   : 2" in result.stdout
    assert "unlabelled exams written : 1" in result.stdout
    assert "ISPY2_200001 (no expert segmentation)" in result.stdout
    assert f"dataset written to {nnunet_folders['nnUNet_raw'] / 'Dataset992_MAMAMIA'}" in result.stdout


def test_cli_missing_input_folder_exits_non_zero_with_error(tmp_path: Path, nnunet_folders: dict[str, Path]):
    result = run_cli("-i", str(tmp_path / "nowhere"), "-d", "992", raw=nnunet_folders["nnUNet_raw"])
    assert result.returncode != 0
    assert result.stderr.startswith("error: input folder")
    assert str(tmp_path / "nowhere") in result.stderr
    assert "Traceback" not in result.stderr
