"""The DM's training data, cached in nnU-Net's preprocessed space.

``nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/cache/`` holds one ``{case}.npy`` per exam,
shape (1 + K, z, y, x) float32: channel 0 the pre-contrast image exactly as nnU-Net preprocessed
it, channels 1..K the post-contrast phases through the same pipeline, z-scored with the
pre-contrast statistics; ``{case}_seg.npy`` (z, y, x) int8 holds the tumour label of labelled
exams in the same space. ``manifest.json`` records the plans identity the cache was built for,
per-exam statistics and per-slice facts used for sampling (tumour present; enhancement).
A cache built for other plans is rebuilt, never reused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from tqdm import tqdm

from nnunet_dkm.diffusion import locations
from nnunet_dkm.diffusion.preprocessed_space import (
    DceExam,
    find_dataset_folder,
    find_pretraining_exams,
    load_plans,
    mask_to_preprocessed_space,
    preprocess_like_precontrast,
    read_exam,
)

CACHE_VERSION = 1
ENHANCEMENT_QUANTILE = 0.99


@dataclass(frozen=True)
class CachedExam:
    """One exam of the cache: where its arrays are and what the sampler needs to know about its slices.

    ``tumour_slices``: indices along axis 0 (the 2D slicing axis) holding tumour voxels (labelled exams).
    ``slice_enhancement``: per slice, the 99th percentile of ``post_1 - pre`` inside the nonzero region.
    """

    case_id: str
    source: str
    images_file: Path
    seg_file: Path | None
    shape: tuple[int, ...]
    tumour_slices: tuple[int, ...]
    slice_enhancement: tuple[float, ...]

    def load(self, mmap: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(images (1 + K, z, y, x) float32, seg (z, y, x) int8 or None)."""
        mode = "r" if mmap else None
        images = np.load(self.images_file, mmap_mode=mode)
        seg = np.load(self.seg_file, mmap_mode=mode) if self.seg_file is not None else None
        return images, seg


@dataclass(frozen=True)
class DmCache:
    """The cache of one dataset and configuration."""

    folder: Path
    plans_identity: dict
    num_post_phases: int
    exams: tuple[CachedExam, ...]


def dkm_folder(dataset_id: int, configuration: str) -> Path:
    """``nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/``: DM cache and checkpoint live here."""
    return locations.dkm_folder(find_dataset_folder("nnUNet_preprocessed", dataset_id), configuration)


def _identity(plans_manager: PlansManager, configuration: str) -> dict:
    from nnunet_dkm.diffusion.checkpoint import plans_identity

    return json.loads(json.dumps(plans_identity(plans_manager.plans, configuration)))  # as stored in JSON


def cache_exam(
    exam: DceExam, out_folder: Path, plans_manager: PlansManager, configuration_manager: ConfigurationManager
) -> dict:
    """Preprocess one exam into ``out_folder``; returns its manifest entry."""
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
        label, _ = plans_manager.image_reader_writer_class().read_seg(str(exam.label_file))
        seg = mask_to_preprocessed_space(label, properties, plans_manager, configuration_manager, list(stack.shape[1:]))
        np.save(out_folder / f"{exam.case_id}_seg.npy", seg)
        entry["seg"] = f"{exam.case_id}_seg.npy"
        entry["tumour_slices"] = [int(i) for i in np.flatnonzero(seg.reshape(seg.shape[0], -1).any(axis=1))]
    enhancement = stack[1] - stack[0]
    entry["slice_enhancement"] = [
        float(np.quantile(slice_, ENHANCEMENT_QUANTILE)) for slice_ in enhancement.reshape(enhancement.shape[0], -1)
    ]
    return entry


def load_cache(folder: Path) -> DmCache:
    """Read a cache written by :func:`build_cache`."""
    manifest = json.loads((folder / "manifest.json").read_text())
    exams = tuple(
        CachedExam(
            case_id=entry["case_id"],
            source=entry["source"],
            images_file=folder / f"{entry['case_id']}.npy",
            seg_file=folder / entry["seg"] if entry["seg"] else None,
            shape=tuple(entry["shape"]),
            tumour_slices=tuple(entry["tumour_slices"]),
            slice_enhancement=tuple(entry["slice_enhancement"]),
        )
        for entry in manifest["exams"]
    )
    return DmCache(folder, manifest["plans_identity"], manifest["num_post_phases"], exams)


def build_cache(
    dataset_id: int, configuration: str, plans_identifier: str = "nnUNetPlans", rebuild: bool = False,
    progress: bool = True,
) -> DmCache:
    """Preprocess every pretraining exam (labelled training cases and ``unlabelledTr/``, never the test split)
    into ``dkm/<configuration>/cache/``, or reuse a complete cache built for the same plans.

    The cache is written to a temporary folder and renamed into place when complete.
    """
    plans_manager, configuration_manager, _, _ = load_plans(dataset_id, configuration, plans_identifier)
    identity = _identity(plans_manager, configuration)
    folder = dkm_folder(dataset_id, configuration) / "cache"
    if folder.is_dir() and not rebuild:
        try:
            cache = load_cache(folder)
        except (OSError, ValueError, KeyError):
            cache = None
        if cache is not None and cache.plans_identity == identity:
            return cache
    raw = find_dataset_folder("nnUNet_raw", dataset_id)
    exams = find_pretraining_exams(raw)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_cache_", dir=folder.parent))
    try:
        entries = [
            cache_exam(exam, tmp, plans_manager, configuration_manager)
            for exam in tqdm(exams, desc=f"DM cache ({configuration})", unit="exam", disable=not progress)
        ]
        manifest = {
            "version": CACHE_VERSION,
            "plans_identity": identity,
            "num_post_phases": len(exams[0].post_files),
            "exams": entries,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_cache(folder)
