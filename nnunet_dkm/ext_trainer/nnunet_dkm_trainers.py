"""The one module ``nnUNet_extTrainer`` points at (``export nnUNet_extTrainer=$(nnUNetv2_dkm_trainer_path)``).

nnU-Net imports every module of that folder as a top-level module and looks the trainer up by name, so this
folder holds only this uniquely named shim; it re-exports the trainer classes of the installed nnunet_dkm.
"""

from nnunet_dkm.training import TRAINERS

globals().update(TRAINERS)
__all__ = sorted(TRAINERS)
