"""Is a trainer name one that ``nnUNetv2_train -tr NAME`` will find? Asked before anything trains.

nnU-Net looks a trainer up by name in its own ``nnunetv2/training/nnUNetTrainer`` folder
(``recursive_find_python_class``) and then in the folders of ``nnUNet_extTrainer``, where our shim answers with
``nnunet_dkm.training.TRAINERS``. A misspelled name is found only when ``nnUNetv2_train`` starts; a command that trains
several models (the benchmark) would train the first ones for minutes before failing on the misspelled one.
:func:`check_trainer_names` asks both places at once and names the closest existing trainers.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
from collections.abc import Mapping

import nnunetv2
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.training import TRAINERS

NNUNET_TRAINER_PACKAGE = "nnunetv2.training.nnUNetTrainer"
NNUNET_TRAINER_FOLDER = os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer")


class UnknownTrainerError(NnunetDkmError):
    """A trainer name that neither nnU-Net nor nnunet-dkm has; the message names the option and close names."""


def find_trainer(name: str) -> type[nnUNetTrainer] | None:
    """The trainer class ``nnUNetv2_train -tr name`` would use (with ``nnUNet_extTrainer`` naming our shim), or None.

    nnU-Net's own folder is searched first, as nnU-Net does; then ours.
    """
    found = recursive_find_python_class(NNUNET_TRAINER_FOLDER, name, NNUNET_TRAINER_PACKAGE, nnunetv2.__path__[0])
    if found is None:
        found = TRAINERS.get(name)
    return found if isinstance(found, type) and issubclass(found, nnUNetTrainer) else None


def known_trainer_names() -> list[str]:
    """Every trainer name of nnU-Net's trainer folder and of ``TRAINERS`` (imports nnU-Net's trainer modules)."""
    names = set(TRAINERS)
    for module_info in pkgutil.walk_packages([NNUNET_TRAINER_FOLDER], f"{NNUNET_TRAINER_PACKAGE}."):
        try:
            module = importlib.import_module(module_info.name)
        except Exception:  # a variant whose optional dependency is missing: nnU-Net cannot use it either
            continue
        names.update(name for name, value in vars(module).items()
                     if isinstance(value, type) and issubclass(value, nnUNetTrainer))
    return sorted(names)


def check_trainer_names(names_by_option: Mapping[str, str]) -> None:
    """Refuse trainer names nnU-Net would not find; ``names_by_option`` maps the option that gave a name (e.g.
    ``--dkm-trainer``) to the name.

    Raises:
        UnknownTrainerError: naming every unknown trainer, its option and the closest existing names.
    """
    unknown = {option: name for option, name in names_by_option.items() if find_trainer(name) is None}
    if not unknown:
        return
    known = known_trainer_names()
    problems = []
    for option, name in unknown.items():
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        problems.append(f"{option} {name}: no such trainer in nnU-Net or nnunet-dkm{hint}")
    raise UnknownTrainerError("; ".join(problems) + ". Nothing was trained. nnU-Net's trainers are the classes in "
                              f"{NNUNET_TRAINER_FOLDER}; nnunet-dkm's are listed by "
                              "`python -c \"from nnunet_dkm.training import TRAINERS; print(*TRAINERS)\"`")
