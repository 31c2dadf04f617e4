"""The DM's training data (and the probe's labelled cases), cached in nnU-Net's preprocessed space.

``nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/cache/`` holds one ``{case}.b2nd`` per exam,
shape (1 + K, z, y, x): channel 0 the pre-contrast image exactly as nnU-Net preprocessed
it, channels 1..K the post-contrast phases through the same pipeline, z-scored with the
pre-contrast statistics; ``{case}_seg.b2nd`` (z, y, x) int8 holds the tumour label of labelled
exams in the same space. Format 2 stores the images as float16 with blosc2, one chunk per slice
(``nnunet_dkm.preprocessing.cache_storage``); readers get float32. ``manifest.json`` records the format version, the
storage, the plans identity the cache was built for, per-exam statistics and per-slice facts used for sampling
(tumour present; enhancement). A cache built for other plans, or of another format version (format 1 was float32
``.npy``), is rebuilt, never reused or misread.

The cache is built by ``processes`` worker processes (nnU-Net's ``-np`` convention, default ``nnUNet_def_n_proc``)
into a temporary folder that is renamed into place when complete. Under torchrun the ranks share the build
(``pretrain_dm.shared_cache``) with the pieces this module exposes: :func:`reusable_cache`, :func:`cache_exams` and
:func:`write_manifest`.

The manifest's per-slice facts are along axis 0, the axis nnU-Net's 2d configuration slices along and the default
slicing axis of 3D configurations (the lowest-resolution one after nnU-Net's ``transpose_forward``). A DM
pretrained across another axis (``--slice-axis 1|2`` on an isotropic 3D configuration) reads the same arrays through
``DmCache.along_axis``, which moves that axis first and recomputes the facts.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from nnunetv2.configuration import default_num_processes
from tqdm import tqdm

from nnunet_dkm.atomic import remove_stale_temporaries, replace_folder, report_removed
from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.image_integrity import read_checked
from nnunet_dkm.preprocessing.cache_storage import STORAGE, CachedArray, damaged, write_images, write_seg
from nnunet_dkm.preprocessing.exams import DceExam, find_pretraining_exams, read_exam
from nnunet_dkm.preprocessing.planned_dataset import PlannedDataset
from nnunet_dkm.preprocessing.transforms import mask_to_preprocessed_space, preprocess_like_precontrast

CACHE_VERSION = 2
FORMATS = {1: "float32 .npy", 2: "float16 blosc2"}
ENHANCEMENT_QUANTILE = 0.99


class DmCacheFormatError(NnunetDkmError):
    """A cache folder of another format version than this nnunet-dkm reads; ``build_cache`` rebuilds it."""


@dataclass(frozen=True)
class CachedExam:
    """One exam of the cache: where its arrays are and what the sampler needs to know about its slices.

    ``slice_axis``: the axis of the stored (z, y, x) arrays that the 2D slices are cut across (0 as stored);
    ``load`` returns the arrays with that axis first, and ``shape``, ``tumour_slices`` and ``slice_enhancement`` are
    along it.
    ``tumour_slices``: indices along the slicing axis holding tumour voxels (labelled exams).
    ``slice_enhancement``: per slice, the 99th percentile of ``post_1 - pre``.
    """

    case_id: str
    source: str
    images_file: Path
    seg_file: Path | None
    shape: tuple[int, ...]
    tumour_slices: tuple[int, ...]
    slice_enhancement: tuple[float, ...]
    slice_axis: int = 0

    def load(self, mmap: bool = True) -> tuple[np.ndarray | CachedArray, np.ndarray | CachedArray | None]:
        """(images (1 + K, s, a, b) float32, seg (s, a, b) int8 or None) with the slicing axis first.

        ``mmap=True``: lazily read arrays (:class:`CachedArray`): ``images[:, s]`` and ``seg[s]`` return numpy
        arrays and decompress one slice's chunk. ``mmap=False``: numpy arrays of the whole exam. Along another axis
        than the stored one (``slice_axis`` 1 or 2) the whole exam is decompressed and held in memory either way,
        since the chunks are slices along axis 0.
        """
        images = CachedArray(self.images_file, np.float32, slice_axis=1)
        seg = CachedArray(self.seg_file, np.int8, slice_axis=0) if self.seg_file is not None else None
        if mmap and not self.slice_axis:
            return images, seg
        images, seg = np.asarray(images), None if seg is None else np.asarray(seg)
        if self.slice_axis:
            images = np.moveaxis(images, 1 + self.slice_axis, 1)
            seg = np.moveaxis(seg, self.slice_axis, 0) if seg is not None else None
        return images, seg

    def along_axis(self, axis: int) -> CachedExam:
        """The same exam sliced across ``axis`` (0, 1 or 2) of the stored (z, y, x) arrays, its facts recomputed
        (this reads the whole exam once)."""
        if axis not in (0, 1, 2):
            raise ValueError(f"slice axis must be 0, 1 or 2, got {axis}")
        if axis == self.slice_axis:
            return self
        moved = replace(self, slice_axis=axis)
        images, seg = moved.load(mmap=True)
        tumour_slices, slice_enhancement = slice_facts(images, seg)
        return replace(moved, shape=tuple(images.shape), tumour_slices=tuple(tumour_slices),
                       slice_enhancement=tuple(slice_enhancement))


def slice_facts(images: np.ndarray | CachedArray,
                seg: np.ndarray | CachedArray | None) -> tuple[list[int], list[float]]:
    """(slices holding tumour, per-slice 99th percentile of ``post_1 - pre``) along axis 0 of (1 + K, s, a, b)
    images and their (s, a, b) label (None: no tumour slices)."""
    tumour_slices = [] if seg is None else [int(i) for i in np.flatnonzero(
        np.asarray(seg).reshape(seg.shape[0], -1).any(axis=1))]
    enhancement = np.asarray(images[1], dtype=np.float32) - np.asarray(images[0], dtype=np.float32)
    slice_enhancement = [float(np.quantile(slice_, ENHANCEMENT_QUANTILE))
                         for slice_ in enhancement.reshape(enhancement.shape[0], -1)]
    return tumour_slices, slice_enhancement


@dataclass(frozen=True)
class DmCache:
    """The cache of one dataset and configuration."""

    folder: Path
    plans_identity: dict
    num_post_phases: int
    exams: tuple[CachedExam, ...]

    def without_labels(self) -> DmCache:
        """The same exams with their tumour labels hidden: what label-free pretraining may see."""
        return replace(self, exams=tuple(replace(exam, seg_file=None, tumour_slices=()) for exam in self.exams))

    def along_axis(self, axis: int) -> DmCache:
        """The same exams sliced across ``axis`` of the stored (z, y, x) arrays (``CachedExam.along_axis``)."""
        return replace(self, exams=tuple(exam.along_axis(axis) for exam in self.exams))


def cache_exam(exam: DceExam, out_folder: Path, dataset: PlannedDataset) -> dict:
    """Preprocess one exam into ``out_folder`` (``{case}.b2nd``, ``{case}_seg.b2nd``); returns its manifest entry,
    whose slice facts are those of the stored (float16-rounded) values."""
    plans_manager, configuration_manager = dataset.plans_manager, dataset.configuration_manager
    images, reader_properties = read_exam(exam, plans_manager)
    stack, stats, properties = preprocess_like_precontrast(
        images, reader_properties["spacing"], plans_manager, configuration_manager
    )
    stored = write_images(out_folder / f"{exam.case_id}.b2nd", stack)
    entry = {
        "case_id": exam.case_id,
        "source": exam.source,
        "shape": list(stack.shape),
        "precontrast_mean": stats.mean,
        "precontrast_std": stats.std,
        "seg": None,
        "tumour_slices": [],
    }
    if exam.label_file is not None:
        label, _ = read_checked(exam.label_file, plans_manager.image_reader_writer_class().read_seg)
        seg = mask_to_preprocessed_space(label, properties, plans_manager, configuration_manager, list(stack.shape[1:]))
        write_seg(out_folder / f"{exam.case_id}_seg.b2nd", seg)
        entry["seg"] = f"{exam.case_id}_seg.b2nd"
    else:
        seg = None
    entry["tumour_slices"], entry["slice_enhancement"] = slice_facts(stored, seg)
    return entry


def _cache_exam_task(task: tuple[DceExam, Path, PlannedDataset]) -> dict:
    return cache_exam(*task)


def cache_exams(exams: Sequence[DceExam], out_folder: Path, dataset: PlannedDataset, processes: int,
                progress: bool, description: str) -> list[dict]:
    """Preprocess ``exams`` into ``out_folder`` with ``processes`` worker processes (1: in this process, which
    spares the seconds a spawned pool costs); returns their manifest entries in the order of ``exams``."""
    bar = {"total": len(exams), "desc": description, "unit": "exam", "disable": not progress}
    processes = max(1, min(processes, len(exams)))
    if processes == 1:
        return [cache_exam(exam, out_folder, dataset) for exam in tqdm(exams, **bar)]
    tasks = [(exam, out_folder, dataset) for exam in exams]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:  # spawn, as nnU-Net's preprocessing
        return list(tqdm(pool.imap(_cache_exam_task, tasks), **bar))


def write_manifest(folder: Path, identity: dict, num_post_phases: int, entries: list[dict]) -> None:
    """Write ``manifest.json`` (format version, storage, plans identity, per-exam entries) into ``folder``."""
    manifest = {"version": CACHE_VERSION, "storage": STORAGE, "plans_identity": identity,
                "num_post_phases": num_post_phases, "exams": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def describe_format(version: object) -> str:
    """``format 1 (float32 .npy)``: a cache format version in words."""
    known = FORMATS.get(version) if isinstance(version, int) else None
    return f"format {version} ({known or 'unknown to this nnunet-dkm'})"


def load_cache(folder: Path) -> DmCache:
    """Read a cache written by :func:`build_cache`; a cache of another format version raises
    :class:`DmCacheFormatError`, a missing array file an error naming it."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("version") != CACHE_VERSION:
        raise DmCacheFormatError(f"DM cache {folder}: {describe_format(manifest.get('version'))}, this nnunet-dkm "
                                 f"reads {describe_format(CACHE_VERSION)}; delete the folder to rebuild it")
    exams = tuple(
        CachedExam(case_id=entry["case_id"], source=entry["source"], images_file=folder / f"{entry['case_id']}.b2nd",
                   seg_file=folder / entry["seg"] if entry["seg"] else None, shape=tuple(entry["shape"]),
                   tumour_slices=tuple(entry["tumour_slices"]), slice_enhancement=tuple(entry["slice_enhancement"]))
        for entry in manifest["exams"]
    )
    for exam in exams:
        for path in (exam.images_file, exam.seg_file):
            if path is not None and not path.is_file():
                raise damaged(path, "missing")
    return DmCache(folder, manifest["plans_identity"], manifest["num_post_phases"], exams)


