"""DCE exams in nnU-Net's preprocessed space: the planned dataset, its exams, and the transforms there and back."""

from nnunet_dkm.preprocessing.exams import DceExam, find_pretraining_exams, find_test_exams, read_exam
from nnunet_dkm.preprocessing.planned_dataset import PlannedDataset, PreprocessedSpaceError
from nnunet_dkm.preprocessing.transforms import (
    NormalizationStats,
    mask_to_preprocessed_space,
    preprocess_like_precontrast,
    preprocessed_to_original_space,
)

__all__ = [
    "DceExam",
    "NormalizationStats",
    "PlannedDataset",
    "PreprocessedSpaceError",
    "find_pretraining_exams",
    "find_test_exams",
    "mask_to_preprocessed_space",
    "preprocess_like_precontrast",
    "preprocessed_to_original_space",
    "read_exam",
]
