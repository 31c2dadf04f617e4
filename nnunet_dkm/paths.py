"""Where things live: nnU-Net's dataset folders (found with nnU-Net's own helpers), the dataset's ``dkm`` folder and
the DM checkpoint.

Every producer and consumer of a DM checkpoint (``nnUNetv2_dkm_pretrain``, ``nnUNetTrainerDKM``,
``nnUNetv2_dkm_synthesize_postcontrast``, ``nnUNetv2_dkm_probe``, ``nnUNetv2_dkm_benchmark``) resolves it with
:func:`dm_checkpoint_location`: ``$nnUNet_dkm_checkpoint`` where set, else
``nnUNet_preprocessed/DatasetXXX/dkm/<configuration>/dm_checkpoint.pt``. Pretraining writes where the trainer
reads, so a DM is never made where the trainer cannot find it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id, maybe_convert_to_dataset_name

from nnunet_dkm.errors import NnunetDkmError

DM_CHECKPOINT_ENV = "nnUNet_dkm_checkpoint"
DM_CHECKPOINT_NAME = "dm_checkpoint.pt"
DEFAULT_OBJECTIVE = "kinetic"
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class DatasetLocationError(NnunetDkmError):
    """An nnU-Net folder variable is unset or a dataset cannot be found; the message says what to export or run."""


def nnunet_folder(variable: str) -> Path:
    """The folder named by ``$variable`` (one of ``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``)."""
    value = os.environ.get(variable)
    if not value:
        raise DatasetLocationError(f"{variable} is not set: export {variable}=/path/to/{variable}")
    return Path(value)


def dataset_name(dataset: int | str) -> str:
    """nnU-Net's dataset name (``Dataset990_DKMPhantom``) of an id or name, looked up as nnU-Net does."""
    try:
        return str(maybe_convert_to_dataset_name(dataset))
    except (RuntimeError, ValueError) as error:
        folders = ", ".join(f"{name}={os.environ.get(name)}" for name in NNUNET_FOLDERS)
        raise DatasetLocationError(f"no dataset with id {dataset} in the nnU-Net folders ({folders})") from error


def dataset_id(name: str) -> int:
    """The id of a dataset name (``Dataset990_DKMPhantom`` -> 990)."""
    return int(convert_dataset_name_to_id(name))


def dataset_folder(variable: str, dataset: int | str) -> Path:
    """``$variable/DatasetXXX_Name`` of a dataset; it must exist."""
    folder = nnunet_folder(variable) / dataset_name(dataset)
    if not folder.is_dir():
        raise DatasetLocationError(f"{folder} does not exist (dataset {dataset} is not in {variable})")
    return folder


def dkm_folder(preprocessed_dataset_folder: str | os.PathLike, configuration: str) -> Path:
    """``<preprocessed dataset>/dkm/<configuration>/``: DM cache, checkpoint, curves and samples."""
    return Path(preprocessed_dataset_folder) / "dkm" / configuration


@dataclass(frozen=True)
class DmCheckpointLocation:
    """Where the DM checkpoint of a dataset and configuration is, and whether ``$nnUNet_dkm_checkpoint`` said so."""

    path: Path
    from_environment: bool

    def describe(self) -> str:
        """``$nnUNet_dkm_checkpoint=<path>`` or the path."""
        return f"${DM_CHECKPOINT_ENV}={self.path}" if self.from_environment else str(self.path)


def dm_checkpoint_name(objective: str = DEFAULT_OBJECTIVE) -> str:
    """``dm_checkpoint.pt`` for the kinetic DM, ``dm_checkpoint_<objective>.pt`` for the controls (pre-only,
    regression), so that one dataset holds all of them side by side."""
    return DM_CHECKPOINT_NAME if objective == DEFAULT_OBJECTIVE else f"dm_checkpoint_{objective}.pt"


def dm_figure_path(checkpoint_path: Path, kind: str) -> Path:
    """A figure beside a DM checkpoint: ``dm_<kind>.png`` for ``dm_checkpoint.pt``, ``dm_<kind>_<objective>.png`` for
    ``dm_checkpoint_<objective>.pt``, ``<stem>_<kind>.png`` for any other file name."""
    stem = checkpoint_path.stem
    if stem.startswith("dm_checkpoint"):
        return checkpoint_path.with_name(f"dm_{kind}{stem.removeprefix('dm_checkpoint')}.png")
    return checkpoint_path.with_name(f"{stem}_{kind}.png")


