"""The controls that say what in the DM helps: capacity (untrained DM), diffusion without kinetics (pre-only DM) and
kinetics without diffusion (regression DM). Each is the DKM network with another frozen DM of the same architecture,
fused exactly like DKM's."""

from __future__ import annotations

from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM


class nnUNetTrainerDKM_untrainedDM(nnUNetTrainerDKM):
    """The DKM network fed by a randomly initialised, frozen DM of the same architecture: whatever it gains over
    vanilla nnU-Net comes from the fusion layers' capacity, not from kinetics."""

    use_pretrained_dm = False


class nnUNetTrainerDKM_preOnlyDM(nnUNetTrainerDKM):
    """The DKM network fed by the pre-only DM (``nnUNetv2_dkm_pretrain --objective pre-only``): diffusion training on
    the pre-contrast image alone, which never sees a post-contrast phase (generic diffusion features, no kinetics)."""

    dm_objective = "pre-only"


class nnUNetTrainerDKM_regressionDM(nnUNetTrainerDKM):
    """The DKM network fed by the regression DM (``nnUNetv2_dkm_pretrain --objective regression``): the same network
    trained to output the post-contrast image in one forward at one timestep (kinetics, no diffusion)."""

    dm_objective = "regression"
