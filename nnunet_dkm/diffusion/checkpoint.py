"""DM checkpoint file: weights, full network config, schedule, input scaling and the nnU-Net plans it belongs to.

One ``torch.save`` file holding only plain Python types and tensors (loadable with ``weights_only=True``)::

    {
        "format": "nnunet_dkm.diffusion_module", "format_version": 1,
        "config": DiffusionConfig.to_dict(),            # network + schedule + prediction type
        "input_scaling": {"scale": ..., "offset": ...},
        "plans_identity": plans_identity(plans, configuration),
        "weights": state_dict,                          # EMA weights where EMA was used
        "weights_are_ema": bool,
        "metadata": {...},                              # free-form, JSON-like (e.g. training summary)
        "training_state": {...} or None,                # optional, for resuming: e.g. "step", "optimizer",
                                                        # "raw_weights" (non-EMA), "rng"; read back untouched
    }

``metadata`` and ``training_state`` must hold what ``torch.load(weights_only=True)`` accepts: dicts, lists,
tuples, strings, numbers, booleans, None and tensors (convert numpy arrays / RNG states to tensors first).

The network is rebuilt from the file alone (``load_network``); a checkpoint made for other plans is refused with a
message naming the differing field and the command that makes the right one (``check_plans_identity``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import DiffusionModelUNet

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.diffusion.config import OBJECTIVES, DiffusionConfig, DiffusionConfigError, InputScaling
from nnunet_dkm.diffusion.network import build_network
from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.paths import DM_CHECKPOINT_ENV, DM_CHECKPOINT_NAME, dm_checkpoint_name, pretrain_command
from nnunet_dkm.preprocessing.planned_dataset import plans_identity

CHECKPOINT_FORMAT = "nnunet_dkm.diffusion_module"
CHECKPOINT_FORMAT_VERSION = 1


class DiffusionCheckpointError(NnunetDkmError, RuntimeError):
    """A DM checkpoint is missing, unreadable or inconsistent; the message names the file and the problem."""


def check_plans_identity(checkpoint_identity: Mapping[str, Any], plans: Mapping[str, Any], configuration: str,
                         checkpoint_path: str | Path | None = None) -> None:
    """Refuse a DM checkpoint made for other plans than ``plans`` / ``configuration``.

    Args:
        checkpoint_identity: the ``plans_identity`` stored in the checkpoint.
        plans: the plans in use (content of the plans file).
        configuration: the configuration in use.
        checkpoint_path: the checkpoint's file, named in the error message.

    Raises:
        DiffusionCheckpointError: naming every differing field with both values, and the command to pretrain a DM for
            the plans in use.
    """
    current = plans_identity(plans, configuration)
    differences = [
        f"{key}: checkpoint {checkpoint_identity.get(key)!r}, in use {current[key]!r}"
        for key in ("dataset_name", "plans_name", "configuration")
        if checkpoint_identity.get(key) != current[key]
    ]
    stored_preprocessing = checkpoint_identity.get("preprocessing") or {}
    for key in sorted(set(stored_preprocessing) | set(current["preprocessing"])):
        stored, in_use = stored_preprocessing.get(key), current["preprocessing"].get(key)
        if stored != in_use:
            differences.append(f"{key}: checkpoint {stored!r}, in use {in_use!r}")
    if not differences and checkpoint_identity.get("preprocessing_sha256") != current["preprocessing_sha256"]:
        differences.append(
            f"preprocessing_sha256: checkpoint {checkpoint_identity.get('preprocessing_sha256')!r}, "
            f"in use {current['preprocessing_sha256']!r}"
        )
    if differences:
        source = f"DM checkpoint {checkpoint_path}" if checkpoint_path is not None else "The DM checkpoint"
        raise DiffusionCheckpointError(
            f"{source} was pretrained for other nnU-Net plans than {current['dataset_name']} / "
            f"{current['plans_name']} / configuration {current['configuration']}:\n  - "
            + "\n  - ".join(differences)
            + "\nPretrain a DM for these plans with: "
            + pretrain_command(current["dataset_name"], configuration, current["plans_name"])
        )


@dataclass
class DiffusionCheckpoint:
    """Everything needed to rebuild and use a pretrained DM.

    Attributes:
        config: network and schedule.
        weights: network ``state_dict`` (the EMA weights where EMA was used).
        input_scaling: affine from nnU-Net-normalised intensities to the DM's input range.
        plans_identity: ``plans_identity(plans, configuration)`` of the preprocessed space it was trained in.
        weights_are_ema: whether ``weights`` are an exponential moving average.
        metadata: free-form, JSON-like information (training summary, data used, ...).
        training_state: optional state for resuming (optimiser, step, raw weights, ...), stored and returned as is.
    """

    config: DiffusionConfig
    weights: dict[str, torch.Tensor]
    input_scaling: InputScaling
    plans_identity: dict[str, Any]
    weights_are_ema: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    training_state: dict[str, Any] | None = None

    def build_network(self, source: str | Path | None = None) -> DiffusionModelUNet:
        """The network with these weights loaded, in eval mode, on the device the weights are on."""
        network = build_network(self.config)
        first_weight = next(iter(self.weights.values()), None)
        if isinstance(first_weight, torch.Tensor):
            network.to(first_weight.device)
        try:
            network.load_state_dict(self.weights, strict=True)
        except RuntimeError as error:
            where = f"{source}: " if source is not None else ""
            raise DiffusionCheckpointError(f"{where}weights do not fit the recorded network config: {error}") from error
        return network.eval()

    def pretraining_steps(self) -> tuple[int, int] | None:
        """(steps trained, steps of its recipe) as ``nnUNetv2_dkm_pretrain`` recorded them; None for a checkpoint
        that records neither (made outside it)."""
        steps = self.metadata.get("steps")
        planned = (self.metadata.get("recipe") or {}).get("steps")
        if not isinstance(steps, int) or not isinstance(planned, int):
            return None
        return steps, planned

    @property
    def stopped_early(self) -> bool:
        """Whether pretraining stopped before its recipe's steps (SIGINT / SIGTERM, or ``--max-minutes``)."""
        progress = self.pretraining_steps()
        return progress is not None and progress[0] < progress[1]

    def steps_description(self) -> str:
        """The pretraining's length for logs and reports, e.g. ``8000 pretraining steps`` or ``2400 of its recipe's
        8000 pretraining steps (stopped early)``."""
        progress = self.pretraining_steps()
        if progress is None:
            return f"{self.metadata.get('steps', '?')} pretraining steps"
        if self.stopped_early:
            return f"{progress[0]} of its recipe's {progress[1]} pretraining steps (stopped early)"
        return f"{progress[0]} pretraining steps"

    def to_payload(self) -> dict[str, Any]:
        """The dict written to disk (see the module docstring)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "input_scaling": self.input_scaling.to_dict(),
            "plans_identity": dict(self.plans_identity),
            "weights": dict(self.weights),
            "weights_are_ema": bool(self.weights_are_ema),
            "metadata": dict(self.metadata),
            "training_state": self.training_state,
        }

    @classmethod
    def from_payload(cls, payload: Any, source: str | Path) -> DiffusionCheckpoint:
        """Validate a loaded payload and turn it into a checkpoint; errors name ``source``."""
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise DiffusionCheckpointError(
                f"{source}: not an nnunet-dkm DM checkpoint (no format {CHECKPOINT_FORMAT!r})"
            )
        version = payload.get("format_version")
        if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
            raise DiffusionCheckpointError(
                f"{source}: checkpoint format version {version!r} is newer than this nnunet-dkm reads "
                f"({CHECKPOINT_FORMAT_VERSION}); update nnunet-dkm"
            )
        missing = [key for key in ("config", "input_scaling", "plans_identity", "weights") if key not in payload]
        if missing:
            raise DiffusionCheckpointError(f"{source}: checkpoint lacks {missing}")
        try:
            config = DiffusionConfig.from_dict(payload["config"])
            input_scaling = InputScaling.from_dict(payload["input_scaling"])
        except (DiffusionConfigError, KeyError, TypeError, ValueError) as error:
            raise DiffusionCheckpointError(f"{source}: unreadable config or input scaling: {error}") from error
        return cls(config=config, weights=payload["weights"], input_scaling=input_scaling,
                   plans_identity=payload["plans_identity"],
                   weights_are_ema=bool(payload.get("weights_are_ema", False)), metadata=payload.get("metadata") or {},
                   training_state=payload.get("training_state"))


def save_checkpoint(checkpoint: DiffusionCheckpoint, path: str | Path) -> Path:
    """Write atomically (a temporary file in the target folder, then a rename onto ``path``), with the user's
    normal file permissions. An interrupted save leaves any previous file at ``path`` intact. Parent folders are
    created."""

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as stream:
            try:
                torch.save(checkpoint.to_payload(), stream)
            except RuntimeError as error:  # torch's zip writer reports a failed write (e.g. a full disk) this way
                raise DiffusionCheckpointError(
                    f"{path}: the DM checkpoint could not be written ({str(error).strip().splitlines()[0]}); is its "
                    f"disk full? Free some space, or choose another place with ${DM_CHECKPOINT_ENV}") from error
            stream.flush()
            os.fsync(stream.fileno())

    return write_atomically(Path(path), write)


def remake_dm_command(checkpoint_path: Path) -> str:
    """The command that makes a DM checkpoint in place of an unusable file at ``checkpoint_path``.

    Only a file where pretraining writes is to be replaced (``--overwrite``): the default layout
    (``<preprocessed>/DatasetXXX_Name/dkm/<configuration>/dm_checkpoint[_<objective>].pt``, whose dataset,
    configuration and objective the command names) or ``$nnUNet_dkm_checkpoint``. Any other file (e.g. an nnU-Net
    model checkpoint given to ``-chk`` by mistake) is left alone: the command makes a DM in the dataset's default place.
    """
    path = Path(checkpoint_path)
    objective_by_file_name = {dm_checkpoint_name(objective): objective for objective in OBJECTIVES}
    dataset_folder_name = path.parent.parent.parent.name
    if (path.name in objective_by_file_name and path.parent.parent.name == "dkm"
            and dataset_folder_name.startswith("Dataset")):
        try:
            return pretrain_command(dataset_folder_name, path.parent.name,
                                    objective=objective_by_file_name[path.name]) + " --overwrite"
        except ValueError:
            pass  # not an nnU-Net dataset name after all
    command = "nnUNetv2_dkm_pretrain -d DATASET -c CONFIGURATION"
    override = os.environ.get(DM_CHECKPOINT_ENV)
    if override and Path(override) == path:
        return f"{command} --overwrite (it writes to ${DM_CHECKPOINT_ENV})"
    return f"{command} (it writes nnUNet_preprocessed/DatasetXXX_Name/dkm/CONFIGURATION/{DM_CHECKPOINT_NAME})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> DiffusionCheckpoint:
    """Read a checkpoint written by ``save_checkpoint`` (tensors mapped to ``map_location``).

    A file torch cannot load (cut short, corrupt, not a torch file) is refused as "not a DM checkpoint
    (unreadable)" with the command that makes a new one, not with torch's advice to load it with
    ``weights_only=False`` (that advice is for trusted pickles; a damaged file stays damaged).
    """
    path = Path(path)
    if not path.is_file():
        raise DiffusionCheckpointError(f"{path}: no DM checkpoint there")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise  # the file may be fine; the command line names the path and the permission problem
    except Exception as error:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, OSError, ...)
        raise DiffusionCheckpointError(f"not a DM checkpoint (unreadable): {path}. Make a new one with: "
                                       f"{remake_dm_command(path)}") from error
    return DiffusionCheckpoint.from_payload(payload, path)


def load_network(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[DiffusionModelUNet, DiffusionCheckpoint]:
    """Rebuild the DM from its checkpoint file alone: (network in eval mode, the checkpoint)."""
    checkpoint = load_checkpoint(path, map_location)
    return checkpoint.build_network(source=path), checkpoint
