"""Cache format 2 of the DM cache: float16 blosc2 arrays that read back as the preprocessing wrote them (to float16
precision), an old format rebuilt with a message, a damaged file named in one line, and builds in several processes
or across torchrun ranks equal to the serial build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PHANTOM_ID, use_nnunet_folders

from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.image_integrity import read_checked
from nnunet_dkm.preprocessing import PlannedDataset, build_cache, find_pretraining_exams, read_exam
from nnunet_dkm.preprocessing.cache_storage import CachedArray, write_images, write_seg
from nnunet_dkm.preprocessing.dm_cache import CACHE_VERSION, load_cache
from nnunet_dkm.preprocessing.transforms import mask_to_preprocessed_space, preprocess_like_precontrast

BIN = Path(sys.executable).parent


def cache_contents(folder: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """(the manifest's exam entries, every array of the cache read in full by file name)."""
    cache = load_cache(folder)
    arrays = {}
    for exam in cache.exams:
        images, seg = exam.load(mmap=False)
        arrays[exam.images_file.name] = images
        if seg is not None:
            arrays[exam.seg_file.name] = seg
    return json.loads((folder / "manifest.json").read_text())["exams"], arrays


def test_round_trip_equals_the_preprocessing_to_float16_precision(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    dataset = PlannedDataset.load(PHANTOM_ID, "2d")
    cache = build_cache(dataset, progress=False)
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    assert manifest["version"] == CACHE_VERSION == 2 and "float16" in manifest["storage"]["images"]
    assert not list(cache.folder.glob("*.npy"))
    exams = {exam.case_id: exam for exam in find_pretraining_exams(dataset.raw_folder)}
    plans, configuration = dataset.plans_manager, dataset.configuration_manager
    for cached in cache.exams:
        exam = exams[cached.case_id]
        raw, properties = read_exam(exam, plans)
        stack, _, preprocessing = preprocess_like_precontrast(raw, properties["spacing"], plans, configuration)
        images, seg = cached.load(mmap=False)
        assert isinstance(images, np.ndarray) and images.dtype == np.float32
        np.testing.assert_array_equal(images, stack.astype(np.float16).astype(np.float32))
        lazy_images, lazy_seg = cached.load(mmap=True)
        assert isinstance(lazy_images, CachedArray) and lazy_images.shape == stack.shape
        middle = stack.shape[1] // 2
        np.testing.assert_array_equal(lazy_images[:, middle], images[:, middle])
        assert lazy_images[:, middle].dtype == np.float32
        if exam.label_file is None:
            assert seg is None and lazy_seg is None
            continue
        label, _ = read_checked(exam.label_file, plans.image_reader_writer_class().read_seg)
        expected = mask_to_preprocessed_space(label, preprocessing, plans, configuration, list(stack.shape[1:]))
        assert seg.dtype == np.int8
        np.testing.assert_array_equal(seg, expected)
        np.testing.assert_array_equal(lazy_seg[middle], expected[middle])
        np.testing.assert_array_equal(lazy_seg > 0, expected > 0)  # arithmetic reads the whole array


def test_cached_arrays_index_like_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = write_images(tmp_path / "case.b2nd", rng.normal(size=(3, 5, 6, 7)).astype(np.float32) * 100)
    seg = (rng.random((5, 6, 7)) > 0.7).astype(np.int8)
    write_seg(tmp_path / "case_seg.b2nd", seg)
    lazy_images, lazy_seg = CachedArray(tmp_path / "case.b2nd", np.float32, 1), CachedArray(
        tmp_path / "case_seg.b2nd", np.int8, 0)
    for key in ((slice(None), 3), (1, 3), (slice(None), -1), (0, 2, 4), (Ellipsis, 2), (slice(None), slice(1, 3)),
                (2,), 1):
        np.testing.assert_array_equal(lazy_images[key], images[key])
    for key in (3, -2, (4, slice(2, 5)), slice(0, 2)):
        np.testing.assert_array_equal(lazy_seg[key], seg[key])
    assert lazy_images[:, 3].dtype == np.float32 and not lazy_images[:, 3].flags.writeable
    np.testing.assert_array_equal(np.asarray(lazy_images), images)
    np.testing.assert_array_equal(lazy_images[1] - lazy_images[0], images[1] - images[0])
    assert lazy_images.shape == images.shape and lazy_seg.ndim == 3 and len(lazy_seg) == 5


def test_a_format_1_cache_is_rebuilt_with_a_message(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    folder = build_cache(PlannedDataset.load(PHANTOM_ID, "2d"), progress=False).folder
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = 1  # what format 1 wrote: float32 .npy arrays beside the same manifest
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for entry in manifest["exams"]:
        (folder / f"{entry['case_id']}.b2nd").unlink()
        np.save(folder / f"{entry['case_id']}.npy", np.zeros(entry["shape"], np.float32))
    capsys.readouterr()
    rebuilt = build_cache(PlannedDataset.load(PHANTOM_ID, "2d"), progress=False)
    lines = capsys.readouterr().out.splitlines()
    assert f"DM cache {folder}: format 1 (float32 .npy) is rebuilt as format 2 (float16 blosc2)" in lines
    assert not list(folder.glob("*.npy")) and len(list(folder.glob("*.b2nd"))) >= len(rebuilt.exams)
    images, _ = rebuilt.exams[0].load(mmap=False)
    assert np.abs(images).max() > 0


def test_a_damaged_cache_file_is_named_in_a_one_line_error(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    folder = build_cache(PlannedDataset.load(PHANTOM_ID, "2d"), progress=False).folder
    copy = Path(shutil.copytree(folder, tmp_path / "cache"))
    exam = next(exam for exam in load_cache(copy).exams if exam.seg_file is not None)
    for damaged_file in (exam.images_file, exam.seg_file):
        intact = damaged_file.read_bytes()
        damaged_file.write_bytes(intact[:-200])  # truncated, as by a full disk or a killed copy
        for mmap in (True, False):
            with pytest.raises(NnunetDkmError) as raised:
                exam.load(mmap=mmap)
            message = str(raised.value)
            assert message.startswith(f"{damaged_file}: damaged DM cache file") and "\n" not in message
            assert f"delete the folder {copy}" in message
        damaged_file.write_bytes(intact)
    exam.images_file.unlink()
    with pytest.raises(NnunetDkmError, match=rf"^{exam.images_file}: damaged DM cache file \(missing\)"):
        load_cache(copy)


def test_a_build_in_two_processes_equals_the_serial_build(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    dataset = PlannedDataset.load(PHANTOM_ID, "2d")
    serial = cache_contents(build_cache(dataset, rebuild=True, progress=False, processes=1).folder)
    parallel = cache_contents(build_cache(dataset, rebuild=True, progress=False, processes=2).folder)
    assert parallel[0] == serial[0]
    assert parallel[1].keys() == serial[1].keys()
    for name, array in serial[1].items():
        np.testing.assert_array_equal(parallel[1][name], array)


SHARDED_BUILD = """import sys
import torch.distributed as dist
from pathlib import Path
from nnunet_dkm.preprocessing import PlannedDataset
from pretrain_dm.settings import RunContext
from pretrain_dm.shared_cache import shared_cache

dist.init_process_group("gloo")
context = RunContext(rank=dist.get_rank(), world_size=dist.get_world_size())
cache = shared_cache(PlannedDataset.load(int(sys.argv[1]), "2d"), context, processes=2, progress=False)
print(f"rank {context.rank}: {len(cache.exams)} exams", flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_torchrun_ranks_build_shares_of_the_cache_equal_to_the_serial_build(
    planned_phantom: dict[str, Path], tmp_path: Path
) -> None:
    preprocessed = tmp_path / "nnUNet_preprocessed"
    source = next(planned_phantom["nnUNet_preprocessed"].glob(f"Dataset{PHANTOM_ID}_*"))
    shutil.copytree(source, preprocessed / source.name, ignore=shutil.ignore_patterns("dkm"))
    folders = {**planned_phantom, "nnUNet_preprocessed": preprocessed}
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_nnunet_folders(folders, monkeypatch)
        serial = cache_contents(build_cache(PlannedDataset.load(PHANTOM_ID, "2d"), progress=False).folder)
        shutil.rmtree(preprocessed / source.name / "dkm")
    script = tmp_path / "sharded_build.py"
    script.write_text(SHARDED_BUILD)
    env = {**os.environ, **{k: str(v) for k, v in folders.items()}, "OMP_NUM_THREADS": "1"}
    command = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(script), str(PHANTOM_ID)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    count = len(serial[0])
    assert f"rank 0: {count} exams" in result.stdout and f"rank 1: {count} exams" in result.stdout
    sharded = cache_contents(preprocessed / source.name / "dkm" / "2d" / "cache")
    assert sharded[0] == serial[0]
    for name, array in serial[1].items():
        np.testing.assert_array_equal(sharded[1][name], array)
    assert not [p for p in (preprocessed / source.name / "dkm" / "2d").iterdir() if p.name.startswith(".tmp_")]
