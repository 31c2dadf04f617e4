"""Short training schedules for CPUs, tests and the demo: fewer epochs AND fewer iterations per epoch.

| suffix | epochs | iterations / epoch | validation iterations |
|---|---|---|---|
| ``_debug`` | 2 | 4 | 2 |
| ``_demo`` | 10 | 12 | 2 |

Every trainer of this package has both, written out below so that a name in a log can be found with grep. The
vanilla baselines are thin subclasses of nnU-Net's own ``nnUNetTrainer`` (never a copy), so DKM and vanilla train
for exactly the same number of steps.
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_dkm.training.nnUNetTrainerDKM import DEFAULT_DEVICE, nnUNetTrainerDKM
from nnunet_dkm.training.variants.controls import (
    nnUNetTrainerDKM_preOnlyDM,
    nnUNetTrainerDKM_regressionDM,
    nnUNetTrainerDKM_untrainedDM,
)
from nnunet_dkm.training.variants.extraction_modes import (
    nnUNetTrainerDKM_encoder,
    nnUNetTrainerDKM_modeB,
    nnUNetTrainerDKM_modeC,
)
from nnunet_dkm.training.variants.feature_levels import (
    nnUNetTrainerDKM_f1,
    nnUNetTrainerDKM_f2,
    nnUNetTrainerDKM_f3,
    nnUNetTrainerDKM_f4,
    nnUNetTrainerDKM_f12,
    nnUNetTrainerDKM_f13,
    nnUNetTrainerDKM_f14,
    nnUNetTrainerDKM_f23,
    nnUNetTrainerDKM_f24,
    nnUNetTrainerDKM_f34,
    nnUNetTrainerDKM_f123,
    nnUNetTrainerDKM_f124,
    nnUNetTrainerDKM_f134,
    nnUNetTrainerDKM_f234,
    nnUNetTrainerDKM_f1234,
)
from nnunet_dkm.training.variants.fusion import nnUNetTrainerDKM_merge3x3
from nnunet_dkm.training.variants.paper import nnUNetTrainerDKMPaper
from nnunet_dkm.training.variants.precision import nnUNetTrainerDKM_bf16


class ShortSchedule:
    """Mixin: after the base trainer's ``__init__``, train for ``schedule`` = (epochs, iterations per epoch,
    validation iterations per epoch)."""

    schedule: tuple[int, int, int]

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = DEFAULT_DEVICE):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = self.schedule


class DebugSchedule(ShortSchedule):
    """2 epochs of 4 iterations (2 validation iterations): for tests."""

    schedule = (2, 4, 2)


class DemoSchedule(ShortSchedule):
    """10 epochs of 12 iterations (2 validation iterations): for ``make demo`` on a 2-core CPU."""

    schedule = (10, 12, 2)


class TwoEpochSchedule(ShortSchedule):
    """2 epochs of nnU-Net's 250 iterations (and 50 validation iterations), between nnU-Net's own ``_1epoch`` and
    ``_5epochs``."""

    schedule = (2, 250, 50)


SCHEDULES: dict[str, type[ShortSchedule]] = {"debug": DebugSchedule, "demo": DemoSchedule}


class nnUNetTrainer_debug(DebugSchedule, nnUNetTrainer):
    """nnU-Net's own nnUNetTrainer, debug schedule."""


class nnUNetTrainer_demo(DemoSchedule, nnUNetTrainer):
    """nnU-Net's own nnUNetTrainer, demo schedule."""


class nnUNetTrainer_2epochs(TwoEpochSchedule, nnUNetTrainer):
    """nnU-Net's own nnUNetTrainer, 2 epochs of 250 iterations (nnU-Net ships 1, 5, 10, ... epochs)."""


class nnUNetTrainerDKM_debug(DebugSchedule, nnUNetTrainerDKM):
    """nnUNetTrainerDKM, debug schedule."""


class nnUNetTrainerDKM_demo(DemoSchedule, nnUNetTrainerDKM):
    """nnUNetTrainerDKM, demo schedule."""


class nnUNetTrainerDKM_untrainedDM_debug(DebugSchedule, nnUNetTrainerDKM_untrainedDM):
    """nnUNetTrainerDKM_untrainedDM, debug schedule."""


