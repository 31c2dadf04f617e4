"""nnUNetv2_dkm_convert_nact: TCIA Breast-MRI-NACT-Pilot DICOM into nnU-Net raw format.

Real-data tests use the shared case UCSF-BR-06 (``nact_pilot_folder``; skipped where absent) and
copies of its files made in tmp: with scrambled folder names, with bad files added, with a phase
block removed, or cloned into further patients and visits. Phase splitting, visit grouping and
the FTV rule are also tested on small synthetic inputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from dataset_conversion.convert_nact import convert_nact, main
from dataset_conversion.dicom_index import DicomFileHeader, DicomSeries, group_exams
from dataset_conversion.dicom_seg import seg_on_grid
from dataset_conversion.nact_dce import DceAcquisition, find_dce_series, split_phases
from dataset_conversion.nact_labels import SOURCE_TUMOUR_SEG, ftv_rule, read_official_ftv_voxels
from dataset_conversion.raw_dataset import DatasetConversionError

CASE = "UCSF-BR-06"
OFFICIAL_FTV_VOXELS = 41105
DCE_SERIES_NUMBER = 2
TISSUE_SEG_SERIES_NUMBER = 22101
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
BIN = Path(sys.executable).parent


# -- helpers on the real files ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_files(nact_pilot_folder: Path) -> dict[Path, pydicom.Dataset]:
    """Every DICOM file of the real case with its header (no pixel data)."""
    return {
        path: pydicom.dcmread(path, stop_before_pixels=True)
        for path in sorted(nact_pilot_folder.rglob("*.dcm"))
    }


def files_of_series(real_files: dict[Path, pydicom.Dataset], number: int) -> list[Path]:
    return [path for path, header in real_files.items() if int(header.SeriesNumber) == number]


def clone_files(
    paths: list[Path], destination: Path, changes: dict[str, object], edit=None
) -> None:
    """Copy DICOM files into ``destination`` with new study/series/instance UIDs and ``changes`` applied."""
    destination.mkdir(parents=True, exist_ok=True)
    salt = str(sorted(changes.items()))
    for index, path in enumerate(paths):
        dataset = pydicom.dcmread(path)
        dataset.StudyInstanceUID = generate_uid(entropy_srcs=[salt, str(dataset.StudyInstanceUID)])
        dataset.SeriesInstanceUID = generate_uid(entropy_srcs=[salt, str(dataset.SeriesInstanceUID)])
        dataset.SOPInstanceUID = generate_uid(entropy_srcs=[salt, str(dataset.SOPInstanceUID)])
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        for keyword, value in changes.items():
            setattr(dataset, keyword, value)
        if edit is not None:
            edit(dataset)
        dataset.save_as(destination / f"{index:04d}.dcm")


def scrambled_copy(files: list[Path], tree: Path, seed: int = 0) -> list[Path]:
    """Copy ``files`` into random folders with random file names, mixing series across folders."""
    rng = random.Random(seed)
    folders = [tree / f"{rng.getrandbits(32):08x}" / f"{rng.getrandbits(16):04x}" for _ in range(7)]
    for folder in folders:
        folder.mkdir(parents=True)
    for path in files:
        shutil.copy(path, rng.choice(folders) / f"{rng.getrandbits(40):010x}.dcm")
    return folders


@pytest.fixture(scope="module")
def scrambled_conversion(real_files, tmp_path_factory) -> SimpleNamespace:
    """The real case copied under scrambled folder names, plus a garbage .dcm and a non-image DICOM, converted once."""
    tree = tmp_path_factory.mktemp("scrambled_input")
    folders = scrambled_copy(list(real_files), tree)
    series_per_folder = [
        {int(pydicom.dcmread(p, stop_before_pixels=True).SeriesNumber) for p in folder.iterdir()} for folder in folders
    ]
    assert max(len(s) for s in series_per_folder) >= 2, "the scrambled tree must mix series within folders"

    garbage = folders[0] / "garbage.dcm"
    garbage.write_bytes(random.Random(1).randbytes(5000))
    non_image = folders[1] / "not_an_image.dcm"
    report = pydicom.dcmread(files_of_series(real_files, DCE_SERIES_NUMBER)[0])
    del report.PixelData
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    report.Modality = "SR"
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    report.save_as(non_image)

    raw = tmp_path_factory.mktemp("raw")
    stdout = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout):
        warnings.simplefilter("always")
        dataset = convert_nact(tree, 991, raw_folder=raw)
    return SimpleNamespace(
        dataset=dataset,
        warnings=[str(w.message) for w in caught],
        stdout=stdout.getvalue(),
        garbage=garbage,
        non_image=non_image,
        meta=json.loads((dataset / "dataset.json").read_text()),
    )


def dce_blocks(real_files: dict[Path, pydicom.Dataset]) -> list[np.ndarray]:
    """The real DCE's InstanceNumber blocks 1-60, 61-120, 121-180 as (z, y, x) arrays, slices along the normal."""
    paths = files_of_series(real_files, DCE_SERIES_NUMBER)
    normal = np.cross(*np.reshape(np.asarray(real_files[paths[0]].ImageOrientationPatient, float), (2, 3)))
    blocks = []
    for first in (1, 61, 121):
        block = [p for p in paths if first <= int(real_files[p].InstanceNumber) < first + 60]
        block.sort(key=lambda p: float(np.dot(np.asarray(real_files[p].ImagePositionPatient, float), normal)))
        blocks.append(np.stack([pydicom.dcmread(p).pixel_array for p in block]))
    return blocks


