"""``nnUNetv2_dkm_trainer_path --check``: can nnU-Net find the DKM trainers, and the DKM trainer its DM?

One line per check, ``ok: ...`` or ``problem: ... <what to do>``:

1. the nnU-Net folder variables (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``) are set;
2. ``nnUNet_extTrainer`` names the DKM shim folder;
3. the shim module imports and answers with the installed trainers;
4. nnU-Net's own lookup (``recursive_find_trainer_class_by_name``, what ``nnUNetv2_train -tr`` and
   ``nnUNetv2_predict`` call) finds every DKM trainer;
5. with ``-d DATASET [-c CONFIGURATION] [-p PLANS]``: the dataset is preprocessed, and its DM checkpoint passes the
   DKM trainer's own checks (``find_dm_checkpoint``: it exists, loads, was made for these plans and this
   configuration, with the trainer's objective), so that ``nnUNetv2_train`` does not end in a long traceback;
6. with ``-d``: the dataset has the cases nnU-Net's default 5-fold split needs (with fewer, ``nnUNetv2_train`` ends in
   scikit-learn's ``Cannot have number of splits n_splits=5 greater than the number of samples``);
7. with ``-tr TRAINER``: nnU-Net finds that trainer (a misspelled ``-tr`` ends in nnU-Net's traceback);
8. with ``-i FOLDER``: ``nnUNetv2_predict -i FOLDER`` gets what it needs: 3D images named ``{case}_0000{ending}``,
   one per case, and no other channel (``_0001`` files end in an ``IndexError``, 4D images in a traceback);
9. with ``-o FOLDER``: it is not the ``-i`` folder (``nnUNetv2_predict`` would write its predictions and three
   ``.json`` files among the inputs, exit status 0).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.ext_trainer_path import (
    EXT_TRAINER_FOLDER,
    EXT_TRAINER_VARIABLE,
    export_hint,
    ext_trainer_is_set,
)

SHIM_FILE = EXT_TRAINER_FOLDER / "nnunet_dkm_trainers.py"
FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
NNUNET_DEFAULT_FOLDS = 5  # nnUNetTrainer.do_split: generate_crossval_split(..., n_splits=5)
DKM_CHANNELS = ("0000",)  # the DKM trainers segment from the pre-contrast image alone


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


def check_dm_checkpoint(dataset: str, configuration: str, plans: str,
                        trainer: str = "nnUNetTrainerDKM") -> CheckResult:
    """The dataset's DM checkpoint for these plans, checked by the DKM trainer's own ``find_dm_checkpoint`` (what
    ``nnUNetv2_train -tr TRAINER`` runs first): it exists, loads, fits the plans and configuration and has the
    trainer's objective."""
    from nnunet_dkm.preprocessing import PlannedDataset
    from nnunet_dkm.training import TRAINERS

    if trainer not in TRAINERS:
        return CheckResult(True, f"-tr {trainer} is not a DKM trainer: it reads no DM")
    trainer_class = TRAINERS[trainer]
    try:
        planned = PlannedDataset.load(dataset, configuration, plans)
        location, checkpoint = trainer_class.find_dm_checkpoint(planned.plans_manager, configuration, 0)
    except (NnunetDkmError, OSError) as error:
        return CheckResult(False, " ".join(str(error).split()))
    steps = checkpoint.metadata.get("steps", "?")
    return CheckResult(True, f"DM checkpoint of {planned.name} {configuration} at {location.describe()} "
                             f"({checkpoint.metadata.get('preset', '?')} preset, {steps} steps, made for these plans)")


def check_case_count(dataset: str, configuration: str, plans: str) -> CheckResult:
    """Enough training cases for nnU-Net's default 5-fold split, or a ``splits_final.json`` of the user's own."""
    from nnunet_dkm.preprocessing import PlannedDataset

    try:
        planned = PlannedDataset.load(dataset, configuration, plans)
    except (NnunetDkmError, OSError) as error:
        return CheckResult(False, " ".join(str(error).split()))
    cases = int(planned.dataset_json.get("numTraining", 0))
    splits = planned.preprocessed_folder / "splits_final.json"
    if splits.is_file():
        return CheckResult(True, f"{planned.name}: {cases} training case(s), folds from {splits}")
    if cases < NNUNET_DEFAULT_FOLDS:
        return CheckResult(False, f"{planned.name} has {cases} training case(s); nnU-Net's default "
                                  f"{NNUNET_DEFAULT_FOLDS}-fold split needs at least {NNUNET_DEFAULT_FOLDS} "
                                  f"(nnUNetv2_train ends in \"Cannot "
                                  f"have number of splits n_splits={NNUNET_DEFAULT_FOLDS} greater than the number of "
                                  f"samples\"): add training cases, write your own {splits}, or train fold 'all' "
                                  f"(nnUNetv2_train {dataset} {configuration} all ...)")
    return CheckResult(True, f"{planned.name}: {cases} training cases for nnU-Net's {NNUNET_DEFAULT_FOLDS}-fold split")


def check_trainer(name: str) -> CheckResult:
    """``-tr NAME`` is a trainer nnU-Net finds (nnU-Net's own or a DKM trainer), else the closest names."""
    from nnunet_dkm.training.lookup import UnknownTrainerError, check_trainer_names

    try:
        check_trainer_names({"-tr": name})
    except UnknownTrainerError as error:
        return CheckResult(False, f"{str(error).split('. Nothing was trained')[0]} (nnU-Net would end in \"Could not "
                                  f"find requested nnunet trainer {name}\"): correct -tr")
    return CheckResult(True, f"-tr {name}: nnU-Net finds this trainer")