class nnUNetTrainerDKM_untrainedDM_demo(DemoSchedule, nnUNetTrainerDKM_untrainedDM):
    """nnUNetTrainerDKM_untrainedDM, demo schedule."""


class nnUNetTrainerDKM_encoder_debug(DebugSchedule, nnUNetTrainerDKM_encoder):
    """nnUNetTrainerDKM_encoder, debug schedule."""


class nnUNetTrainerDKM_encoder_demo(DemoSchedule, nnUNetTrainerDKM_encoder):
    """nnUNetTrainerDKM_encoder, demo schedule."""


class nnUNetTrainerDKM_modeB_debug(DebugSchedule, nnUNetTrainerDKM_modeB):
    """nnUNetTrainerDKM_modeB, debug schedule."""


class nnUNetTrainerDKM_modeB_demo(DemoSchedule, nnUNetTrainerDKM_modeB):
    """nnUNetTrainerDKM_modeB, demo schedule."""


class nnUNetTrainerDKM_modeC_debug(DebugSchedule, nnUNetTrainerDKM_modeC):
    """nnUNetTrainerDKM_modeC, debug schedule."""


class nnUNetTrainerDKM_modeC_demo(DemoSchedule, nnUNetTrainerDKM_modeC):
    """nnUNetTrainerDKM_modeC, demo schedule."""


class nnUNetTrainerDKM_f1_debug(DebugSchedule, nnUNetTrainerDKM_f1):
    """nnUNetTrainerDKM_f1, debug schedule."""


class nnUNetTrainerDKM_f1_demo(DemoSchedule, nnUNetTrainerDKM_f1):
    """nnUNetTrainerDKM_f1, demo schedule."""


class nnUNetTrainerDKM_f2_debug(DebugSchedule, nnUNetTrainerDKM_f2):
    """nnUNetTrainerDKM_f2, debug schedule."""


class nnUNetTrainerDKM_f2_demo(DemoSchedule, nnUNetTrainerDKM_f2):
    """nnUNetTrainerDKM_f2, demo schedule."""


class nnUNetTrainerDKM_f3_debug(DebugSchedule, nnUNetTrainerDKM_f3):
    """nnUNetTrainerDKM_f3, debug schedule."""


class nnUNetTrainerDKM_f3_demo(DemoSchedule, nnUNetTrainerDKM_f3):
    """nnUNetTrainerDKM_f3, demo schedule."""


class nnUNetTrainerDKM_f4_debug(DebugSchedule, nnUNetTrainerDKM_f4):
    """nnUNetTrainerDKM_f4, debug schedule."""


class nnUNetTrainerDKM_f4_demo(DemoSchedule, nnUNetTrainerDKM_f4):
    """nnUNetTrainerDKM_f4, demo schedule."""


class nnUNetTrainerDKM_f12_debug(DebugSchedule, nnUNetTrainerDKM_f12):
    """nnUNetTrainerDKM_f12, debug schedule."""


class nnUNetTrainerDKM_f12_demo(DemoSchedule, nnUNetTrainerDKM_f12):
    """nnUNetTrainerDKM_f12, demo schedule."""


class nnUNetTrainerDKM_f13_debug(DebugSchedule, nnUNetTrainerDKM_f13):
    """nnUNetTrainerDKM_f13, debug schedule."""


class nnUNetTrainerDKM_f13_demo(DemoSchedule, nnUNetTrainerDKM_f13):
    """nnUNetTrainerDKM_f13, demo schedule."""


class nnUNetTrainerDKM_f14_debug(DebugSchedule, nnUNetTrainerDKM_f14):
    """nnUNetTrainerDKM_f14, debug schedule."""


class nnUNetTrainerDKM_f14_demo(DemoSchedule, nnUNetTrainerDKM_f14):
    """nnUNetTrainerDKM_f14, demo schedule."""


class nnUNetTrainerDKM_f23_debug(DebugSchedule, nnUNetTrainerDKM_f23):
    """nnUNetTrainerDKM_f23, debug schedule."""


class nnUNetTrainerDKM_f23_demo(DemoSchedule, nnUNetTrainerDKM_f23):
    """nnUNetTrainerDKM_f23, demo schedule."""


class nnUNetTrainerDKM_f24_debug(DebugSchedule, nnUNetTrainerDKM_f24):
    """nnUNetTrainerDKM_f24, debug schedule."""