# -- the real case ----------------------------------------------------------------------------------
def test_real_case_phases_are_instance_blocks_on_the_dicom_geometry(scrambled_conversion, real_files) -> None:
    dataset = scrambled_conversion.dataset
    written = [
        dataset / "imagesTr" / f"{CASE}_0000.nii.gz",
        dataset / "kineticsTr" / f"{CASE}_0001.nii.gz",
        dataset / "kineticsTr" / f"{CASE}_0002.nii.gz",
    ]
    assert sorted(p.name for p in (dataset / "kineticsTr").iterdir()) == [p.name for p in written[1:]]
    for path, block in zip(written, dce_blocks(real_files), strict=True):
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), block), path.name

    pre = sitk.ReadImage(str(written[0]))
    first_dce = real_files[files_of_series(real_files, DCE_SERIES_NUMBER)[0]]
    row, column = np.reshape(np.asarray(first_dce.ImageOrientationPatient, float), (2, 3))
    assert pre.GetSize() == (256, 256, 60)
    assert np.allclose(pre.GetSpacing(), (0.703125, 0.703125, 2.0), atol=1e-4)
    assert np.allclose(pre.GetDirection(), np.column_stack([row, column, np.cross(row, column)]).ravel(), atol=1e-6)
    assert np.allclose(pre.GetOrigin(), (157.8, -106.7, 78.0), atol=1e-3)  # first slice along the normal
    assert scrambled_conversion.meta["dkm"]["cases"][CASE]["dce_found_by"].startswith("UCSF series-number rule")


def test_rebuilt_label_matches_the_official_ftv_voxel_count(scrambled_conversion, real_files) -> None:
    tissue_seg = files_of_series(real_files, TISSUE_SEG_SERIES_NUMBER)[0]
    official = read_official_ftv_voxels(tissue_seg)
    assert official == OFFICIAL_FTV_VOXELS

    label = sitk.GetArrayFromImage(sitk.ReadImage(str(scrambled_conversion.dataset / "labelsTr" / f"{CASE}.nii.gz")))
    count = int((label == 1).sum())
    assert np.unique(label).tolist() == [0, 1]
    assert abs(count - official) <= 0.001 * official, f"rebuilt label has {count} voxels, official {official}"

    dkm = scrambled_conversion.meta["dkm"]
    assert dkm["label_source"].startswith("FTV rule rebuilt from PE1")
    assert dkm["acquisition_times_s"] == [-230, 177, 531]
    assert dkm["cases"][CASE]["label_voxels"] == count
    assert dkm["cases"][CASE]["official_ftv_voxels"] == official
    assert dkm["cases"][CASE]["label_grid_mapping"] == "same grid"
    assert dkm["cases"][CASE]["label_grid_offset_voxels"] == pytest.approx([0, 0, 0], abs=1e-3)
    assert any("label rebuilt" in w and str(count) in w for w in scrambled_conversion.warnings)


def test_garbage_and_non_image_dicom_are_skipped_with_a_warning(scrambled_conversion) -> None:
    garbage, non_image = str(scrambled_conversion.garbage), str(scrambled_conversion.non_image)
    assert any(garbage in w and "unreadable DICOM" in w for w in scrambled_conversion.warnings)
    assert any(non_image in w and "not an image" in w for w in scrambled_conversion.warnings)
    assert garbage in scrambled_conversion.stdout and non_image in scrambled_conversion.stdout  # summary notes
    assert (scrambled_conversion.dataset / "labelsTr" / f"{CASE}.nii.gz").is_file()
    assert scrambled_conversion.meta["numTraining"] == 1


