"""DCE exams in nnU-Net's preprocessed space: the planned dataset and its identity, its exams, the transforms there
and back, and the cache of every pretraining exam in that space."""

from nnunet_dkm.preprocessing.dm_cache import CachedExam, DmCache, build_cache
from nnunet_dkm.preprocessing.exams import DceExam, find_pretraining_exams, find_test_exams, read_exam
from nnunet_dkm.preprocessing.planned_dataset import PlannedDataset, PreprocessedSpaceError, plans_identity
from nnunet_dkm.preprocessing.transforms import (
    NormalizationStats,
    mask_to_preprocessed_space,
    preprocess_like_precontrast,
    preprocessed_to_original_space,
)

__all__ = [
    "CachedExam",
    "DceExam",
    "DmCache",
    "NormalizationStats",
    "PlannedDataset",
    "PreprocessedSpaceError",
    "build_cache",
    "find_pretraining_exams",
    "find_test_exams",
    "mask_to_preprocessed_space",
    "plans_identity",
    "preprocess_like_precontrast",
    "preprocessed_to_original_space",
    "read_exam",
]
