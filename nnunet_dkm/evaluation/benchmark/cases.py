"""The cases each fold's models are scored on, read from the raw dataset and nnU-Net's ``splits_final.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_dkm.errors import NnunetDkmError


class BenchmarkError(NnunetDkmError):
    """The benchmark cannot go on; the message names what is missing and the command that fixes it."""


@dataclass(frozen=True)
class Case:
    """One evaluated case: its pre-contrast image, first post-contrast phase (or None) and label."""

    case_id: str
    pre: Path
    post: Path | None
    label: Path


def read_array(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Voxels (z, y, x) as float32 and the spacing in the same (z, y, x) order."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image).astype(np.float32), tuple(reversed(image.GetSpacing()))


def has_test_split(raw: Path, file_ending: str) -> bool:
    return (raw / "labelsTs").is_dir() and any((raw / "labelsTs").glob(f"*{file_ending}"))


def cases_of(raw: Path, split: str, case_ids: list[str], file_ending: str, post_phase: int) -> list[Case]:
    cases = []
    for case_id in case_ids:
        pre = raw / f"images{split}" / f"{case_id}_0000{file_ending}"
        label = raw / f"labels{split}" / f"{case_id}{file_ending}"
        post = raw / f"kinetics{split}" / f"{case_id}_{post_phase:04d}{file_ending}"
        for path in (pre, label):
            if not path.is_file():
                raise BenchmarkError(f"case {case_id}: {path} is missing")
        cases.append(Case(case_id, pre, post if post.is_file() else None, label))
    return cases


def evaluation_cases(raw: Path, splits: list[dict], folds: list[int], file_ending: str,
                     post_phase: int) -> tuple[str, dict[int, list[Case]]]:
    """The cases each fold's models are scored on, and a sentence saying which.

    The test split (``imagesTs``/``labelsTs``) for every fold where the dataset has one; otherwise each fold's
    validation cases from nnU-Net's ``splits_final.json``.
    """
    if has_test_split(raw, file_ending):
        test_ids = sorted(p.name[: -len(file_ending)] for p in (raw / "labelsTs").glob(f"*{file_ending}"))
        text = f"test split (imagesTs/labelsTs, {len(test_ids)} cases), the same for every fold's model"
        return text, {fold: cases_of(raw, "Ts", test_ids, file_ending, post_phase) for fold in folds}
    missing = [fold for fold in folds if fold >= len(splits)]
    if missing:
        raise BenchmarkError(f"folds {missing} are not in splits_final.json ({len(splits)} folds)")
    text = "no test split: each fold's validation cases (nnU-Net's splits_final.json)"
    return text, {fold: cases_of(raw, "Tr", sorted(splits[fold]["val"]), file_ending, post_phase) for fold in folds}


def load_splits(preprocessed: Path) -> list[dict]:
    path = preprocessed / "splits_final.json"
    if not path.is_file():
        raise BenchmarkError(f"{path} is missing; nnUNetv2_train writes it when it first trains a fold")
    return json.loads(path.read_text())