def test_missing_phase_block_skips_the_case_and_leaves_no_dataset(
    real_files, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tree = tmp_path / "input"
    kept = [p for p, h in real_files.items() if not (int(h.SeriesNumber) == 2 and 61 <= int(h.InstanceNumber) <= 120)]
    scrambled_copy(kept, tree)
    raw = tmp_path / "raw"
    with pytest.raises(DatasetConversionError, match="no training case could be written, and no test or unlabelled"):
        convert_nact(tree, 991, raw_folder=raw)
    out = capsys.readouterr().out
    skipped_line = next(line for line in out.splitlines() if line.strip().startswith(CASE))
    assert "missing phases" in skipped_line and "phase 2 of 3 missing" in skipped_line
    assert "InstanceNumber 61-120" in skipped_line
    assert list(raw.iterdir()) == []  # no half-written dataset, no temporary folder


def test_cli_refuses_an_existing_dataset_then_overwrites_and_prints_the_summary(
    nact_pilot_folder: Path, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    existing = raw / "Dataset991_Older"
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("user data")
    command = [str(BIN / "nnUNetv2_dkm_convert_nact"), "-i", str(nact_pilot_folder), "-d", "991",
               "--raw-folder", str(raw)]  # fmt: skip

    refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1
    assert "error:" in refused.stderr and "already exists" in refused.stderr and "--overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (existing / "keep.txt").read_text() == "user data"

    replaced = subprocess.run([*command, "--overwrite"], capture_output=True, text=True, timeout=300)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert "training cases written   : 1" in replaced.stdout
    assert f"{CASE}: label rebuilt with the FTV rule" in replaced.stdout
    assert not existing.exists()
    assert (raw / "Dataset991_BreastMRINACTPilot" / "labelsTr" / f"{CASE}.nii.gz").is_file()


# -- several patients and visits, made from the real files --------------------------------------------
@pytest.fixture(scope="module")
def multi_exam_conversion(real_files, tmp_path_factory) -> SimpleNamespace:
    """Patient UCSF-BR-06 (real) + its clone as later visit MRI_2 (DCE only); UCSF-BR-99 with a tumour SEG
    (the tissue SEG relabelled) as test patient; UCSF-BR-98 with DCE and an empty tumour SEG."""
    tree = tmp_path_factory.mktemp("multi_input")
    all_files = list(real_files)
    dce = files_of_series(real_files, DCE_SERIES_NUMBER)
    tissue = files_of_series(real_files, TISSUE_SEG_SERIES_NUMBER)
    for path in all_files:
        shutil.copy(path, tree / f"real_{path.parent.name}_{path.name}")

    def as_tumour_seg(dataset: pydicom.Dataset) -> None:
        dataset.SeriesDescription = "VOI PE Segmentation thresh=70"
        dataset.SeriesNumber = DCE_SERIES_NUMBER * 10000 + 2100
        dataset.SeriesInstanceUID = generate_uid()  # a series of its own, beside the cloned tissue SEG
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()

    def as_empty_tumour_seg(dataset: pydicom.Dataset) -> None:
        as_tumour_seg(dataset)
        dataset.PixelData = bytes(len(dataset.PixelData))

    clone_files(dce, tree / "a", {"ClinicalTrialTimePointDescription": "MRI_2", "StudyDate": "19910920"})
    patient_b = {"PatientID": "UCSF-BR-99", "PatientName": "99^Clone"}
    clone_files(all_files, tree / "b", patient_b)
    clone_files(tissue, tree / "b_tumour", patient_b, edit=as_tumour_seg)
    patient_c = {"PatientID": "UCSF-BR-98", "PatientName": "98^Clone"}
    clone_files(dce, tree / "c", patient_c)
    clone_files(tissue, tree / "c_tumour", patient_c, edit=as_empty_tumour_seg)

    raw = tmp_path_factory.mktemp("raw_multi")
    stdout = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(stdout):
        warnings.simplefilter("ignore")
        dataset = convert_nact(tree, 992, raw_folder=raw, test_patients=["UCSF-BR-99"], unlabelled_visits=True)
    seg = pydicom.dcmread(tissue[0])
    return SimpleNamespace(
        dataset=dataset,
        stdout=stdout.getvalue(),
        meta=json.loads((dataset / "dataset.json").read_text()),
        tissue_voxels=int((seg.pixel_array > 127).sum()),
    )


def test_test_patients_go_to_the_test_split(multi_exam_conversion) -> None:
    dataset = multi_exam_conversion.dataset
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == ["UCSF-BR-99_0000.nii.gz"]
    assert sorted(p.name for p in (dataset / "kineticsTs").iterdir()) == [
        "UCSF-BR-99_0001.nii.gz", "UCSF-BR-99_0002.nii.gz"
    ]
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == [f"{CASE}_0000.nii.gz"]
    assert multi_exam_conversion.meta["numTraining"] == 1


def test_tumour_seg_is_preferred_and_mapped_frame_by_frame(multi_exam_conversion) -> None:
    label = sitk.ReadImage(str(multi_exam_conversion.dataset / "labelsTs" / "UCSF-BR-99.nii.gz"))
    pre = sitk.ReadImage(str(multi_exam_conversion.dataset / "imagesTs" / "UCSF-BR-99_0000.nii.gz"))
    assert int(sitk.GetArrayFromImage(label).sum()) == multi_exam_conversion.tissue_voxels
    assert label.GetOrigin() == pre.GetOrigin() and label.GetSpacing() == pre.GetSpacing()
    dkm = multi_exam_conversion.meta["dkm"]
    assert dkm["cases"]["UCSF-BR-99"]["label_source"] == SOURCE_TUMOUR_SEG
    assert dkm["cases"][CASE]["label_source"].startswith("FTV rule rebuilt from PE1")
    assert dkm["label_source"] == "mixed (see cases)"


def test_later_visits_and_exams_without_usable_label_go_to_unlabelled(multi_exam_conversion) -> None:
    names = sorted(p.name for p in (multi_exam_conversion.dataset / "unlabelledTr").iterdir())
    assert names == [f"{case}_{phase:04d}.nii.gz" for case in (f"{CASE}_MRI-2", "UCSF-BR-98") for phase in range(3)]
    empty_note = next(line for line in multi_exam_conversion.stdout.splitlines() if "UCSF-BR-98:" in line)
    assert "is empty" in empty_note and "c_tumour" in empty_note and "unlabelledTr" in empty_note
    dkm = multi_exam_conversion.meta["dkm"]
    assert dkm["num_unlabelled"] == 2
    assert dkm["cases"][f"{CASE}_MRI-2"]["visit"] == "MRI_2"
    assert dkm["cases"]["UCSF-BR-98"]["dce_found_by"].startswith("no SER/PE maps")


def test_seg_frame_off_the_stack_of_the_others_is_refused_naming_it(scrambled_conversion, real_files, tmp_path):
    pre = sitk.ReadImage(str(scrambled_conversion.dataset / "imagesTr" / f"{CASE}_0000.nii.gz"))
    seg = pydicom.dcmread(files_of_series(real_files, TISSUE_SEG_SERIES_NUMBER)[0])
    position = seg.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(position.ImagePositionPatient[0]) + 1.0, *position.ImagePositionPatient[1:]]
    shifted = tmp_path / "shifted_seg.dcm"
    seg.save_as(shifted)
    with pytest.raises(DatasetConversionError, match="does not match its image") as error:
        seg_on_grid(shifted, pre)  # one frame half a slice off, the others on the grid: no common offset, no stack
    assert str(shifted) in str(error.value) and "frame 4" in str(error.value) and "regular stack" in str(error.value)


# -- synthetic inputs -------------------------------------------------------------------------------
def header(
    instance: int, x_mm: float, content_time: str, series: str = "dce", number: int = 2, temporal: int | None = None,
    study: str = "study", time_point: str = "", study_date: str = "20000101", description: str = "Sagittal DCE",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY"),
) -> DicomFileHeader:
    """A sagittal slice header (normal = -x, like the real case) without a file behind it."""
    return DicomFileHeader(
        path=Path(f"/virtual/{series}/{instance}.dcm"), patient_id="P1", study_uid=study, study_date=study_date,
        study_time="100000", time_point=time_point, series_uid=series, series_number=number,
        series_description=description, modality="MR", sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        sop_instance_uid=f"{series}.{instance}", image_type=image_type, instance_number=instance,
        image_position=(x_mm, -100.0, 80.0), image_orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
        pixel_spacing=(0.7, 0.7), rows=8, columns=8, content_time=content_time, acquisition_time="",
        temporal_position=temporal, trigger_time=None, frame_of_reference_uid="for",
    )  # fmt: skip


def one_series(headers: list[DicomFileHeader]) -> DceAcquisition:
    series = DicomSeries(series_uid=headers[0].series_uid, series_number=2, description="Sagittal DCE", modality="MR",
                         files=headers)  # fmt: skip
    return DceAcquisition(series=[series], how_found="test")


SLICES_X = (10.0, 8.0, 6.0)  # InstanceNumber order: along the normal (-x)


def test_four_phases_split_by_instance_blocks_in_content_time_order() -> None:
    times = ("100000", "100100", "100200", "100300")
    headers = [header(3 * p + s + 1, x, times[p]) for p in range(4) for s, x in enumerate(SLICES_X)]
    random.Random(0).shuffle(headers)
    phases = split_phases(one_series(headers))
    assert [p.content_time for p in phases] == list(times)
    expected_instances = [[3 * p + s + 1 for s in range(3)] for p in range(4)]
    assert [[f.instance_number for f in p.files] for p in phases] == expected_instances


def test_instance_blocks_contradicting_content_time_are_refused() -> None:
    times = ("100000", "100300", "100100")
    headers = [header(3 * p + s + 1, x, times[p]) for p in range(3) for s, x in enumerate(SLICES_X)]
    with pytest.raises(DatasetConversionError, match="disagree with ContentTime"):
        split_phases(one_series(headers))


def test_missing_middle_phase_is_named() -> None:
    headers = [header(3 * p + s + 1, x, f"1000{p}0") for p in (0, 2) for s, x in enumerate(SLICES_X)]
    with pytest.raises(DatasetConversionError, match=r"phase 2 of 3 missing \(no file with InstanceNumber 4-6\)"):
        split_phases(one_series(headers))


def test_temporal_position_identifier_overrides_instance_order() -> None:
    headers = [header(s * 3 + p + 1, x, "100000", temporal=p + 1) for p in range(3) for s, x in enumerate(SLICES_X)]
    phases = split_phases(one_series(headers))
    assert [{f.temporal_position for f in p.files} for p in phases] == [{1}, {2}, {3}]


def test_phases_in_separate_series_are_ordered_by_time_and_must_share_geometry() -> None:
    def series(uid: str, number: int, time: str, shift: float = 0.0) -> DicomSeries:
        files = [header(s + 1, x + shift, time, series=uid, number=number) for s, x in enumerate(SLICES_X)]
        return DicomSeries(series_uid=uid, series_number=number, description="Sagittal DCE", modality="MR", files=files)

    late, pre, early = series("s7", 7, "100600"), series("s5", 5, "100000"), series("s6", 6, "100300")
    phases = split_phases(DceAcquisition(series=[late, pre, early], how_found="test"))
    assert [p.files[0].series_uid for p in phases] == ["s5", "s6", "s7"]

    shifted = series("s8", 8, "100900", shift=1.0)
    with pytest.raises(DatasetConversionError, match="different geometry"):
        split_phases(DceAcquisition(series=[pre, early, shifted], how_found="test"))


def test_dce_series_found_by_number_rule_then_map_description_then_most_phases() -> None:
    dce = [header(3 * p + s + 1, x, f"1000{p}0", number=2) for p in range(3) for s, x in enumerate(SLICES_X)]
    t2 = [header(s + 1, x, "095000", series="t2", number=3, description="Sagittal T2") for s, x in enumerate(SLICES_X)]

    def pe1_map(number: int) -> list[DicomFileHeader]:
        return [header(s + 1, x, "120000", series=f"map{number}", number=number, description="Sagittal DCE: PE1",
                       image_type=("DERIVED", "PRIMARY", "DCE", "PE1")) for s, x in enumerate(SLICES_X)]  # fmt: skip

    def found(headers: list[DicomFileHeader]) -> tuple[list[int | None], str]:
        exam = group_exams(headers)["P1"][0]
        acquisition = find_dce_series(exam)
        return [s.series_number for s in acquisition.series], acquisition.how_found

    numbers, how = found(dce + t2 + pe1_map(21001))
    assert numbers == [2] and how.startswith("UCSF series-number rule")
    numbers, how = found(dce + t2 + pe1_map(77))
    assert numbers == [2] and how.startswith("description of 'Sagittal DCE: PE1'")
    numbers, how = found(dce + t2)
    assert numbers == [2] and how.startswith("no SER/PE maps")
    with pytest.raises(DatasetConversionError, match="no DCE series found"):
        found(t2)


def test_baseline_is_mri_1_else_the_earliest_study() -> None:
    later = header(1, 10.0, "100000", series="a", study="s2", time_point="MRI_2", study_date="20000101")
    baseline = header(1, 10.0, "100000", series="b", study="s1", time_point="MRI_1", study_date="20000301")
    exams = group_exams([later, baseline])["P1"]
    assert [e.visit for e in exams if e.is_baseline] == ["MRI_1"]

    undated = [header(1, 10.0, "1", series=s, study=s, study_date=d) for s, d in (("x", "20010101"), ("y", "20000101"))]
    assert [e.study_uid for e in group_exams(undated)["P1"] if e.is_baseline] == ["y"]


def test_ftv_rule_counts_neighbours_over_the_box_widened_at_its_upper_end() -> None:
    pe = np.zeros((10, 10, 10), np.float32)
    tissue = np.ones_like(pe, dtype=bool)
    low, high = (2, 2, 2), (7, 7, 7)
    # on the box's upper z face, with its four enhancing neighbours one slice beyond the box: kept
    pe[7, 3, 3] = 70.0
    pe[8, 3, 3] = pe[8, 2, 3] = pe[8, 4, 3] = pe[8, 3, 2] = 70.0
    # on the lower z face, with the same neighbours one slice below the box: not counted, dropped
    pe[2, 6, 6] = 90.0
    pe[1, 6, 6] = pe[1, 5, 6] = pe[1, 7, 6] = pe[1, 6, 5] = 90.0
    # inside, a 2x2 square: three enhancing neighbours each (the fourth, at 69.9 %, is below threshold): dropped
    pe[4, 3, 6] = pe[4, 3, 7] = pe[4, 4, 6] = pe[4, 4, 7] = 80.0
    pe[5, 3, 6] = 69.9
    label = ftv_rule(pe, tissue, low, high, threshold=70.0, min_neighbours=4)
    assert np.argwhere(label).tolist() == [[7, 3, 3]]
    assert ftv_rule(pe, tissue, low, high, threshold=69.9, min_neighbours=4)[4, 3, 6]
    # the tissue mask still applies inside the box
    tissue[7, 3, 3] = False
    assert not ftv_rule(pe, tissue, low, high).any()


# -- SEG geometry from other exporters, made from the real files ----------------------------------------
def in_plane_shift(dataset: pydicom.Dataset, columns: float, rows: float) -> np.ndarray:
    """The vector (mm) that moves a SEG frame by ``columns`` pixels along its rows and ``rows`` along its columns."""
    shared = dataset.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    return orientation[:3] * columns * column_spacing + orientation[3:] * rows * row_spacing


def shift_seg_frames(columns: float, rows: float):
    """A ``clone_files`` edit: every SEG frame's ImagePositionPatient moved by (columns, rows) pixels in-plane."""

    def edit(dataset: pydicom.Dataset) -> None:
        if dataset.Modality != "SEG":
            return
        move_frames(dataset, in_plane_shift(dataset, columns, rows))

    return edit


def move_frames(dataset: pydicom.Dataset, shift: np.ndarray) -> None:
    """Add ``shift`` (mm) to every SEG frame's ImagePositionPatient."""
    for frame in dataset.PerFrameFunctionalGroupsSequence:
        position = frame.PlanePositionSequence[0]
        position.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(position.ImagePositionPatient, float) + shift]


