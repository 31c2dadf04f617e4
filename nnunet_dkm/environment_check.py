"""``nnUNetv2_dkm_trainer_path --check``: can nnU-Net find the DKM trainers, and the DKM trainer its DM?

One line per check, ``ok: ...`` or ``problem: ... <what to do>``:

1. the nnU-Net folder variables (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``) are set;
2. ``nnUNet_extTrainer`` names the DKM shim folder;
3. the shim module imports and answers with the installed trainers;
4. nnU-Net's own lookup (``recursive_find_trainer_class_by_name``, what ``nnUNetv2_train -tr`` and
   ``nnUNetv2_predict`` call) finds every DKM trainer;
5. with ``-d DATASET [-c CONFIGURATION] [-p PLANS]``: the dataset is preprocessed, and its DM checkpoint exists,
   loads and was made for these plans.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from collections.abc import Callable
from dataclasses import dataclass

from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.ext_trainer_path import (
    EXT_TRAINER_FOLDER,
    EXT_TRAINER_VARIABLE,
    export_hint,
    ext_trainer_is_set,
)

SHIM_FILE = EXT_TRAINER_FOLDER / "nnunet_dkm_trainers.py"
FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass(frozen=True)
class CheckResult:
    """One line of the diagnosis."""

    ok: bool
    text: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'problem'}: {self.text}"


def check_folder_variables() -> CheckResult:
    missing = [name for name in FOLDER_VARIABLES if not os.environ.get(name)]
    if missing:
        exports = " ".join(f"{name}=/path/to/{name}" for name in missing)
        return CheckResult(False, f"{', '.join(missing)} not set: export {exports}")
    return CheckResult(True, ", ".join(f"{name}={os.environ[name]}" for name in FOLDER_VARIABLES))


def check_ext_trainer_variable() -> CheckResult:
    value = os.environ.get(EXT_TRAINER_VARIABLE)
    if ext_trainer_is_set():
        return CheckResult(True, f"{EXT_TRAINER_VARIABLE} names {EXT_TRAINER_FOLDER}")
    state = "is not set" if not value else f"is {value}, without {EXT_TRAINER_FOLDER}"
    return CheckResult(False, f"{EXT_TRAINER_VARIABLE} {state}, so nnU-Net answers \"Could not find requested nnunet "
                              f"trainer\": run {export_hint()} (or once: nnUNetv2_dkm_trainer_path "
                              f"--install-startup-hook)")


def check_shim_imports() -> CheckResult:
    """Import the shim as a file, as nnU-Net does, and count the trainers it answers with."""
    if not SHIM_FILE.is_file():
        return CheckResult(False, f"{SHIM_FILE} is missing: reinstall nnunet-dkm (pip install -e .)")
    try:
        spec = importlib.util.spec_from_file_location("nnunet_dkm_trainers_check", SHIM_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        names = dir(module)
    except Exception as error:  # whatever the import raises, the user needs its text
        return CheckResult(False, f"{SHIM_FILE} does not import ({type(error).__name__}: {error}): reinstall "
                                  f"nnunet-dkm (pip install -e .)")
    return CheckResult(True, f"{SHIM_FILE.name} imports and answers with {len(names)} trainers")


def check_nnunet_finds_trainers() -> CheckResult:
    """Ask nnU-Net's own lookup for every DKM trainer, with the environment as it is."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_dkm.training import TRAINERS

    lost = []
    for name in TRAINERS:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints every folder it searches
            try:
                recursive_find_trainer_class_by_name(name)
            except (RuntimeError, AssertionError):
                lost.append(name)
    if lost:
        shown = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3 else "")
        return CheckResult(False, f"nnU-Net does not find {shown} ({len(lost)} of {len(TRAINERS)} DKM trainers): run "
                                  f"{export_hint()}")
    return CheckResult(True, f"nnU-Net finds all {len(TRAINERS)} DKM trainers (nnUNetTrainerDKM, ...)")


def check_dm_checkpoint(dataset: str, configuration: str, plans: str) -> CheckResult:
    """The dataset's DM checkpoint for these plans: where it is, whether it loads and fits the plans."""
    from nnunet_dkm.diffusion.checkpoint import check_plans_identity, load_checkpoint
    from nnunet_dkm.paths import missing_dm_message
    from nnunet_dkm.preprocessing import PlannedDataset

    try:
        planned = PlannedDataset.load(dataset, configuration, plans)
        location = planned.dm_checkpoint
        if not location.path.is_file():
            return CheckResult(False, missing_dm_message(location, planned.name, configuration, plans))
        checkpoint = load_checkpoint(location.path)
        check_plans_identity(checkpoint.plans_identity, planned.plans_manager.plans, configuration, location.path)
    except (NnunetDkmError, OSError) as error:
        return CheckResult(False, " ".join(str(error).split()))
    steps = checkpoint.metadata.get("steps", "?")
    return CheckResult(True, f"DM checkpoint of {planned.name} {configuration} at {location.describe()} "
                             f"({checkpoint.metadata.get('preset', '?')} preset, {steps} steps, made for these plans)")


def diagnose(dataset: str | None = None, configuration: str = "2d", plans: str = "nnUNetPlans") -> list[CheckResult]:
    """Every check, in order; the DM checkpoint only where a dataset is given."""
    checks: list[Callable[[], CheckResult]] = [check_folder_variables, check_ext_trainer_variable, check_shim_imports,
                                               check_nnunet_finds_trainers]
    if dataset is not None:
        checks.append(lambda: check_dm_checkpoint(dataset, configuration, plans))
    return [check() for check in checks]
