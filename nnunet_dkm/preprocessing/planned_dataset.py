"""A dataset that nnU-Net has planned, for one configuration: its folders, plans and ``dataset.json``, loaded once.

Everything that works in nnU-Net's preprocessed space (DM pretraining and its cache, synthetic post-contrast images,
the feature probe) starts from one :class:`PlannedDataset` instead of looking up folders and plans itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.paths import (
    DatasetLocationError,
    DmCheckpointLocation,
    dataset_folder,
    dataset_name,
    dkm_folder,
    dm_checkpoint_location,
    pretrain_command,
)

SUPPORTED_NORMALIZATION = ("ZScoreNormalization", "NoNormalization")


class PreprocessedSpaceError(NnunetDkmError):
    """The dataset, plans or configuration cannot be used; the message says what to run."""


@dataclass(frozen=True, eq=False)
class PlannedDataset:
    """One configuration of a planned dataset.

    Attributes:
        name: ``DatasetXXX_Name``.
        configuration: nnU-Net configuration, e.g. ``2d``.
        plans_identifier: e.g. ``nnUNetPlans``.
        preprocessed_folder: ``nnUNet_preprocessed/DatasetXXX_Name``.
        plans_manager, configuration_manager: nnU-Net's view of the plans and of the configuration.
        dataset_json: the preprocessed folder's ``dataset.json``.
    """

    name: str
    configuration: str
    plans_identifier: str
    preprocessed_folder: Path
    plans_manager: PlansManager
    configuration_manager: ConfigurationManager
    dataset_json: dict

    @classmethod
    def load(cls, dataset: int | str, configuration: str, plans_identifier: str = "nnUNetPlans") -> PlannedDataset:
        """Read the plans of a planned dataset; errors name the command that makes what is missing."""
        try:
            name = dataset_name(dataset)
            preprocessed = dataset_folder("nnUNet_preprocessed", name)
        except DatasetLocationError as error:
            raise PreprocessedSpaceError(str(error)) from error
        plans_file = preprocessed / f"{plans_identifier}.json"
        if not plans_file.is_file():
            raise PreprocessedSpaceError(
                f"{plans_file} not found: run `nnUNetv2_plan_and_preprocess -d {dataset} -c {configuration}` first"
            )
        plans_manager = PlansManager(str(plans_file))
        if configuration not in plans_manager.available_configurations:
            raise PreprocessedSpaceError(
                f"configuration {configuration!r} is not in {plans_file.name} "
                f"(has {plans_manager.available_configurations})"
            )
        configuration_manager = plans_manager.get_configuration(configuration)
        for scheme in configuration_manager.normalization_schemes:
            if scheme not in SUPPORTED_NORMALIZATION:
                raise PreprocessedSpaceError(
                    f"normalization {scheme} of configuration {configuration} is not supported for DCE-MRI "
                    f"(supported: {SUPPORTED_NORMALIZATION})"
                )
        dataset_json = json.loads((preprocessed / "dataset.json").read_text())
        return cls(name, configuration, plans_identifier, preprocessed, plans_manager, configuration_manager,
                   dataset_json)

    @property
    def raw_folder(self) -> Path:
        """``nnUNet_raw/DatasetXXX_Name`` (where the post-contrast phases are)."""
        try:
            return dataset_folder("nnUNet_raw", self.name)
        except DatasetLocationError as error:
            raise PreprocessedSpaceError(str(error)) from error

    @property
    def dkm_folder(self) -> Path:
        """``nnUNet_preprocessed/DatasetXXX_Name/dkm/<configuration>/``."""
        return dkm_folder(self.preprocessed_folder, self.configuration)

    @property
    def dm_checkpoint(self) -> DmCheckpointLocation:
        """Where this configuration's (kinetic) DM checkpoint is read and written."""
        return dm_checkpoint_location(self.preprocessed_folder, self.configuration)

    def dm_checkpoint_of(self, objective: str) -> DmCheckpointLocation:
        """Where this configuration's DM of ``objective`` (kinetic, pre-only, regression) is read and written."""
        return dm_checkpoint_location(self.preprocessed_folder, self.configuration, objective)

    @property
    def spatial_dims(self) -> int:
        """2 for ``2d``, 3 for 3D configurations."""
        return len(self.configuration_manager.patch_size)

    @property
    def file_ending(self) -> str:
        return str(self.dataset_json.get("file_ending", ".nii.gz"))

    def pretrain_command(self) -> str:
        """The command that pretrains this configuration's DM."""
        return pretrain_command(self.name, self.configuration, self.plans_identifier)
