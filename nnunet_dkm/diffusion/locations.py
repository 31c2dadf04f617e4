"""Where a dataset's DM files live: ``nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/``.

The pretraining command writes there and ``nnUNetTrainerDKM`` finds the checkpoint there without
flags. ``$nnUNet_dkm_checkpoint`` names another checkpoint file, for experiments.
"""

from __future__ import annotations

import os
from pathlib import Path

DM_CHECKPOINT_ENV = "nnUNet_dkm_checkpoint"
DM_CHECKPOINT_NAME = "dm_checkpoint.pt"


def dkm_folder(preprocessed_dataset_folder: str | os.PathLike, configuration: str) -> Path:
    """``<preprocessed dataset>/dkm/<configuration>/``: DM cache, checkpoint, curves and samples."""
    return Path(preprocessed_dataset_folder) / "dkm" / configuration


def dm_checkpoint_path(preprocessed_dataset_folder: str | os.PathLike, configuration: str) -> Path:
    """The DM checkpoint of a dataset and configuration; ``$nnUNet_dkm_checkpoint`` overrides it."""
    override = os.environ.get(DM_CHECKPOINT_ENV)
    if override:
        return Path(override)
    return dkm_folder(preprocessed_dataset_folder, configuration) / DM_CHECKPOINT_NAME