def reusable_cache(folder: Path, identity: dict) -> DmCache | None:
    """The complete cache in ``folder`` if it was built for ``identity`` in this format, else None (a cache of
    another format is announced in one line as it will be rebuilt)."""
    if not folder.is_dir():
        return None
    try:
        cache = load_cache(folder)
    except DmCacheFormatError:
        version = json.loads((folder / "manifest.json").read_text()).get("version")
        print(f"DM cache {folder}: {describe_format(version)} is rebuilt as {describe_format(CACHE_VERSION)}",
              flush=True)
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no manifest or an unreadable one: a build that never finished
    return cache if cache.plans_identity == identity else None


def build_cache(dataset: PlannedDataset, rebuild: bool = False, progress: bool = True,
                processes: int = default_num_processes) -> DmCache:
    """Preprocess every pretraining exam (labelled training cases and ``unlabelledTr/``, never the test split)
    into ``dkm/<configuration>/cache/``, or reuse a complete cache built for the same plans in this format.

    ``processes`` worker processes build it (nnU-Net's ``-np``; 1 builds in this process). The cache is built in a
    temporary folder and renamed into place when complete; leftovers of killed builds are removed first.
    """
    identity = dataset.plans_identity()
    folder = dataset.dkm_folder / "cache"
    cache = None if rebuild else reusable_cache(folder, identity)
    if cache is not None:
        return cache
    exams = find_pretraining_exams(dataset.raw_folder)
    report_removed(remove_stale_temporaries(folder.parent), "DM cache")

    def fill(tmp: Path) -> None:
        entries = cache_exams(exams, tmp, dataset, processes, progress, f"DM cache ({dataset.configuration})")
        write_manifest(tmp, identity, len(exams[0].post_files), entries)

    replace_folder(folder, fill)
    return load_cache(folder)