def seg_file_in(folder: Path) -> Path:
    return next(p for p in sorted(folder.iterdir()) if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SEG")


HALF_PIXEL_MM = 0.703125 / 2
SHIFTED_PATIENTS = {"SHIFT-PLUS-HALF": 0.5, "SHIFT-MINUS-HALF": -0.5, "SHIFT-3PX": 3.0}


@pytest.fixture(scope="module")
def shifted_seg_conversion(real_files, tmp_path_factory) -> SimpleNamespace:
    """The real case cloned into three patients whose tissue SEG frames are shifted in-plane along both axes by
    +0.5, -0.5 and +3 pixels (an exporter writing the first pixel's corner instead of its centre, or worse)."""
    tree = tmp_path_factory.mktemp("shifted_input")
    segs = {}
    for patient, pixels in SHIFTED_PATIENTS.items():
        changes = {"PatientID": patient, "PatientName": f"{patient}^Clone"}
        clone_files(list(real_files), tree / patient, changes, edit=shift_seg_frames(pixels, pixels))
        segs[patient] = seg_file_in(tree / patient)
    raw = tmp_path_factory.mktemp("raw_shifted")
    stdout = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout):
        warnings.simplefilter("always")
        dataset = convert_nact(tree, 993, raw_folder=raw)
    return SimpleNamespace(
        dataset=dataset,
        segs=segs,
        warnings=[str(w.message) for w in caught],
        stdout=stdout.getvalue(),
        meta=json.loads((dataset / "dataset.json").read_text()),
    )


