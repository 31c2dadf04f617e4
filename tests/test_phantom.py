"""The synthetic breast DCE-MRI phantom and its commands (nnUNetv2_dkm_synthesize, nnUNetv2_dkm_phantom_stats)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dcmri
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dataset_conversion.phantom.case import generate_anatomy_for, generate_case
from dataset_conversion.phantom.kinetics import ContrastProtocol, ExtendedToftsLookup, spgr_signal
from dataset_conversion.phantom.parameters import (
    CALIBRATION_TARGETS,
    PRESETS,
    SAGITTAL_DIRECTION,
    PhantomParameters,
    preset_parameters,
)
from dataset_conversion.phantom.stats import PhantomDataset, PhantomExam, case_statistics, measure_dataset, summarise
from dataset_conversion.phantom.synthesize import LABEL_SOURCE, synthesize_dataset
from dataset_conversion.raw_dataset import DatasetConversionError, RawDatasetWriter
from nnunet_dkm.ftv_rule import MIN_NEIGHBOURS, ftv_label, neighbour_count, percent_enhancement

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = {"shape": (64, 64, 6), "num_train": 2, "num_test": 1, "num_unlabelled": 1, "verbose": False}


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def all_arrays(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): read(p) for p in sorted(folder.rglob("*.nii.gz"))}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 64x64x6 phantom with 2 training, 1 test and 1 unlabelled exam, seed 0."""
    return synthesize_dataset(901, raw_folder=tmp_path_factory.mktemp("raw"), seed=0, **TINY)


def test_layout_and_dataset_json(tiny_dataset: Path):
    expected = []
    for split, prefix in (("Tr", "phantom_tr"), ("Ts", "phantom_ts")):
        for index in range(2 if split == "Tr" else 1):
            case = f"{prefix}_{index:03d}"
            expected += [f"images{split}/{case}_0000.nii.gz", f"labels{split}/{case}.nii.gz"]
            expected += [f"kinetics{split}/{case}_{phase:04d}.nii.gz" for phase in (1, 2)]
    expected += [f"unlabelledTr/phantom_ul_000_{phase:04d}.nii.gz" for phase in (0, 1, 2)]
    written = sorted(str(p.relative_to(tiny_dataset)) for p in tiny_dataset.rglob("*.nii.gz"))
    assert written == sorted(expected)

    dataset_json = json.loads((tiny_dataset / "dataset.json").read_text())
    assert dataset_json["numTraining"] == 2
    assert dataset_json["channel_names"] == {"0": "pre-contrast"}
    dkm = dataset_json["dkm"]
    assert dkm["label_source"] == LABEL_SOURCE
    assert dkm["acquisition_times_s"] == [-230.0, 177.0, 531.0]
    assert (dkm["preset"], dkm["seed"]) == ("demo", 0)
    assert (dkm["num_training"], dkm["num_test"], dkm["num_unlabelled"]) == (2, 1, 1)
    assert PhantomParameters.from_dict(dkm["phantom_parameters"]) == preset_parameters("demo", shape=(64, 64, 6))

    pre = sitk.ReadImage(str(tiny_dataset / "imagesTr/phantom_tr_000_0000.nii.gz"))
    label = sitk.ReadImage(str(tiny_dataset / "labelsTr/phantom_tr_000.nii.gz"))
    assert pre.GetSize() == (64, 64, 6)
    assert pre.GetPixelID() == sitk.sitkFloat32
    assert label.GetPixelID() == sitk.sitkUInt8
    assert np.allclose(pre.GetSpacing(), (180 / 64, 180 / 64, 4.0))
    assert np.allclose(pre.GetDirection(), SAGITTAL_DIRECTION)
    values = sitk.GetArrayFromImage(pre)
    assert values.min() >= 0 and 100 < np.percentile(values, 99) < 2000  # scanner-like magnitudes