def image_dimension(path: Path) -> tuple[int, tuple[int, ...], int]:
    """(dimension, size, components per pixel) of an image file from its header alone (SimpleITK's
    ``ReadImageInformation``)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetDimension(), tuple(reader.GetSize()), reader.GetNumberOfComponents()


def check_prediction_input(folder: Path, file_ending: str = ".nii.gz", channels: tuple[str, ...] = DKM_CHANNELS,
                           spatial_dims: int = 3) -> CheckResult:
    """``nnUNetv2_predict -i folder``: images named ``{case}_0000{file_ending}``, no other channel, no 4D image."""
    what = f"-i {folder}"
    if not folder.exists():
        return CheckResult(False, f"{what}: no such folder; check the -i path")
    if not folder.is_dir():
        return CheckResult(False, f"{what} is a file; nnUNetv2_predict -i takes a folder of {{case}}_0000{file_ending} "
                                  f"images: give its folder")
    images = sorted(p for p in folder.iterdir() if p.name.endswith(file_ending) and not p.name.startswith("."))
    if not images:
        return CheckResult(False, f"{what} holds no *{file_ending} image (nnUNetv2_predict says \"There are 0 cases\" "
                                  f"and exits 0): check the -i path")
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(file_ending)}$")
    unsuffixed = [p.name for p in images if not pattern.match(p.name)]
    if unsuffixed:
        return CheckResult(False, f"{what}: {folder / unsuffixed[0]} ({len(unsuffixed)} file(s) in all) has no channel "
                                  f"suffix (nnUNetv2_predict ends in \"IndexError: list index out of range\"): name "
                                  f"the pre-contrast images {{case}}_0000{file_ending}")
    others = [p for p in images if pattern.match(p.name)["channel"] not in channels]
    if others:
        found = sorted({pattern.match(p.name)["channel"] for p in others})
        return CheckResult(False, f"{what}: {others[0]} ({len(others)} file(s) of channel(s) "
                                  f"{', '.join('_' + c for c in found)}): the model reads "
                                  f"{', '.join('_' + c for c in channels)} only (the pre-contrast image); nnU-Net "
                                  f"would read them as extra channels (\"IndexError\", then \"your RAM was full\") "
                                  f"or predict from the wrong image: move them out (post-contrast phases belong in "
                                  f"kineticsTs/)")
    for image in images:
        try:
            dimension, size, components = image_dimension(image)
        except RuntimeError as error:
            detail = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
            return CheckResult(False, f"{what}: {image} cannot be read ({detail}); replace it with an intact copy")
        if dimension > spatial_dims or components > 1:
            shape = " x ".join(map(str, size)) + (f" x {components} components" if components > 1 else "")
            return CheckResult(False, f"{what}: {image} is {dimension}D ({shape}); nnUNetv2_predict needs one "
                                      f"{spatial_dims}D pre-contrast volume per file: save the pre-contrast phase "
                                      f"alone as {{case}}_0000{file_ending}")
    cases = len({pattern.match(p.name)["case"] for p in images})
    return CheckResult(True, f"{what}: {cases} case(s), channel {', '.join('_' + c for c in channels)} each, "
                             f"{spatial_dims}D images")


def check_prediction_output(input_folder: Path | None, output_folder: Path) -> CheckResult:
    """``nnUNetv2_predict -o`` must not be the ``-i`` folder (nnU-Net writes there without a word)."""
    if input_folder is not None and output_folder.resolve() == input_folder.resolve():
        return CheckResult(False, f"-o {output_folder} is the -i folder: nnUNetv2_predict would write its predictions, "
                                  f"dataset.json, plans.json and predict_from_raw_data_args.json among your _0000 "
                                  f"inputs, with exit status 0: choose another -o")
    if output_folder.exists() and not output_folder.is_dir():
        return CheckResult(False, f"-o {output_folder} is a file, not a folder: choose a folder")
    return CheckResult(True, f"-o {output_folder} is not the input folder")


def prediction_input_layout(dataset: str | None, configuration: str, plans: str) -> tuple[str, tuple[str, ...], int]:
    """(file ending, channels, spatial dims of the images) of a dataset's inputs; the DKM defaults without one."""
    if dataset is None:
        return ".nii.gz", DKM_CHANNELS, 3
    from nnunet_dkm.preprocessing import PlannedDataset

    try:
        planned = PlannedDataset.load(dataset, configuration, plans)
    except (NnunetDkmError, OSError):
        return ".nii.gz", DKM_CHANNELS, 3
    channels = tuple(f"{int(key):04d}" for key in planned.dataset_json.get("channel_names", {"0": ""}))
    return planned.file_ending, channels or DKM_CHANNELS, 3


def diagnose(dataset: str | None = None, configuration: str = "2d", plans: str = "nnUNetPlans",
             trainer: str | None = None, input_folder: Path | None = None,
             output_folder: Path | None = None) -> list[CheckResult]:
    """Every check, in order; the DM checkpoint and the case count only where a dataset is given, the trainer name,
    the prediction input and output folders only where given."""
    checks: list[Callable[[], CheckResult]] = [check_folder_variables, check_ext_trainer_variable, check_shim_imports,
                                               check_nnunet_finds_trainers]
    if dataset is not None:
        checks.append(lambda: check_dm_checkpoint(dataset, configuration, plans, trainer or "nnUNetTrainerDKM"))
        checks.append(lambda: check_case_count(dataset, configuration, plans))
    if trainer is not None:
        checks.append(lambda: check_trainer(trainer))
    if input_folder is not None:
        checks.append(lambda: check_prediction_input(input_folder, *prediction_input_layout(dataset, configuration,
                                                                                            plans)))
    if output_folder is not None:
        checks.append(lambda: check_prediction_output(input_folder, output_folder))
    return [check() for check in checks]
