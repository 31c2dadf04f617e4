"""DKM with other ways of reading the frozen DM (the default is mode A: the noised pre-contrast image at t* = 50,
decoder features)."""

from __future__ import annotations

from dataclasses import replace

from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM

_DEFAULT = nnUNetTrainerDKM.kinetic_features


class nnUNetTrainerDKM_modeB(nnUNetTrainerDKM):
    """DKM with features of pure noise at t = T-1 (extraction mode B)."""

    kinetic_features = replace(_DEFAULT, mode="B")


class nnUNetTrainerDKM_modeC(nnUNetTrainerDKM):
    """DKM with features of a 5-step DDIM synthetic post-contrast image, read at t = 0 (extraction mode C)."""

    kinetic_features = replace(_DEFAULT, mode="C")


class nnUNetTrainerDKM_encoder(nnUNetTrainerDKM):
    """DKM with the DM's encoder features instead of its decoder features."""

    kinetic_features = replace(_DEFAULT, source="encoder")