def test_same_seed_reproduces_dataset_and_other_seed_changes_it(tiny_dataset: Path, tmp_path: Path):
    again = synthesize_dataset(901, raw_folder=tmp_path / "again", seed=0, **TINY)
    other = synthesize_dataset(901, raw_folder=tmp_path / "other", seed=1, **TINY)
    reference, repeated, different = all_arrays(tiny_dataset), all_arrays(again), all_arrays(other)
    assert repeated.keys() == reference.keys() == different.keys()
    for name, array in reference.items():
        assert np.array_equal(array, repeated[name]), name
    assert not np.array_equal(reference["imagesTr/phantom_tr_000_0000.nii.gz"],
                              different["imagesTr/phantom_tr_000_0000.nii.gz"])


def test_exam_does_not_change_when_counts_change(tiny_dataset: Path, tmp_path: Path):
    fewer = synthesize_dataset(
        901, raw_folder=tmp_path, seed=0, shape=(64, 64, 6), num_train=1, num_test=0, num_unlabelled=0, verbose=False
    )
    for name in ("imagesTr/phantom_tr_000_0000.nii.gz", "kineticsTr/phantom_tr_000_0002.nii.gz",
                 "labelsTr/phantom_tr_000.nii.gz"):
        assert np.array_equal(read(fewer / name), read(tiny_dataset / name)), name


def test_label_is_the_ftv_rule_recomputed_from_written_images(tiny_dataset: Path):
    dataset = PhantomDataset(901, tiny_dataset.parent)
    for case, info in dataset.cases.items():
        if info["split"] == "unlabelled":
            continue
        split = info["split"]
        pre = read(tiny_dataset / f"images{split}/{case}_0000.nii.gz")
        early = read(tiny_dataset / f"kinetics{split}/{case}_0001.nii.gz")
        label = read(tiny_dataset / f"labels{split}/{case}.nii.gz").astype(bool)
        enhancing = percent_enhancement(pre, early) >= 70
        assert label.any(), case
        assert not np.any(label & ~enhancing), f"{case}: label voxel below 70 % early enhancement"
        assert np.all(neighbour_count(enhancing)[label] >= MIN_NEIGHBOURS), case
        region = generate_anatomy_for(dataset.parameters, 0, split, info["index"], info["attempt"]).tumour_region()
        assert np.array_equal(label, ftv_label(pre, early, region).astype(bool)), case


def test_tumour_enhances_more_than_fibroglandular_tissue(tiny_dataset: Path):
    for statistics in measure_dataset(901, tiny_dataset.parent, verbose=False):
        assert statistics.tumour_early_enhancement_percent > statistics.fgt_early_enhancement_percent + 40
        assert statistics.tumour_early_enhancement_percent >= 70


