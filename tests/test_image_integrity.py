"""Damaged image files are refused, naming the file, wherever the project reads images (converters, the DM cache, the
probe): truncated or corrupt gzip streams, content shorter than the NIfTI header promises, NaN or infinite voxels."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import PHANTOM_ID, use_nnunet_folders

from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.image_integrity import (
    DamagedImageError,
    check_finite_voxels,
    check_image_file,
    read_checked_image,
    write_checked_image,
)
from nnunet_dkm.preprocessing import DceExam, PlannedDataset, find_pretraining_exams, find_test_exams, read_exam


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    """A float32 NIfTI volume (6 x 16 x 16 voxels: 6144 bytes of voxels after the 352-byte header), gzipped."""
    rng = np.random.default_rng(0)
    path = tmp_path / "case_0000.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(rng.normal(size=(6, 16, 16)).astype(np.float32)), str(path))
    return path


def test_intact_files_pass_gzipped_plain_and_in_several_gzip_members(image_file: Path, tmp_path: Path) -> None:
    check_image_file(image_file)
    content = gzip.decompress(image_file.read_bytes())
    plain = tmp_path / "plain.nii"
    plain.write_bytes(content)
    check_image_file(plain)
    members = tmp_path / "members.nii.gz"  # what concatenating gzip files gives; gzip readers accept it
    members.write_bytes(gzip.compress(content[:1000]) + gzip.compress(content[1000:]))
    check_image_file(members)
    assert read_checked_image(members).GetSize() == (16, 16, 6)


def test_a_truncated_gzip_stream_is_refused_naming_the_file(image_file: Path) -> None:
    image_file.write_bytes(image_file.read_bytes()[:300])
    assert sitk.ReadImage(str(image_file)).GetSize() == (16, 16, 6)  # what SimpleITK makes of it: no error
    with pytest.raises(DamagedImageError, match=rf"^{image_file}: truncated: its gzip stream ends early; replace it"):
        check_image_file(image_file)


def test_a_stream_cut_inside_the_header_or_empty_is_refused(image_file: Path) -> None:
    image_file.write_bytes(image_file.read_bytes()[:40])
    with pytest.raises(DamagedImageError, match="truncated: its gzip stream ends early"):
        check_image_file(image_file)
    image_file.write_bytes(b"")
    with pytest.raises(DamagedImageError, match=r"case_0000.nii.gz: empty file \(0 bytes\)"):
        check_image_file(image_file)


def test_a_wrong_checksum_or_non_gzip_data_is_refused(image_file: Path) -> None:
    data = bytearray(image_file.read_bytes())
    data[-6] ^= 0xFF  # inside the gzip trailer's CRC-32
    image_file.write_bytes(bytes(data))
    with pytest.raises(DamagedImageError, match="corrupt gzip data"):
        check_image_file(image_file)
    image_file.write_bytes(b"not a nifti file")
    with pytest.raises(DamagedImageError, match="cannot be read .not gzip data"):
        check_image_file(image_file)


def test_content_shorter_than_the_header_promises_is_refused(image_file: Path, tmp_path: Path) -> None:
    content = gzip.decompress(image_file.read_bytes())
    short_gzip = tmp_path / "short.nii.gz"  # a complete gzip stream of an incomplete file
    short_gzip.write_bytes(gzip.compress(content[:5000]))
    with pytest.raises(DamagedImageError, match="truncated: its content ends early .Expected 6144 bytes, got 4648"):
        check_image_file(short_gzip)
    short_plain = tmp_path / "short.nii"
    short_plain.write_bytes(content[:5000])
    with pytest.raises(DamagedImageError, match="short.nii: truncated"):
        check_image_file(short_plain)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused_although_simpleitk_reads_nan_as_zero(tmp_path: Path, bad_value: float) -> None:
    array = np.ones((4, 8, 8), dtype=np.float32)
    array[2, 3, 4] = bad_value
    path = tmp_path / "bad.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(DamagedImageError, match=r"bad.nii.gz: 1 of 256 voxels are NaN or infinite"):
        read_checked_image(path)
    other_format = tmp_path / "bad.nrrd"  # left to its reader; the values it returns are checked
    sitk.WriteImage(sitk.GetImageFromArray(array), str(other_format))
    check_image_file(other_format)
    with pytest.raises(DamagedImageError, match="bad.nrrd: 1 of 256 voxels"):
        check_finite_voxels(sitk.GetArrayViewFromImage(sitk.ReadImage(str(other_format))), other_format)


def test_a_write_that_itk_leaves_truncated_is_refused(image_file: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    image = sitk.ReadImage(str(image_file))
    original_write = sitk.WriteImage

    def write_on_a_full_disk(image: sitk.Image, path: str, useCompression: bool = False) -> None:
        original_write(image, path, useCompression)  # ITK only prints an error, and keeps the start of the file
        Path(path).write_bytes(Path(path).read_bytes()[:200])

    monkeypatch.setattr(sitk, "WriteImage", write_on_a_full_disk)
    target = tmp_path / "out.nii.gz"
    with pytest.raises(NnunetDkmError, match=rf"^{target}: written incompletely \(is its disk full\?\)"):
        write_checked_image(image, target)


def copy_planned_raw(planned_phantom: dict[str, Path], tmp_path: Path) -> Path:
    """A writable copy of the planned phantom's raw dataset."""
    raw = next(planned_phantom["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*"))
    return Path(shutil.copytree(raw, tmp_path / raw.name))


def test_the_dm_cache_reader_refuses_a_truncated_phase(planned_phantom: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    dataset = PlannedDataset.load(PHANTOM_ID, "2d")
    exam = find_pretraining_exams(copy_planned_raw(planned_phantom, tmp_path))[0]
    read_exam(exam, dataset.plans_manager)
    exam.post_files[0].write_bytes(exam.post_files[0].read_bytes()[:300])
    with pytest.raises(DamagedImageError, match=rf"^{exam.post_files[0]}: truncated"):
        read_exam(exam, dataset.plans_manager)


def test_the_probe_refuses_a_damaged_label(planned_phantom: dict[str, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunet_dkm.probe.cases import load_raw_case

    use_nnunet_folders(planned_phantom, monkeypatch)
    dataset = PlannedDataset.load(PHANTOM_ID, "2d")
    exam = find_test_exams(copy_planned_raw(planned_phantom, tmp_path))[0]
    load_raw_case(exam, dataset)
    label = exam.label_file
    label.write_bytes(label.read_bytes()[:120])
    with pytest.raises(DamagedImageError, match=rf"^{label}: truncated"):
        load_raw_case(DceExam(exam.case_id, exam.pre_file, exam.post_files, label, exam.source), dataset)