@pytest.mark.parametrize("patient", ["SHIFT-PLUS-HALF", "SHIFT-MINUS-HALF"])
def test_seg_half_a_pixel_off_is_the_same_grid_and_gives_the_official_label(shifted_seg_conversion, patient) -> None:
    sign = np.sign(SHIFTED_PATIENTS[patient])
    label_file = shifted_seg_conversion.dataset / "labelsTr" / f"{patient}.nii.gz"
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
    assert int(label.sum()) == OFFICIAL_FTV_VOXELS

    record = shifted_seg_conversion.meta["dkm"]["cases"][patient]
    assert record["label_grid_mapping"] == "same grid, sub-voxel offset"
    assert record["label_grid_offset_voxels"] == pytest.approx([sign * 0.5, sign * 0.5, 0.0], abs=1e-3)
    assert record["label_grid_offset_mm"] == pytest.approx([sign * HALF_PIXEL_MM, sign * HALF_PIXEL_MM, 0.0], abs=1e-3)

    seg = str(shifted_seg_conversion.segs[patient])
    about_seg = [w for w in shifted_seg_conversion.warnings if seg in w and "off the image grid" in w]
    assert len(about_seg) == 1, "warned once per SEG file"
    assert f"({sign * 0.5:+.2f}, {sign * 0.5:+.2f}, +0.00) voxels" in about_seg[0]
    assert f"({sign * HALF_PIXEL_MM:+.3f}, {sign * HALF_PIXEL_MM:+.3f}, +0.000) mm" in about_seg[0]
    assert "same grid, sub-voxel offset" in about_seg[0]
    note = next(line for line in shifted_seg_conversion.stdout.splitlines() if f"{patient}: label SEG" in line)
    assert "sub-voxel offset" in note