def test_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(nnunet_folders):
    small = {**TINY, "num_train": 1, "num_test": 0, "num_unlabelled": 0}
    first = synthesize_dataset(902, seed=0, **small)
    before = read(first / "imagesTr/phantom_tr_000_0000.nii.gz")
    with pytest.raises(DatasetConversionError, match="already exists"):
        synthesize_dataset(902, seed=1, **small)
    assert np.array_equal(read(first / "imagesTr/phantom_tr_000_0000.nii.gz"), before)
    replaced = synthesize_dataset(902, seed=1, overwrite=True, **small)
    assert replaced == first
    assert json.loads((replaced / "dataset.json").read_text())["dkm"]["seed"] == 1
    assert not np.array_equal(read(replaced / "imagesTr/phantom_tr_000_0000.nii.gz"), before)
    assert [p.name for p in nnunet_folders["nnUNet_raw"].iterdir()] == [first.name]  # no temporary left


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_cli_writes_dataset_with_custom_phases_and_stats_cli_measures_it(nnunet_folders, tmp_path: Path):
    result = run_module(
        "dataset_conversion.phantom.synthesize", "-d", "903", "--shape", "64", "64", "6", "--num-train", "2",
        "--num-test", "0", "--num-unlabelled", "1", "--phase-times", "-100", "120", "300", "600", "--seed", "3",
    )
    assert result.returncode == 0, result.stderr
    assert "training cases written   : 2" in result.stdout
    folder = nnunet_folders["nnUNet_raw"] / "Dataset903_DKMPhantom"
    assert (folder / "kineticsTr/phantom_tr_001_0003.nii.gz").is_file()
    assert (folder / "unlabelledTr/phantom_ul_000_0003.nii.gz").is_file()
    dkm = json.loads((folder / "dataset.json").read_text())["dkm"]
    assert dkm["acquisition_times_s"] == [-100.0, 120.0, 300.0, 600.0]
    assert dkm["num_post_contrast_phases"] == 3

    montage = tmp_path / "montage.png"
    stats = run_module("dataset_conversion.phantom.stats", "-d", "903", "-o", str(montage))
    assert stats.returncode == 0, stats.stderr
    assert "tumour early enhancement PE1 (%)" in stats.stdout and "target" in stats.stdout
    assert montage.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--phase-times", "100"], "at least 3 phase times"),
        (["--phase-times", "-230", "500", "150"], "increase strictly"),
        (["--phase-times", "-10", "1", "2"], "too early"),
    ],
)
def test_cli_rejects_bad_arguments_with_a_clear_error(nnunet_folders, arguments, message):
    result = run_module("dataset_conversion.phantom.synthesize", "-d", "904", "--shape", "48", "48", "4",
                        "--num-train", "1", "--num-test", "0", "--num-unlabelled", "0", *arguments)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error:")
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not any(nnunet_folders["nnUNet_raw"].iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--num-train", "0"], "argument --num-train: must be >= 1, got 0"),
        (["--pre-contrast-cue", "nan"], "argument --pre-contrast-cue: must be a finite number"),
        (["--pre-contrast-cue", "inf"], "argument --pre-contrast-cue: must be a finite number"),
        (["--phase-times", "-230", "nan", "531"], "argument --phase-times: must be a finite number"),
        (["--seed", "-1"], "argument --seed: must be >= 0"),
    ],
)
def test_cli_refuses_bad_numbers_in_the_parser(nnunet_folders, arguments, message):
    result = run_module("dataset_conversion.phantom.synthesize", "-d", "904", *arguments)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not any(nnunet_folders["nnUNet_raw"].iterdir())


def test_scarce_preset_is_the_demo_grid_with_few_labels_and_many_unlabelled_exams():
    scarce = PRESETS["scarce"]
    assert (scarce.num_train, scarce.num_test) == (32, 24) and scarce.num_unlabelled >= 200
    assert scarce.phantom == preset_parameters("demo", shape=(64, 64, 12))  # same exams as make demo's phantom


def test_stats_refuses_a_dataset_that_is_not_a_phantom(tmp_path: Path):
    image = sitk.GetImageFromArray(np.ones((2, 8, 8), np.float32))
    label = sitk.GetImageFromArray(np.pad(np.ones((2, 2, 2), np.uint8), ((0, 0), (3, 3), (3, 3))))
    with RawDatasetWriter(tmp_path, 905, "NotAPhantom") as writer:
        writer.add_case("case_000", image, [image], label)
        writer.finish(dkm={"label_source": "expert"})
    with pytest.raises(DatasetConversionError, match="not written by nnUNetv2_dkm_synthesize"):
        PhantomDataset(905, tmp_path)


