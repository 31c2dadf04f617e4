"""nnUNetTrainerDKM and its variants, plus short vanilla nnUNetTrainer schedules (see ``variants/``)."""

from nnunet_dkm.training.nnUNetTrainerDKM import DkmSetupError, nnUNetTrainerDKM
from nnunet_dkm.training.variants.ablations import VARIANTS
from nnunet_dkm.training.variants.short_schedules import nnUNetTrainer_debug, nnUNetTrainer_demo

TRAINERS = {"nnUNetTrainerDKM": nnUNetTrainerDKM, "nnUNetTrainer_debug": nnUNetTrainer_debug,
            "nnUNetTrainer_demo": nnUNetTrainer_demo, **VARIANTS}
globals().update(TRAINERS)
__all__ = ["DkmSetupError", "TRAINERS", *sorted(TRAINERS)]