def test_seg_three_pixels_off_is_resampled_by_physical_position(shifted_seg_conversion) -> None:
    record = shifted_seg_conversion.meta["dkm"]["cases"]["SHIFT-3PX"]
    assert record["label_grid_mapping"] == "resampled"
    assert record["label_grid_offset_voxels"] == pytest.approx([3.0, 3.0, 0.0], abs=1e-3)
    seg = str(shifted_seg_conversion.segs["SHIFT-3PX"])
    assert any(seg in w and "resampled" in w and "+3.00" in w for w in shifted_seg_conversion.warnings)
    assert (shifted_seg_conversion.dataset / "labelsTr" / "SHIFT-3PX.nii.gz").is_file()


def test_resampled_tissue_mask_is_the_original_moved_by_three_pixels(scrambled_conversion, real_files, tmp_path):
    pre = sitk.ReadImage(str(scrambled_conversion.dataset / "imagesTr" / f"{CASE}_0000.nii.gz"))
    original = files_of_series(real_files, TISSUE_SEG_SERIES_NUMBER)
    clone_files(original, tmp_path / "shifted", {}, edit=shift_seg_frames(3, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unshifted = seg_on_grid(original[0], pre)
        shifted = seg_on_grid(seg_file_in(tmp_path / "shifted"), pre)
    assert unshifted.placement.mapping == "same grid" and not [w for w in caught if str(original[0]) in str(w.message)]
    assert shifted.placement.mapping == "resampled"
    expected = np.zeros_like(unshifted.mask)
    expected[:, 3:, 3:] = unshifted.mask[:, :-3, :-3]  # frame pixel (r, c) lands on image pixel (r + 3, c + 3)
    assert unshifted.mask[:, -3:, :].sum() + unshifted.mask[:, :, -3:].sum() == 0  # nothing pushed off the image
    np.testing.assert_array_equal(shifted.mask, expected)


def test_seg_on_a_coarser_grid_is_resampled_nearest_neighbour(scrambled_conversion, real_files, tmp_path) -> None:
    pre = sitk.ReadImage(str(scrambled_conversion.dataset / "imagesTr" / f"{CASE}_0000.nii.gz"))
    original = files_of_series(real_files, TISSUE_SEG_SERIES_NUMBER)

    def half_resolution(dataset: pydicom.Dataset) -> None:
        """Every second pixel of every frame, pixels twice as large, centred on the 2x2 blocks they stand for."""
        frames = dataset.pixel_array.reshape(-1, int(dataset.Rows), int(dataset.Columns))[:, ::2, ::2]
        shift = in_plane_shift(dataset, 0.5, 0.5)
        measures = dataset.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        measures.PixelSpacing = [2 * float(v) for v in measures.PixelSpacing]
        dataset.Rows, dataset.Columns = frames.shape[1:]
        dataset.PixelData = np.ascontiguousarray(frames, dtype=np.uint8).tobytes()
        move_frames(dataset, shift)

    clone_files(original, tmp_path / "coarse", {}, edit=half_resolution)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = seg_on_grid(original[0], pre).mask
        coarse = seg_on_grid(seg_file_in(tmp_path / "coarse"), pre)
    assert coarse.placement.mapping == "resampled"
    blocks = full[:, ::2, ::2]  # the pixels kept, each standing for its 2x2 block
    np.testing.assert_array_equal(coarse.mask, blocks.repeat(2, axis=1).repeat(2, axis=2))


def test_seg_mostly_outside_the_image_or_in_another_frame_of_reference_is_refused(
    scrambled_conversion, real_files, tmp_path
) -> None:
    pre = sitk.ReadImage(str(scrambled_conversion.dataset / "imagesTr" / f"{CASE}_0000.nii.gz"))
    original = files_of_series(real_files, TISSUE_SEG_SERIES_NUMBER)
    clone_files(original, tmp_path / "far", {}, edit=shift_seg_frames(200, 0))
    far = seg_file_in(tmp_path / "far")
    with pytest.raises(DatasetConversionError, match="outside the image") as error:
        seg_on_grid(far, pre)
    assert str(far) in str(error.value) and "+200.00" in str(error.value)

    clone_files(original, tmp_path / "other_for", {"FrameOfReferenceUID": generate_uid()})
    other = seg_file_in(tmp_path / "other_for")
    with pytest.raises(DatasetConversionError, match="FrameOfReferenceUID") as error:
        seg_on_grid(other, pre, frame_of_reference_uid=str(real_files[original[0]].FrameOfReferenceUID))
    assert str(other) in str(error.value)


# -- a label that cannot be built loses nothing else --------------------------------------------------
def truncate_pixel_data(dataset: pydicom.Dataset) -> None:
    if dataset.Modality == "SEG":
        dataset.PixelData = dataset.PixelData[:1000]


@pytest.fixture(scope="module")
def broken_label_conversion(real_files, tmp_path_factory) -> SimpleNamespace:
    """Two clones of the real case whose label cannot be built: UCSF-BR-97 (training) with its tissue SEG in
    another frame of reference, UCSF-BR-96 (test patient) with a truncated SEG. No labelled training case."""
    tree = tmp_path_factory.mktemp("broken_input")
    tissue = files_of_series(real_files, TISSUE_SEG_SERIES_NUMBER)
    others = [p for p in real_files if p not in tissue]
    training, test = {"PatientID": "UCSF-BR-97"}, {"PatientID": "UCSF-BR-96"}
    clone_files(others, tree / "97", training)
    clone_files(tissue, tree / "97_seg", training, edit=lambda d: setattr(d, "FrameOfReferenceUID", generate_uid()))
    clone_files(list(real_files), tree / "96", test, edit=truncate_pixel_data)
    raw = tmp_path_factory.mktemp("raw_broken")
    stdout = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(stdout):
        warnings.simplefilter("ignore")
        dataset = convert_nact(tree, 994, raw_folder=raw, test_patients=["UCSF-BR-96"])
    return SimpleNamespace(
        tree=tree, dataset=dataset, stdout=stdout.getvalue(), meta=json.loads((dataset / "dataset.json").read_text())
    )


def test_training_case_without_buildable_label_goes_to_unlabelled(broken_label_conversion) -> None:
    dataset = broken_label_conversion.dataset
    assert sorted(p.name for p in (dataset / "unlabelledTr").iterdir()) == [
        f"UCSF-BR-97_{phase:04d}.nii.gz" for phase in range(3)
    ]
    note = next(line for line in broken_label_conversion.stdout.splitlines() if "UCSF-BR-97:" in line)
    assert "FrameOfReferenceUID" in note and "unlabelledTr" in note
    record = broken_label_conversion.meta["dkm"]["cases"]["UCSF-BR-97"]
    assert record["label_source"] is None and "FrameOfReferenceUID" in record["label_missing_reason"]


def test_test_patient_without_buildable_label_keeps_its_images_in_the_test_split(broken_label_conversion) -> None:
    dataset = broken_label_conversion.dataset
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == ["UCSF-BR-96_0000.nii.gz"]
    assert sorted(p.name for p in (dataset / "kineticsTs").iterdir()) == [
        "UCSF-BR-96_0001.nii.gz", "UCSF-BR-96_0002.nii.gz"
    ]
    assert not (dataset / "labelsTs").exists()
    note = next(line for line in broken_label_conversion.stdout.splitlines() if "UCSF-BR-96:" in line)
    assert "cannot read the SEG" in note and "imagesTs" in note and "without a label" in note
    assert broken_label_conversion.meta["dkm"]["num_test_without_label"] == 1


def test_dataset_without_labelled_training_case_is_written_with_a_clear_note(broken_label_conversion) -> None:
    meta = broken_label_conversion.meta
    assert meta["numTraining"] == 0 and meta["dkm"]["num_unlabelled"] == 1
    assert meta["dkm"]["label_source"] is None
    assert not (broken_label_conversion.dataset / "imagesTr").exists()
    assert "training cases written   : 0" in broken_label_conversion.stdout
    assert "nnU-Net planning and training need at least one labelled training case" in broken_label_conversion.stdout


def test_cli_says_when_the_dataset_has_no_labelled_training_case(
    broken_label_conversion, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["-i", str(broken_label_conversion.tree), "-d", "994", "--raw-folder", str(tmp_path),
              "--test-patients", "UCSF-BR-96"])  # fmt: skip
    last_lines = capsys.readouterr().out.strip().splitlines()[-2:]
    assert last_lines[0].startswith("dataset written to")
    assert last_lines[1].startswith("note: no labelled training case: nnU-Net planning and training need")