class nnUNetTrainerDKM_f24_demo(DemoSchedule, nnUNetTrainerDKM_f24):
    """nnUNetTrainerDKM_f24, demo schedule."""


class nnUNetTrainerDKM_f34_debug(DebugSchedule, nnUNetTrainerDKM_f34):
    """nnUNetTrainerDKM_f34, debug schedule."""


class nnUNetTrainerDKM_f34_demo(DemoSchedule, nnUNetTrainerDKM_f34):
    """nnUNetTrainerDKM_f34, demo schedule."""


class nnUNetTrainerDKM_f123_debug(DebugSchedule, nnUNetTrainerDKM_f123):
    """nnUNetTrainerDKM_f123, debug schedule."""


class nnUNetTrainerDKM_f123_demo(DemoSchedule, nnUNetTrainerDKM_f123):
    """nnUNetTrainerDKM_f123, demo schedule."""


class nnUNetTrainerDKM_f124_debug(DebugSchedule, nnUNetTrainerDKM_f124):
    """nnUNetTrainerDKM_f124, debug schedule."""


class nnUNetTrainerDKM_f124_demo(DemoSchedule, nnUNetTrainerDKM_f124):
    """nnUNetTrainerDKM_f124, demo schedule."""


class nnUNetTrainerDKM_f134_debug(DebugSchedule, nnUNetTrainerDKM_f134):
    """nnUNetTrainerDKM_f134, debug schedule."""


class nnUNetTrainerDKM_f134_demo(DemoSchedule, nnUNetTrainerDKM_f134):
    """nnUNetTrainerDKM_f134, demo schedule."""


class nnUNetTrainerDKM_f234_debug(DebugSchedule, nnUNetTrainerDKM_f234):
    """nnUNetTrainerDKM_f234, debug schedule."""


class nnUNetTrainerDKM_f234_demo(DemoSchedule, nnUNetTrainerDKM_f234):
    """nnUNetTrainerDKM_f234, demo schedule."""


class nnUNetTrainerDKM_f1234_debug(DebugSchedule, nnUNetTrainerDKM_f1234):
    """nnUNetTrainerDKM_f1234, debug schedule."""


class nnUNetTrainerDKM_f1234_demo(DemoSchedule, nnUNetTrainerDKM_f1234):
    """nnUNetTrainerDKM_f1234, demo schedule."""


class nnUNetTrainerDKM_merge3x3_debug(DebugSchedule, nnUNetTrainerDKM_merge3x3):
    """nnUNetTrainerDKM_merge3x3, debug schedule."""


class nnUNetTrainerDKM_merge3x3_demo(DemoSchedule, nnUNetTrainerDKM_merge3x3):
    """nnUNetTrainerDKM_merge3x3, demo schedule."""


class nnUNetTrainerDKMPaper_debug(DebugSchedule, nnUNetTrainerDKMPaper):
    """nnUNetTrainerDKMPaper, debug schedule."""


class nnUNetTrainerDKMPaper_demo(DemoSchedule, nnUNetTrainerDKMPaper):
    """nnUNetTrainerDKMPaper, demo schedule."""


class nnUNetTrainerDKM_bf16_debug(DebugSchedule, nnUNetTrainerDKM_bf16):
    """nnUNetTrainerDKM_bf16, debug schedule."""


class nnUNetTrainerDKM_bf16_demo(DemoSchedule, nnUNetTrainerDKM_bf16):
    """nnUNetTrainerDKM_bf16, demo schedule."""


class nnUNetTrainerDKM_preOnlyDM_debug(DebugSchedule, nnUNetTrainerDKM_preOnlyDM):
    """nnUNetTrainerDKM_preOnlyDM, debug schedule."""


class nnUNetTrainerDKM_preOnlyDM_demo(DemoSchedule, nnUNetTrainerDKM_preOnlyDM):
    """nnUNetTrainerDKM_preOnlyDM, demo schedule."""


class nnUNetTrainerDKM_regressionDM_debug(DebugSchedule, nnUNetTrainerDKM_regressionDM):
    """nnUNetTrainerDKM_regressionDM, debug schedule."""


class nnUNetTrainerDKM_regressionDM_demo(DemoSchedule, nnUNetTrainerDKM_regressionDM):
    """nnUNetTrainerDKM_regressionDM, demo schedule."""