def dm_checkpoint_location(preprocessed_dataset_folder: str | os.PathLike, configuration: str,
                           objective: str = DEFAULT_OBJECTIVE) -> DmCheckpointLocation:
    """The DM checkpoint of a dataset, configuration and objective: ``$nnUNet_dkm_checkpoint`` where set (the user
    chose the kinetic DM's file; a control's is ``<stem>_<objective><suffix>`` beside it, so that setting the
    variable never makes a control read or overwrite the kinetic DM), else ``dm_checkpoint_name(objective)`` in the
    dataset's ``dkm`` folder. The one resolution every producer and consumer uses."""
    override = os.environ.get(DM_CHECKPOINT_ENV)
    if override:
        path = Path(override)
        if objective != DEFAULT_OBJECTIVE:
            path = path.with_name(f"{path.stem}_{objective}{path.suffix}")
        return DmCheckpointLocation(path, True)
    folder = dkm_folder(preprocessed_dataset_folder, configuration)
    return DmCheckpointLocation(folder / dm_checkpoint_name(objective), False)


def existing_dm_checkpoint(preprocessed_dataset_folder: str | os.PathLike, dataset: str, configuration: str,
                           plans_name: str = "nnUNetPlans", objective: str = DEFAULT_OBJECTIVE,
                           error: type[NnunetDkmError] = DatasetLocationError, hint: str = "") -> DmCheckpointLocation:
    """:func:`dm_checkpoint_location`, which must hold a file: else ``error`` with :func:`missing_dm_message` (and
    ``hint``, an option to add to the pretraining command). The check every consumer of a DM runs first."""
    location = dm_checkpoint_location(preprocessed_dataset_folder, configuration, objective)
    if not location.path.is_file():
        raise error(missing_dm_message(location, dataset, configuration, plans_name, objective) + hint)
    return location


def pretrain_command(dataset: str, configuration: str, plans_name: str = "nnUNetPlans",
                     objective: str = DEFAULT_OBJECTIVE) -> str:
    """The command that pretrains a DM for these plans, e.g. ``nnUNetv2_dkm_pretrain -d 990 -c 2d``.

    ``dataset`` is a dataset name (``Dataset990_DKMPhantom``) or id.
    """
    identifier = str(dataset_id(dataset)) if str(dataset).startswith("Dataset") else str(dataset)
    command = f"nnUNetv2_dkm_pretrain -d {identifier} -c {configuration}"
    if plans_name != "nnUNetPlans":
        command += f" -p {plans_name}"
    if objective != DEFAULT_OBJECTIVE:
        command += f" --objective {objective}"
    return command


def unfinished_dm_message(location: DmCheckpointLocation, dataset: str, configuration: str, steps: tuple[int, int],
                          plans_name: str = "nnUNetPlans", objective: str = DEFAULT_OBJECTIVE) -> str:
    """What to do about a DM whose pretraining stopped before its recipe's steps (``steps``: trained, planned)."""
    return (f"the DM at {location.describe()} stopped at step {steps[0]} of its recipe's {steps[1]} (interrupted, or "
            f"--max-minutes); finish it with: {pretrain_command(dataset, configuration, plans_name, objective)} "
            f"--continue")


def missing_dm_message(location: DmCheckpointLocation, dataset: str, configuration: str,
                       plans_name: str = "nnUNetPlans", objective: str = DEFAULT_OBJECTIVE) -> str:
    """What to do when no DM checkpoint is at ``location``: the pretraining command, and where the environment
    variable decides the place, how to use the default instead."""
    command = pretrain_command(dataset, configuration, plans_name, objective)
    if location.from_environment:
        return (f"no DM checkpoint at ${DM_CHECKPOINT_ENV}={location.path}. That variable overrides the dataset's "
                f"default DM: point it to an existing checkpoint, or `unset {DM_CHECKPOINT_ENV}` to use the default "
                f"one, or pretrain one there with: {command}")
    return f"no DM checkpoint at {location.path}. Pretrain the diffusion module first: {command}"
