"""nnUNetTrainerDKM, its variants (``variants/``, one idea per file) and the short vanilla nnUNetTrainer schedules.

``TRAINERS`` maps every trainer name a user can pass to ``-tr`` to its class; the ``nnUNet_extTrainer`` shim looks
names up here.
"""

from __future__ import annotations

from types import ModuleType

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_dkm.training import nnUNetTrainerDKM as base
from nnunet_dkm.training.nnUNetTrainerDKM import DkmSetupError
from nnunet_dkm.training.variants import (
    controls,
    extraction_modes,
    feature_levels,
    fusion,
    paper,
    precision,
    short_schedules,
)

TRAINER_MODULES: tuple[ModuleType, ...] = (base, feature_levels, extraction_modes, controls, precision, fusion, paper,
                                          short_schedules)


def _trainers_of(module: ModuleType) -> dict[str, type[nnUNetTrainer]]:
    """The nnU-Net trainer classes a module defines (not those it imports)."""
    return {name: value for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, nnUNetTrainer) and value.__module__ == module.__name__}


TRAINERS: dict[str, type[nnUNetTrainer]] = {name: cls for module in TRAINER_MODULES
                                            for name, cls in _trainers_of(module).items()}

__all__ = ["TRAINERS", "DkmSetupError"]
