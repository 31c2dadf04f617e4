"""Short training schedules for CPUs, tests and the demo: fewer epochs AND fewer iterations per epoch.

``make_short`` turns any trainer class into a short one. The vanilla baselines are thin subclasses of nnU-Net's
own ``nnUNetTrainer`` (never a copy), so DKM and vanilla train for exactly the same number of steps.

| suffix | epochs | iterations / epoch | validation iterations |
|---|---|---|---|
| ``_debug`` | 2 | 4 | 2 |
| ``_demo`` | 10 | 12 | 2 |
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

DEFAULT_DEVICE = torch.device("cuda")  # nnU-Net's default; -device cpu|cuda overrides it

SCHEDULES: dict[str, tuple[int, int, int]] = {"debug": (2, 4, 2), "demo": (10, 12, 2)}


def make_short(base: type, schedule: str) -> type:
    """A subclass of ``base`` named ``{base.__name__}_{schedule}`` with the schedule's epochs and iterations."""
    epochs, iterations, validation_iterations = SCHEDULES[schedule]

    def __init__(self, plans, configuration, fold, dataset_json, device=DEFAULT_DEVICE):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        self.num_iterations_per_epoch = iterations
        self.num_val_iterations_per_epoch = validation_iterations
    name = f"{base.__name__}_{schedule}"
    doc = f"{base.__name__} for {epochs} epochs of {iterations} iterations ({validation_iterations} validation)."
    return type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


nnUNetTrainer_debug = make_short(nnUNetTrainer, "debug")
nnUNetTrainer_demo = make_short(nnUNetTrainer, "demo")
