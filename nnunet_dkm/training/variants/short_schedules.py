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
    schedule = (2, 4, 2)  # for tests


class DemoSchedule(ShortSchedule):
    schedule = (10, 12, 2)  # for make demo on a 2-core CPU


class OneEpochSchedule(ShortSchedule):
    schedule = (1, 250, 50)  # nnU-Net's nnUNetTrainer_1epoch for the DKM trainers; the regime study's schedule


class TwoEpochSchedule(ShortSchedule):
    schedule = (2, 250, 50)  # between nnU-Net's own _1epoch and _5epochs


# nnU-Net's own nnUNetTrainer (nnU-Net ships _1epoch, _5epochs, _10epochs, ...)
class nnUNetTrainer_debug(DebugSchedule, nnUNetTrainer): ...
class nnUNetTrainer_demo(DemoSchedule, nnUNetTrainer): ...
class nnUNetTrainer_2epochs(TwoEpochSchedule, nnUNetTrainer): ...


# DKM and its controls and ablations
class nnUNetTrainerDKM_debug(DebugSchedule, nnUNetTrainerDKM): ...
class nnUNetTrainerDKM_demo(DemoSchedule, nnUNetTrainerDKM): ...
class nnUNetTrainerDKM_1epoch(OneEpochSchedule, nnUNetTrainerDKM): ...
class nnUNetTrainerDKM_untrainedDM_debug(DebugSchedule, nnUNetTrainerDKM_untrainedDM): ...
class nnUNetTrainerDKM_untrainedDM_demo(DemoSchedule, nnUNetTrainerDKM_untrainedDM): ...
class nnUNetTrainerDKM_untrainedDM_1epoch(OneEpochSchedule, nnUNetTrainerDKM_untrainedDM): ...
class nnUNetTrainerDKM_preOnlyDM_debug(DebugSchedule, nnUNetTrainerDKM_preOnlyDM): ...
class nnUNetTrainerDKM_preOnlyDM_demo(DemoSchedule, nnUNetTrainerDKM_preOnlyDM): ...
class nnUNetTrainerDKM_preOnlyDM_1epoch(OneEpochSchedule, nnUNetTrainerDKM_preOnlyDM): ...
class nnUNetTrainerDKM_regressionDM_debug(DebugSchedule, nnUNetTrainerDKM_regressionDM): ...
class nnUNetTrainerDKM_regressionDM_demo(DemoSchedule, nnUNetTrainerDKM_regressionDM): ...
class nnUNetTrainerDKM_regressionDM_1epoch(OneEpochSchedule, nnUNetTrainerDKM_regressionDM): ...
class nnUNetTrainerDKM_f1_debug(DebugSchedule, nnUNetTrainerDKM_f1): ...
class nnUNetTrainerDKM_f1_demo(DemoSchedule, nnUNetTrainerDKM_f1): ...
class nnUNetTrainerDKM_f2_debug(DebugSchedule, nnUNetTrainerDKM_f2): ...
class nnUNetTrainerDKM_f2_demo(DemoSchedule, nnUNetTrainerDKM_f2): ...
class nnUNetTrainerDKM_f3_debug(DebugSchedule, nnUNetTrainerDKM_f3): ...
class nnUNetTrainerDKM_f3_demo(DemoSchedule, nnUNetTrainerDKM_f3): ...
class nnUNetTrainerDKM_f4_debug(DebugSchedule, nnUNetTrainerDKM_f4): ...
class nnUNetTrainerDKM_f4_demo(DemoSchedule, nnUNetTrainerDKM_f4): ...
class nnUNetTrainerDKM_f1234_debug(DebugSchedule, nnUNetTrainerDKM_f1234): ...
class nnUNetTrainerDKM_f1234_demo(DemoSchedule, nnUNetTrainerDKM_f1234): ...
class nnUNetTrainerDKMPaper_debug(DebugSchedule, nnUNetTrainerDKMPaper): ...
