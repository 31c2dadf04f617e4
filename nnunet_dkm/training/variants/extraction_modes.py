"""DKM with other ways of reading the frozen DM (the default is mode B: pure noise at t = T-1, decoder level f1)."""

from __future__ import annotations

from dataclasses import replace

from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM

_DEFAULT = nnUNetTrainerDKM.kinetic_features


class nnUNetTrainerDKM_modeA(nnUNetTrainerDKM):
    """DKM with the previous default features: the noised identity guess at t* = 50 (extraction mode A), decoder
    level f2."""

    kinetic_features = replace(_DEFAULT, mode="A", timestep=50, levels=(2,))


class nnUNetTrainerDKM_modeC(nnUNetTrainerDKM):
    """DKM with features of a 5-step DDIM synthetic post-contrast image, read at t = 0 (extraction mode C)."""

    kinetic_features = replace(_DEFAULT, mode="C")


class nnUNetTrainerDKM_encoder(nnUNetTrainerDKM):
    """DKM with the DM's encoder features instead of its decoder features."""

    kinetic_features = replace(_DEFAULT, source="encoder")
