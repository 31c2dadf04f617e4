"""Where the probe reads its DM and writes its results."""

from __future__ import annotations

from pathlib import Path

from nnunet_dkm.paths import missing_dm_message, nnunet_folder
from nnunet_dkm.preprocessing import PlannedDataset
from nnunet_dkm.probe.errors import ProbeError


def probe_checkpoint(dataset: PlannedDataset, checkpoint_file: Path | None) -> Path:
    """``--checkpoint`` where given, else the dataset's DM (``$nnUNet_dkm_checkpoint`` or its dkm folder); it must
    exist, else :class:`ProbeError` names the file and the pretraining command."""
    if checkpoint_file is not None:
        if not checkpoint_file.is_file():
            raise ProbeError(f"--checkpoint {checkpoint_file}: no such file. To probe the dataset's own DM, leave "
                             f"--checkpoint out, or pretrain one with: {dataset.pretrain_command()}")
        return checkpoint_file
    location = dataset.dm_checkpoint
    if not location.path.is_file():
        raise ProbeError(missing_dm_message(location, dataset.name, dataset.configuration, dataset.plans_identifier))
    return location.path


def probe_output_folder(dataset: PlannedDataset) -> Path:
    """``$nnUNet_results/DatasetXXX_Name/dkm_probe__<plans>__<configuration>/``."""
    return nnunet_folder("nnUNet_results") / dataset.name / f"dkm_probe__{dataset.plans_identifier}__" \
                                                            f"{dataset.configuration}"
