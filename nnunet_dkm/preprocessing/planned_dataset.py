"""A dataset that nnU-Net has planned, for one configuration: its folders, plans and ``dataset.json``, loaded once.

Everything that works in nnU-Net's preprocessed space (DM pretraining and its cache, synthetic post-contrast images,
the feature probe) starts from one :class:`PlannedDataset` instead of looking up folders and plans itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.paths import (
    DatasetLocationError,
    DmCheckpointLocation,
    dataset_folder,
    dataset_name,
    dkm_folder,
    existing_dm_checkpoint,
    pretrain_command,
)

SUPPORTED_NORMALIZATION = ("ZScoreNormalization", "NoNormalization")
# Entries of the resolved configuration that decide what the DM's input looks like.
_CONFIGURATION_ENTRIES = (
    "patch_size",
    "spacing",
    "normalization_schemes",
    "use_mask_for_norm",
    "resampling_fn_data",
    "resampling_fn_data_kwargs",
    "preprocessor_name",
)
# Plans-level entries with the same role (axis order, image reader).
_PLANS_ENTRIES = ("transpose_forward", "image_reader_writer")
# Normalisation schemes whose output depends on the dataset fingerprint's intensity statistics.
_FINGERPRINT_DEPENDENT_NORMALIZATIONS = ("CTNormalization",)


class PreprocessedSpaceError(NnunetDkmError):
    """The dataset, plans or configuration cannot be used; the message says what to run."""


def _json_normalised(value: Any) -> Any:
    """Tuples to lists, numpy scalars to Python numbers: the form the value takes after a JSON round trip."""
    return json.loads(json.dumps(value, default=lambda obj: obj.item() if hasattr(obj, "item") else str(obj)))


def plans_identity(plans: Mapping[str, Any], configuration: str) -> dict[str, Any]:
    """What identifies the preprocessed space a DM was trained in.

    Args:
        plans: the content of an nnU-Net plans file (e.g. ``nnUNetPlans.json``).
        configuration: configuration name, e.g. "2d"; inheritance ("inherits_from") is resolved with nnU-Net's
            ``PlansManager``.

    Returns:
        JSON-compatible dict: ``dataset_name``, ``plans_name``, ``configuration``, ``preprocessing`` (the resolved
        entries that decide the DM's input: patch size, spacing, normalisation, resampling, axis transpose, image
        reader; plus the fingerprint's intensity properties when a CT-style normalisation uses them) and
        ``preprocessing_sha256``, a hash of ``preprocessing``.
    """
    for key in ("dataset_name", "plans_name", "configurations"):
        if key not in plans:
            raise PreprocessedSpaceError(f"nnU-Net plans lack the entry {key!r}; is this a plans file?")
    if configuration not in plans["configurations"]:
        raise PreprocessedSpaceError(
            f"configuration {configuration!r} is not in plans {plans['plans_name']!r} of {plans['dataset_name']}; "
            f"available: {sorted(plans['configurations'])}"
        )
    resolved = PlansManager(dict(plans)).get_configuration(configuration).configuration
    preprocessing: dict[str, Any] = {key: resolved.get(key) for key in _CONFIGURATION_ENTRIES}
    preprocessing.update({key: plans.get(key) for key in _PLANS_ENTRIES})
    if any(s in _FINGERPRINT_DEPENDENT_NORMALIZATIONS for s in resolved.get("normalization_schemes") or ()):
        preprocessing["foreground_intensity_properties_per_channel"] = plans.get(
            "foreground_intensity_properties_per_channel"
        )
    preprocessing = _json_normalised(preprocessing)
    canonical = json.dumps(preprocessing, sort_keys=True, separators=(",", ":"))
    return {
        "dataset_name": str(plans["dataset_name"]),
        "plans_name": str(plans["plans_name"]),
        "configuration": configuration,
        "preprocessing": preprocessing,
        "preprocessing_sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
    }


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

    def existing_dm_checkpoint(self, error: type[NnunetDkmError], objective: str = "kinetic") -> DmCheckpointLocation:
        """This configuration's DM of ``objective``, which must exist (else ``error`` names the pretraining command)."""
        return existing_dm_checkpoint(self.preprocessed_folder, self.name, self.configuration, self.plans_identifier,
                                      objective, error)

    @property
    def spatial_dims(self) -> int:
        """2 for ``2d``, 3 for 3D configurations."""
        return len(self.configuration_manager.patch_size)

    @property
    def file_ending(self) -> str:
        return str(self.dataset_json.get("file_ending", ".nii.gz"))

    def plans_identity(self) -> dict[str, Any]:
        """:func:`plans_identity` of this configuration: what a DM checkpoint or the DM cache records."""
        return plans_identity(self.plans_manager.plans, self.configuration)

    def pretrain_command(self) -> str:
        """The command that pretrains this configuration's DM."""
        return pretrain_command(self.name, self.configuration, self.plans_identifier)
