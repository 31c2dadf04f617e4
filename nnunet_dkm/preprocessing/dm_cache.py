"""The DM's training data (and the probe's labelled cases), cached in nnU-Net's preprocessed space.

``nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/cache/`` holds one ``{case}.npy`` per exam,
shape (1 + K, z, y, x) float32: channel 0 the pre-contrast image exactly as nnU-Net preprocessed
it, channels 1..K the post-contrast phases through the same pipeline, z-scored with the
pre-contrast statistics; ``{case}_seg.npy`` (z, y, x) int8 holds the tumour label of labelled
exams in the same space. ``manifest.json`` records the plans identity the cache was built for,
per-exam statistics and per-slice facts used for sampling (tumour present; enhancement).
A cache built for other plans is rebuilt, never reused.

The manifest's per-slice facts are along axis 0, the axis nnU-Net's 2d configuration slices along and the default
slicing axis of 3D configurations (the lowest-resolution one after nnU-Net's ``transpose_forward``). A DM
pretrained across another axis (``--slice-axis 1|2`` on an isotropic 3D configuration) reads the same arrays through
``DmCache.along_axis``, which moves that axis first and recomputes the facts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnunet_dkm.atomic import remove_stale_temporaries, replace_folder, report_removed
from nnunet_dkm.image_integrity import read_checked
from nnunet_dkm.preprocessing.exams import DceExam, find_pretraining_exams, read_exam
from nnunet_dkm.preprocessing.planned_dataset import PlannedDataset
from nnunet_dkm.preprocessing.transforms import mask_to_preprocessed_space, preprocess_like_precontrast

CACHE_VERSION = 1
ENHANCEMENT_QUANTILE = 0.99


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

    def load(self, mmap: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(images (1 + K, s, a, b) float32, seg (s, a, b) int8 or None): the stored (z, y, x) arrays with the
        slicing axis first (views, no copy)."""
        mode = "r" if mmap else None
        images = np.load(self.images_file, mmap_mode=mode)
        seg = np.load(self.seg_file, mmap_mode=mode) if self.seg_file is not None else None
        if self.slice_axis:
            images = np.moveaxis(images, 1 + self.slice_axis, 1)
            seg = np.moveaxis(seg, self.slice_axis, 0) if seg is not None else None
        return images, seg

    def along_axis(self, axis: int) -> CachedExam:
        """The same exam sliced across ``axis`` (0, 1 or 2) of the stored (z, y, x) arrays, its facts recomputed."""
        if axis not in (0, 1, 2):
            raise ValueError(f"slice axis must be 0, 1 or 2, got {axis}")
        if axis == self.slice_axis:
            return self
        moved = replace(self, slice_axis=axis)
        images, seg = moved.load(mmap=True)
        tumour_slices, slice_enhancement = slice_facts(images, seg)
        return replace(moved, shape=tuple(images.shape), tumour_slices=tuple(tumour_slices),
                       slice_enhancement=tuple(slice_enhancement))


def slice_facts(images: np.ndarray, seg: np.ndarray | None) -> tuple[list[int], list[float]]:
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
    """Preprocess one exam into ``out_folder``; returns its manifest entry."""
    plans_manager, configuration_manager = dataset.plans_manager, dataset.configuration_manager
    images, reader_properties = read_exam(exam, plans_manager)
    stack, stats, properties = preprocess_like_precontrast(
        images, reader_properties["spacing"], plans_manager, configuration_manager
    )
    np.save(out_folder / f"{exam.case_id}.npy", stack)
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
        np.save(out_folder / f"{exam.case_id}_seg.npy", seg)
        entry["seg"] = f"{exam.case_id}_seg.npy"
    else:
        seg = None
    entry["tumour_slices"], entry["slice_enhancement"] = slice_facts(stack, seg)
    return entry


def load_cache(folder: Path) -> DmCache:
    """Read a cache written by :func:`build_cache`."""
    manifest = json.loads((folder / "manifest.json").read_text())
    exams = tuple(
        CachedExam(case_id=entry["case_id"], source=entry["source"], images_file=folder / f"{entry['case_id']}.npy",
                   seg_file=folder / entry["seg"] if entry["seg"] else None, shape=tuple(entry["shape"]),
                   tumour_slices=tuple(entry["tumour_slices"]), slice_enhancement=tuple(entry["slice_enhancement"]))
        for entry in manifest["exams"]
    )
    return DmCache(folder, manifest["plans_identity"], manifest["num_post_phases"], exams)


def build_cache(dataset: PlannedDataset, rebuild: bool = False, progress: bool = True) -> DmCache:
    """Preprocess every pretraining exam (labelled training cases and ``unlabelledTr/``, never the test split)
    into ``dkm/<configuration>/cache/``, or reuse a complete cache built for the same plans.

    The cache is built in a temporary folder and renamed into place when complete; leftovers of killed builds are
    removed first.
    """
    identity = dataset.plans_identity()
    folder = dataset.dkm_folder / "cache"
    if folder.is_dir() and not rebuild:
        try:
            cache = load_cache(folder)
        except (OSError, ValueError, KeyError):
            cache = None
        if cache is not None and cache.plans_identity == identity:
            return cache
    exams = find_pretraining_exams(dataset.raw_folder)
    report_removed(remove_stale_temporaries(folder.parent), "DM cache")

    def fill(tmp: Path) -> None:
        entries = [
            cache_exam(exam, tmp, dataset)
            for exam in tqdm(exams, desc=f"DM cache ({dataset.configuration})", unit="exam", disable=not progress)
        ]
        manifest = {"version": CACHE_VERSION, "plans_identity": identity, "num_post_phases": len(exams[0].post_files),
                    "exams": entries}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))

    replace_folder(folder, fill)
    return load_cache(folder)
