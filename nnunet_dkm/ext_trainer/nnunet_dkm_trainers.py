"""The one module ``nnUNet_extTrainer`` points at (``export nnUNet_extTrainer=$(nnUNetv2_dkm_trainer_path)``).

nnU-Net imports every module of that folder as a top-level module and asks it for the trainer by name
(``hasattr(module, name)``), so this folder holds only this uniquely named shim, which answers with the trainer
classes of the installed nnunet_dkm (``nnunet_dkm.training.TRAINERS``).
"""

from nnunet_dkm.training import TRAINERS


def __getattr__(name: str) -> type:
    try:
        return TRAINERS[name]
    except KeyError:
        raise AttributeError(name) from None


def __dir__() -> list[str]:
    return sorted(TRAINERS)
