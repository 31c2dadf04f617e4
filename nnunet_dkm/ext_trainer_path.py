"""``nnUNetv2_dkm_trainer_path``: print the folder that nnU-Net's ``nnUNet_extTrainer`` must name.

    export nnUNet_extTrainer=$(nnUNetv2_dkm_trainer_path)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

EXT_TRAINER_FOLDER = Path(__file__).resolve().parent / "ext_trainer"


def export_hint() -> str:
    """The line a user must run so that nnU-Net finds the DKM trainers."""
    return "export nnUNet_extTrainer=$(nnUNetv2_dkm_trainer_path)"


def ext_trainer_is_set() -> bool:
    """Whether ``nnUNet_extTrainer`` names our shim folder."""
    folders = [Path(p).resolve() for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p.strip()]
    return EXT_TRAINER_FOLDER in folders


def main() -> None:
    if not (EXT_TRAINER_FOLDER / "nnunet_dkm_trainers.py").is_file():
        sys.exit(f"error: {EXT_TRAINER_FOLDER} lacks nnunet_dkm_trainers.py; reinstall nnunet-dkm")
    print(EXT_TRAINER_FOLDER)


if __name__ == "__main__":
    main()
