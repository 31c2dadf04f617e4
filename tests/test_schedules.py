"""Every short schedule trains DKM, its controls and vanilla nnU-Net for the same number of iterations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import PHANTOM_ID, use_nnunet_folders
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.training_length import nnUNetTrainer_Xepochs

from nnunet_dkm.evaluation.benchmark.methods import SCHEDULE_CHOICES, TrainerChoice
from nnunet_dkm.training import TRAINERS
from nnunet_dkm.training.variants.short_schedules import ShortSchedule

# (epochs, training iterations per epoch, validation iterations per epoch)
EXPECTED = {"debug": (2, 4, 2), "demo": (10, 12, 2), "1epoch": (1, 250, 50), "2epochs": (2, 250, 50),
            "5epochs": (5, 250, 50), "10epochs": (10, 250, 50), "20epochs": (20, 250, 50), "50epochs": (50, 250, 50)}
ROWS_OF_EVERY_SCHEDULE = ("vanilla", "dkm", "control")
# the DM controls exist for the schedules the studies use them at
DM_CONTROL_SCHEDULES = ("debug", "demo", "1epoch", "10epochs", "20epochs")
ROWS_OF_THE_LONG_SCHEDULES = {s: ("pre_only", "regression") for s in DM_CONTROL_SCHEDULES}


def trainer_class(name: str) -> type:
    """Ours by name, else nnU-Net's own vanilla class of that name."""
    return TRAINERS.get(name) or getattr(nnUNetTrainer_Xepochs, name)


@pytest.mark.parametrize("schedule", [s for s in SCHEDULE_CHOICES if s != "full"])
def test_each_schedule_has_every_method_for_the_same_iterations(schedule: str) -> None:
    names = TrainerChoice(schedule).names()
    for row in (*ROWS_OF_EVERY_SCHEDULE, *ROWS_OF_THE_LONG_SCHEDULES.get(schedule, ())):
        cls = trainer_class(names[row])
        if issubclass(cls, ShortSchedule):  # ours: the mixin sets the counts after the base trainer's __init__
            assert cls.schedule == EXPECTED[schedule], names[row]
            assert cls.__mro__.index(ShortSchedule) < cls.__mro__.index(nnUNetTrainer), names[row]
        else:  # nnU-Net's own vanilla class
            assert schedule in {"1epoch", "5epochs", "10epochs", "20epochs", "50epochs"} and row == "vanilla"


@pytest.mark.parametrize("schedule", ["20epochs", "demo"])
def test_dkm_and_vanilla_trainers_train_the_schedules_iterations(schedule: str, planned_phantom: dict[str, Path],
                                                                  tiny_dm: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    monkeypatch.setenv("nnUNet_dkm_checkpoint", str(tiny_dm))
    preprocessed = next(planned_phantom["nnUNet_preprocessed"].glob(f"Dataset{PHANTOM_ID}_*"))
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    names = TrainerChoice(schedule).names()
    for row in ("vanilla", "dkm", "control"):
        plans["continue_training"] = False  # nnU-Net 2.8's trainer pops it from the plans nnUNetv2_train passes
        trainer = trainer_class(names[row])(plans, "2d", 0, dataset_json, torch.device("cpu"))
        counts = (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch)
        assert counts == EXPECTED[schedule], f"{names[row]}: {counts}"
