"""Short training schedules for CPUs, tests and the demo: fewer epochs AND fewer iterations per epoch.

| suffix | epochs | iterations / epoch | validation iterations |
|---|---|---|---|
| ``_debug`` | 2 | 4 | 2 |
| ``_demo`` | 10 | 12 | 2 |
| ``_1epoch`` | 1 | 250 | 50 |
| ``_2epochs`` | 2 | 250 | 50 |

Written out below, so that a name in a log can be found with grep: the trainers ``nnUNetv2_dkm_benchmark --schedule
debug|demo`` trains (vanilla, DKM, the untrained-DM control and the ``--ablation`` default levels 1, 2, 3, 4, 1234)
and ``nnUNetTrainerDKMPaper_debug`` (tests). The vanilla baselines are thin subclasses of nnU-Net's own
``nnUNetTrainer`` (never a copy), so DKM and vanilla train for exactly the same number of steps; nnU-Net itself ships
vanilla ``nnUNetTrainer_1epoch``, ``_5epochs`` and ``_10epochs``.
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
from nnunet_dkm.training.variants.feature_levels import (
    nnUNetTrainerDKM_f1,
    nnUNetTrainerDKM_f2,
    nnUNetTrainerDKM_f3,
    nnUNetTrainerDKM_f4,
    nnUNetTrainerDKM_f1234,
)
from nnunet_dkm.training.variants.paper import nnUNetTrainerDKMPaper


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


class OneEpochSchedule(ShortSchedule):
    """1 epoch of nnU-Net's 250 iterations (and 50 validation iterations): nnU-Net's own ``nnUNetTrainer_1epoch``
    for the DKM trainers; the schedule of the regime study (``benchmarks/results_regime_map.md``)."""

    schedule = (1, 250, 50)


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


class nnUNetTrainerDKM_f1234_debug(DebugSchedule, nnUNetTrainerDKM_f1234):
    """nnUNetTrainerDKM_f1234, debug schedule."""


class nnUNetTrainerDKM_f1234_demo(DemoSchedule, nnUNetTrainerDKM_f1234):
    """nnUNetTrainerDKM_f1234, demo schedule."""


class nnUNetTrainerDKMPaper_debug(DebugSchedule, nnUNetTrainerDKMPaper):
    """nnUNetTrainerDKMPaper, debug schedule."""


class nnUNetTrainerDKM_preOnlyDM_debug(DebugSchedule, nnUNetTrainerDKM_preOnlyDM):
    """nnUNetTrainerDKM_preOnlyDM, debug schedule."""


class nnUNetTrainerDKM_preOnlyDM_demo(DemoSchedule, nnUNetTrainerDKM_preOnlyDM):
    """nnUNetTrainerDKM_preOnlyDM, demo schedule."""


class nnUNetTrainerDKM_regressionDM_debug(DebugSchedule, nnUNetTrainerDKM_regressionDM):
    """nnUNetTrainerDKM_regressionDM, debug schedule."""


class nnUNetTrainerDKM_regressionDM_demo(DemoSchedule, nnUNetTrainerDKM_regressionDM):
    """nnUNetTrainerDKM_regressionDM, demo schedule."""


class nnUNetTrainerDKM_1epoch(OneEpochSchedule, nnUNetTrainerDKM):
    """nnUNetTrainerDKM, 1 epoch of 250 iterations (nnU-Net's nnUNetTrainer_1epoch is the vanilla one)."""


class nnUNetTrainerDKM_untrainedDM_1epoch(OneEpochSchedule, nnUNetTrainerDKM_untrainedDM):
    """nnUNetTrainerDKM_untrainedDM, 1 epoch of 250 iterations."""


class nnUNetTrainerDKM_preOnlyDM_1epoch(OneEpochSchedule, nnUNetTrainerDKM_preOnlyDM):
    """nnUNetTrainerDKM_preOnlyDM, 1 epoch of 250 iterations."""


class nnUNetTrainerDKM_regressionDM_1epoch(OneEpochSchedule, nnUNetTrainerDKM_regressionDM):
    """nnUNetTrainerDKM_regressionDM, 1 epoch of 250 iterations."""
