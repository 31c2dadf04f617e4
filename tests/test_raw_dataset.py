"""RawDatasetWriter: the layout, dataset.json and the all-or-nothing promise every converter relies on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.raw_dataset import (
    ConversionSummary,
    DatasetConversionError,
    RawDatasetWriter,
    check_same_geometry,
    nnunet_raw_folder,
)


def make_image(values: np.ndarray, spacing=(1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    """SimpleITK image from a (z, y, x) array."""
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def exam(seed: int, shape=(4, 16, 16)) -> tuple[sitk.Image, list[sitk.Image], sitk.Image]:
    """A pre-contrast image, two post-contrast phases and a label with a small tumour."""
    rng = np.random.default_rng(seed)
    pre = rng.uniform(50, 100, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[1:3, 5:9, 5:9] = 1
    posts = [pre * (1 + 0.9 * label) + k for k in (1, 2)]
    return make_image(pre), [make_image(p.astype(np.float32)) for p in posts], make_image(label)


def test_layout_and_dataset_json(tmp_path: Path) -> None:
    with RawDatasetWriter(tmp_path, 990, "Unit") as writer:
        writer.add_case("case_000", *exam(0))
        writer.add_case("case_001", *exam(1), split="Ts")
        pre, posts, _ = exam(2)
        writer.add_unlabelled("case_u00", pre, posts)
        final = writer.finish(dkm={"label_source": "synthetic", "acquisition_times_s": [-230, 150, 500]})

    assert final == tmp_path / "Dataset990_Unit"
    files = sorted(str(p.relative_to(final)) for p in final.rglob("*.nii.gz"))
    assert files == [
        "imagesTr/case_000_0000.nii.gz",
        "imagesTs/case_001_0000.nii.gz",
        "kineticsTr/case_000_0001.nii.gz",
        "kineticsTr/case_000_0002.nii.gz",
        "kineticsTs/case_001_0001.nii.gz",
        "kineticsTs/case_001_0002.nii.gz",
        "labelsTr/case_000.nii.gz",
        "labelsTs/case_001.nii.gz",
        "unlabelledTr/case_u00_0000.nii.gz",
        "unlabelledTr/case_u00_0001.nii.gz",
        "unlabelledTr/case_u00_0002.nii.gz",
    ]
    meta = json.loads((final / "dataset.json").read_text())
    assert meta["numTraining"] == 1
    assert meta["channel_names"] == {"0": "pre-contrast"}
    assert meta["labels"] == {"background": 0, "tumour": 1}
    assert meta["dkm"]["phases"] == ["pre-contrast", "post-contrast 1", "post-contrast 2"]
    assert meta["dkm"]["acquisition_times_s"] == [-230, 150, 500]
    assert meta["dkm"]["label_source"] == "synthetic"
    assert (meta["dkm"]["num_training"], meta["dkm"]["num_test"], meta["dkm"]["num_unlabelled"]) == (1, 1, 1)
    # the images are written unchanged
    pre, posts, label = exam(0)
    written = sitk.ReadImage(str(final / "kineticsTr/case_000_0002.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(posts[1]))
    assert written.GetSpacing() == pre.GetSpacing()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with RawDatasetWriter(tmp_path, 990, "Unit") as writer:
            writer.add_case("case_000", *exam(0))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_existing_dataset_needs_overwrite(tmp_path: Path) -> None:
    existing = tmp_path / "Dataset990_Old"
    existing.mkdir()
    (existing / "precious.txt").write_text("user data")
    with pytest.raises(DatasetConversionError, match="already exists.*--overwrite"):
        RawDatasetWriter(tmp_path, 990, "New")
    assert (existing / "precious.txt").read_text() == "user data"

    with RawDatasetWriter(tmp_path, 990, "New", overwrite=True) as writer:
        writer.add_case("case_000", *exam(0))
        writer.finish(dkm={"label_source": "synthetic"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset990_New"]


def test_bad_cases_are_named(tmp_path: Path) -> None:
    with RawDatasetWriter(tmp_path, 990, "Unit") as writer:
        pre, posts, label = exam(0)
        shifted = make_image(sitk.GetArrayFromImage(posts[0]), spacing=(1.0, 1.0, 2.0))
        with pytest.raises(DatasetConversionError, match="case bad_geom, post-contrast phase 2: spacing"):
            writer.add_case("bad_geom", pre, [posts[0], shifted], label)
        small_label = make_image(np.ones((4, 8, 8), np.uint8))
        with pytest.raises(DatasetConversionError, match="case bad_label, label: size"):
            writer.add_case("bad_label", pre, posts, small_label)
        with pytest.raises(DatasetConversionError, match="case empty: label is empty"):
            writer.add_case("empty", pre, posts, make_image(np.zeros((4, 16, 16), np.uint8)))
        with pytest.raises(DatasetConversionError, match="case multi: label holds values"):
            writer.add_case("multi", pre, posts, make_image(np.full((4, 16, 16), 2, np.uint8)))
        with pytest.raises(DatasetConversionError, match="case nopost: no post-contrast phase"):
            writer.add_case("nopost", pre, [], label)
        writer.add_case("good", pre, posts, label)
        with pytest.raises(DatasetConversionError, match="case fewer: 1 post-contrast phases, but earlier cases"):
            writer.add_case("fewer", pre, posts[:1], label)
        with pytest.raises(DatasetConversionError, match="used twice"):
            writer.add_case("good", pre, posts, label)
        final = writer.finish(dkm={"label_source": "synthetic"})
    assert [p.name for p in (final / "imagesTr").iterdir()] == ["good_0000.nii.gz"]


def test_no_training_case_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetConversionError, match="no training case"):
        with RawDatasetWriter(tmp_path, 990, "Unit") as writer:
            writer.finish(dkm={})
    assert list(tmp_path.iterdir()) == []


def test_geometry_tolerates_float_noise_only() -> None:
    reference = make_image(np.zeros((4, 8, 8), np.float32), origin=(10.0, 20.0, 30.0))
    check_same_geometry(reference, make_image(np.zeros((4, 8, 8), np.float32), origin=(10.0, 20.0, 30.00001)), "x")
    with pytest.raises(DatasetConversionError, match="x: origin"):
        check_same_geometry(reference, make_image(np.zeros((4, 8, 8), np.float32), origin=(10.0, 25.0, 30.0)), "x")


def test_missing_nnunet_raw_says_what_to_export(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(DatasetConversionError, match="export nnUNet_raw="):
        nnunet_raw_folder()


def test_summary_table_lists_skipped_cases() -> None:
    summary = ConversionSummary()
    summary.written["Tr"].append("a")
    summary.skip("patient_7", "post-contrast phase 2 missing")
    table = summary.table()
    assert "training cases written   : 1" in table
    assert "patient_7  post-contrast phase 2 missing" in table