def test_vectorised_physics_matches_dcmri():
    """The per-voxel lookups reproduce dcmri's extended Tofts concentration and SPGR signal."""
    protocol = ContrastProtocol((-230.0, 177.0, 531.0), 0.0082, 20.0, 4100.0, 0.45, 12.0, 1.1)
    lookup = ExtendedToftsLookup(protocol)
    fine_times = np.arange(0.0, 600.0, 0.1)
    blood = 1.1 * dcmri.aif_parker(fine_times, BAT=12.0)
    parameters = [(0.044, 0.4, 0.03), (0.008, 0.3, 0.005), (0.3, 0.2, 0.1)]  # Ktrans (1/min), ve, vp
    ktrans_per_min, ve, vp = (np.array(values) for values in zip(*parameters, strict=True))
    vectorised = lookup.concentration(ktrans_per_min / 60, ve, vp)
    for column, (one_ktrans, one_ve, one_vp) in enumerate(parameters):
        direct = dcmri.conc_tissue(
            blood, t=fine_times, kinetics="HF", H=0.45, vb=one_vp / 0.55, vi=one_ve, PS=one_ktrans / 60
        )
        expected = np.interp(protocol.phase_times_s, fine_times, direct, left=0.0)
        assert expected[0] == vectorised[0, column] == 0.0  # nothing before injection
        assert np.allclose(vectorised[:, column], expected, rtol=2e-3)
    r1 = np.array([0.3, 0.8, 3.3, 20.0])
    assert np.allclose(spgr_signal(r1, 0.0082, 20.0), dcmri.signal_ss(1.0, r1, 0.0082, 20.0), rtol=1e-5)


def test_presets_and_overrides():
    demo, nact = PRESETS["demo"], PRESETS["nact"]
    assert demo.num_unlabelled > demo.num_train + demo.num_test
    assert demo.phantom.shape_xyz == (128, 128, 12)
    assert nact.phantom.shape_xyz == (256, 256, 60)
    assert np.allclose(nact.phantom.spacing_xyz, (0.703125, 0.703125, 2.0))
    without_vessels = preset_parameters("demo", shape=(48, 48, 4), vessels=False)
    assert without_vessels.max_vessels == 0
    assert not generate_anatomy_for(without_vessels, 0, "Tr", 0).vessel.any()
    with pytest.raises(ValueError, match="unknown preset"):
        preset_parameters("huge")


def test_pre_contrast_cue_sets_tumour_contrast_before_contrast_agent():
    def median_cnr(cue: float) -> float:
        params = preset_parameters("demo", shape=(64, 64, 6), pre_contrast_cue=cue)
        exams = [generate_case(params, 0, "Tr", index) for index in range(4)]
        values = [case_statistics(PhantomExam(e.case_id, e.phases, e.label.astype(bool), e.anatomy, e.noise_sigma))
                  for e in exams]
        return float(np.median([v.tumour_fgt_pre_cnr for v in values]))

    assert median_cnr(3.0) - median_cnr(0.0) == pytest.approx(3.0, abs=1.0)


@pytest.mark.slow
def test_demo_preset_matches_the_real_case_statistics():
    """Calibration: the medians over 12 demo-preset exams fall in the targets measured on the real case."""
    params = preset_parameters("demo")
    statistics = []
    for index in range(12):
        exam = generate_case(params, 0, "Tr", index)
        statistics.append(
            case_statistics(PhantomExam(exam.case_id, exam.phases, exam.label.astype(bool), exam.anatomy,
                                        exam.noise_sigma))
        )
    rows = {row.name: row for row in summarise(statistics)}
    assert len([row for row in rows.values() if row.target is not None]) == len(CALIBRATION_TARGETS)
    missed = [f"{name}: {row.median:.2f} not in {row.target}" for name, row in rows.items() if row.ok is False]
    assert not missed, missed
    estimated = rows["noise sigma, estimated from background"].median
    assert estimated == pytest.approx(rows["noise sigma, recorded at generation"].median, rel=0.05)


def test_orientation_is_the_real_case_sagittal_orientation(nact_pilot_folder: Path):
    dicom = next(p for p in sorted(nact_pilot_folder.rglob("*.dcm")) if "3dfgre" in str(p.parent).lower())
    orientation = np.asarray(pydicom.dcmread(dicom, stop_before_pixels=True).ImageOrientationPatient, dtype=float)
    direction = np.asarray(SAGITTAL_DIRECTION).reshape(3, 3)
    assert np.allclose(direction[:, 0], orientation[:3])  # image x = DICOM row direction
    assert np.allclose(direction[:, 1], orientation[3:])  # image y = DICOM column direction
    assert np.allclose(np.abs(direction[:, 2]), np.abs(np.cross(orientation[:3], orientation[3:])))
    assert np.linalg.det(direction) == pytest.approx(1.0)
