"""The control that separates learned kinetics from extra capacity."""

from __future__ import annotations

from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM


class nnUNetTrainerDKM_untrainedDM(nnUNetTrainerDKM):
    """The DKM network fed by a randomly initialised, frozen DM of the same architecture: whatever it gains over
    vanilla nnU-Net comes from the fusion layers' capacity, not from kinetics."""

    use_pretrained_dm = False
