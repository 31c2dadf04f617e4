"""Bad input as a new user gives it (issue 19): every case ends in one line that names the file or option and what to
do, with exit status 1 (2 for argparse), no traceback, and nothing half-written.

Converter damage (truncated files, label values) is tested in ``test_convert_mamamia.py`` and
``test_image_integrity.py``; the error path itself in ``test_command_line.py``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PHANTOM_ID, use_nnunet_folders

from nnunet_dkm.ext_trainer_path import EXT_TRAINER_FOLDER

BIN = Path(sys.executable).parent


@pytest.fixture
def corrupt_dm(tiny_dm: Path, tmp_path: Path) -> Path:
    """The tiny DM's file cut in half, as an interrupted copy leaves it."""
    path = tmp_path / "dm_corrupt.pt"
    path.write_bytes(tiny_dm.read_bytes()[: tiny_dm.stat().st_size // 2])
    return path


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file: a folder below it can be made by nobody, root included."""
    path = tmp_path / "notes.txt"
    path.write_text("not a folder")
    return path


def environment(folders: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("nnUNet_dkm_checkpoint", "nnUNet_extTrainer",
                                                                          "nnUNet_dkm_verbose")}
    return {**env, **{name: str(folder) for name, folder in folders.items()}, "OMP_NUM_THREADS": "1", **extra}


def run(command: str, *arguments: str, env: dict[str, str] | None = None,
        address_space_bytes: int | None = None) -> subprocess.CompletedProcess:
    """Run a command line; ``address_space_bytes`` caps its memory, so that a size check that fails to refuse ends
    in a MemoryError instead of the kernel's out-of-memory killer (which may pick another process)."""
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space_bytes, address_space_bytes))

    return subprocess.run([str(BIN / command), *arguments], capture_output=True, text=True, env=env or os.environ,
                          timeout=900, preexec_fn=limit_memory if address_space_bytes else None)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The command's last stderr line, after checking that it failed with status 1 and without a traceback."""
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


# -- corrupt DM checkpoints ------------------------------------------------------------------------------------------


def test_a_corrupt_checkpoint_is_not_a_dm_checkpoint_with_the_command_that_makes_one(
    corrupt_dm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpointError, load_checkpoint

    monkeypatch.delenv("nnUNet_dkm_checkpoint", raising=False)
    in_place = tmp_path / "nnUNet_preprocessed" / "Dataset990_DKMPhantom" / "dkm" / "2d" / "dm_checkpoint.pt"
    in_place.parent.mkdir(parents=True)
    shutil.copy(corrupt_dm, in_place)
    with pytest.raises(DiffusionCheckpointError) as error:
        load_checkpoint(in_place)
    assert str(error.value) == (f"not a DM checkpoint (unreadable): {in_place}. Make a new one with: "
                                f"nnUNetv2_dkm_pretrain -d 990 -c 2d --overwrite")
    with pytest.raises(DiffusionCheckpointError) as error:  # a file elsewhere: never advised to be overwritten
        load_checkpoint(corrupt_dm)
    assert str(error.value) == (f"not a DM checkpoint (unreadable): {corrupt_dm}. Make a new one with: "
                                f"nnUNetv2_dkm_pretrain -d DATASET -c CONFIGURATION (it writes "
                                f"nnUNet_preprocessed/DatasetXXX_Name/dkm/CONFIGURATION/dm_checkpoint.pt)")


def test_pretraining_continue_from_a_corrupt_checkpoint(planned_phantom: dict[str, Path], corrupt_dm: Path) -> None:
    before = corrupt_dm.read_bytes()
    result = run("nnUNetv2_dkm_pretrain", "-d", str(PHANTOM_ID), "-c", "2d", "--continue",
                 env=environment(planned_phantom, nnUNet_dkm_checkpoint=str(corrupt_dm)))
    assert one_error_line(result) == (f"error: not a DM checkpoint (unreadable): {corrupt_dm}. Make a new one with: "
                                      f"nnUNetv2_dkm_pretrain -d {PHANTOM_ID} -c 2d --overwrite (it writes to "
                                      f"$nnUNet_dkm_checkpoint)")  # the run's own values (issue 36)
    assert "weights_only" not in result.stderr and corrupt_dm.read_bytes() == before


def test_training_with_a_corrupt_checkpoint(planned_phantom: dict[str, Path], corrupt_dm: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpointError
    from nnunet_dkm.training import TRAINERS

    use_nnunet_folders(planned_phantom, monkeypatch)
    monkeypatch.setenv("nnUNet_dkm_checkpoint", str(corrupt_dm))
    plans = PlansManager(str(next(planned_phantom["nnUNet_preprocessed"].glob("Dataset990_*")) / "nnUNetPlans.json"))
    with pytest.raises(DiffusionCheckpointError, match=f"^not a DM checkpoint .unreadable.: {corrupt_dm}. Make a new"):
        TRAINERS["nnUNetTrainerDKM"].find_dm_checkpoint(plans, "2d", 0)


def test_synthesis_from_a_corrupt_checkpoint(planned_phantom: dict[str, Path], corrupt_dm: Path,
                                             tmp_path: Path) -> None:
    images = next(planned_phantom["nnUNet_raw"].glob("Dataset990_*")) / "imagesTs"
    result = run("nnUNetv2_dkm_synthesize_postcontrast", "-i", str(images), "-o", str(tmp_path / "out"), "-d",
                 str(PHANTOM_ID), "-chk", str(corrupt_dm), env=environment(planned_phantom))
    assert one_error_line(result).startswith(f"error: not a DM checkpoint (unreadable): {corrupt_dm}. Make a new")
    assert "weights_only" not in result.stderr and not (tmp_path / "out").exists()


# -- folders the user cannot write ------------------------------------------------------------------------------------


def test_a_raw_folder_that_cannot_be_made_is_one_line_and_nothing_is_written(a_file: Path, tmp_path: Path) -> None:
    result = run("nnUNetv2_dkm_synthesize", "-d", "990", "--raw-folder", str(a_file / "raw"), "--num-train", "1",
                 "--num-test", "0", "--num-unlabelled", "0", "--shape", "32", "32", "4")
    assert one_error_line(result) == (f"error: nnU-Net raw folder (--raw-folder or $nnUNet_raw) {a_file / 'raw'}: "
                                      f"{a_file} is a file, not a folder; choose a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_with_verbose_the_same_mistake_shows_its_traceback(a_file: Path) -> None:
    arguments = ["-d", "990", "--raw-folder", str(a_file / "raw"), "--num-train", "1", "--num-test", "0",
                 "--num-unlabelled", "0", "--shape", "32", "32", "4"]
    for result in (run("nnUNetv2_dkm_synthesize", *arguments, "--verbose"),
                   run("nnUNetv2_dkm_synthesize", *arguments, env={**os.environ, "nnUNet_dkm_verbose": "1"})):
        assert result.returncode == 1 and "Traceback" in result.stderr and "NnunetDkmError" in result.stderr


def test_an_output_folder_that_cannot_be_made_is_refused_before_the_dm_loads(
    planned_phantom: dict[str, Path], tiny_dm: Path, a_file: Path
) -> None:
    images = next(planned_phantom["nnUNet_raw"].glob("Dataset990_*")) / "imagesTs"
    result = run("nnUNetv2_dkm_synthesize_postcontrast", "-i", str(images), "-o", str(a_file / "out"), "-d",
                 str(PHANTOM_ID), "-chk", str(tiny_dm), env=environment(planned_phantom))
    assert one_error_line(result) == f"error: -o {a_file / 'out'}: {a_file} is a file, not a folder; choose a folder"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="/dev/full (a device whose writes fail: disk full) "
                                                           "is Linux's")
def test_a_full_disk_is_one_line(planned_phantom: dict[str, Path]) -> None:
    result = run("nnUNetv2_dkm_phantom_stats", "-d", str(PHANTOM_ID), "--num-cases", "1", "--json", "/dev/full",
                 env=environment(planned_phantom))
    assert one_error_line(result) == ("error: no space left on the disk (No space left on device): free some space "
                                      "or choose a folder on another disk")


# -- sizes that cannot fit, steps beyond the schedule -----------------------------------------------------------------


@pytest.mark.parametrize(("arguments", "message"), [
    (["--shape", "100000", "100000", "1000"], "error: one phantom exam of 100000 x 100000 x 1000 voxels needs about "
                                              "1.6 PB of memory"),
    (["--shape", "64", "64", "6", "--num-unlabelled", "1000000000"], "error: 1000000044 phantom exams of 64 x 64 x 6 "
                                                                     "voxels needs about"),
])
def test_a_phantom_that_cannot_fit_is_refused_before_anything_is_allocated(arguments: list[str], message: str,
                                                                           tmp_path: Path) -> None:
    result = run("nnUNetv2_dkm_synthesize", "-d", "990", "--raw-folder", str(tmp_path / "raw"), *arguments,
                 address_space_bytes=4 * 1024**3)
    line = one_error_line(result)
    assert line.startswith(message) and "--shape" in line
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("arguments", [["--batch-size", "100000"], ["--patch-size", "100000", "100000"]])
def test_a_dm_training_step_that_cannot_fit_is_refused_before_anything_is_built(
    arguments: list[str], planned_phantom: dict[str, Path], tmp_path: Path
) -> None:
    result = run("nnUNetv2_dkm_pretrain", "-d", str(PHANTOM_ID), "-c", "2d", *arguments,
                 env=environment(planned_phantom, nnUNet_dkm_checkpoint=str(tmp_path / "dm.pt")),
                 address_space_bytes=6 * 1024**3)
    line = one_error_line(result)
    assert line.startswith("error: one DM training step of ") and " of memory, this machine has " in line
    assert line.endswith("choose a smaller --batch-size or --patch-size") and not (tmp_path / "dm.pt").exists()


def test_ddim_steps_beyond_the_schedule_are_refused_before_the_output_folder_exists(
    planned_phantom: dict[str, Path], tiny_dm: Path, tmp_path: Path
) -> None:
    images = next(planned_phantom["nnUNet_raw"].glob("Dataset990_*")) / "imagesTs"
    result = run("nnUNetv2_dkm_synthesize_postcontrast", "-i", str(images), "-o", str(tmp_path / "out"), "-d",
                 str(PHANTOM_ID), "-chk", str(tiny_dm), "--ddim-steps", "100000", env=environment(planned_phantom))
    assert one_error_line(result) == (f"error: --ddim-steps 100000: the DM's schedule has T = 1000 timesteps "
                                      f"({tiny_dm}); choose at most 1000 steps (default 5)")
    assert not (tmp_path / "out").exists()


# -- the benchmark: every argument checked before anything trains ----------------------------------------------------


def test_a_negative_fold_is_refused_by_the_parser(capsys: pytest.CaptureFixture) -> None:
    from nnunet_dkm.evaluation.benchmark.cli import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["-d", "990", "-f", "-1", "-device", "cpu"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("argument -f/--folds: must be >= 0, got -1")


@pytest.fixture
def benchmark_folders(planned_phantom: dict[str, Path], tiny_dm: Path, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A private copy of the planned phantom (the benchmark writes splits_final.json), its DM, and no training: a
    test fails if anything would train."""
    from nnunet_dkm.evaluation.nnunet_runs import TrainedModel

    folders = {name: Path(shutil.copytree(folder, tmp_path / name)) for name, folder in planned_phantom.items()}
    preprocessed = next(folders["nnUNet_preprocessed"].glob("Dataset990_*"))
    cases = sorted(p.name.removesuffix("_0000.nii.gz") for p in next(folders["nnUNet_raw"].glob("Dataset990_*"))
                   .glob("imagesTr/*_0000.nii.gz"))  # fewer than nnU-Net's default split needs: one fold per case
    (preprocessed / "splits_final.json").write_text(json.dumps(
        [{"train": [c for c in cases if c != val], "val": [val]} for val in cases]))
    use_nnunet_folders(folders, monkeypatch)
    monkeypatch.setenv("nnUNet_dkm_checkpoint", str(tiny_dm))

    def must_not_train(self: TrainedModel, device: str) -> None:
        raise AssertionError(f"{self.trainer} fold {self.fold} was trained before the bad argument was refused")

    monkeypatch.setattr(TrainedModel, "train", must_not_train)
    return folders


@pytest.mark.parametrize(("arguments", "message"), [
    (["--dkm-trainer", "nnUNetTrainerDMK_debug"], "--dkm-trainer nnUNetTrainerDMK_debug: no such trainer in nnU-Net "
                                                  "or nnunet-dkm; did you mean nnUNetTrainerDKM_debug"),
    (["--vanilla-trainer", "nnUNetTrainerr"], "--vanilla-trainer nnUNetTrainerr: no such trainer in nnU-Net or "
                                              "nnunet-dkm; did you mean nnUNetTrainer"),
    (["-f", "7"], "fold 7 is not in"),
    (["-c", "3d_fullres"], f"-c 3d_fullres: .* is missing; run `nnUNetv2_plan_and_preprocess -d {PHANTOM_ID} -c "
                           f"3d_fullres` first"),
    (["-c", "4d"], "-c 4d: not a configuration of"),
])
def test_bad_benchmark_arguments_are_refused_before_anything_trains(
    benchmark_folders: dict[str, Path], arguments: list[str], message: str
) -> None:
    from nnunet_dkm.evaluation.benchmark.cli import main

    with pytest.raises(SystemExit, match=message):
        main(["-d", str(PHANTOM_ID), "--schedule", "debug", "-device", "cpu", *arguments])
    assert not any(benchmark_folders["nnUNet_results"].rglob("dkm_benchmark__*"))  # no empty benchmark folder


def test_a_missing_test_image_is_refused_before_anything_trains(benchmark_folders: dict[str, Path]) -> None:
    from nnunet_dkm.evaluation.benchmark.cli import main

    image = next(next(benchmark_folders["nnUNet_raw"].glob("Dataset990_*")).glob("imagesTs/*_0000.nii.gz"))
    image.unlink()
    with pytest.raises(SystemExit, match=f"{image} is missing"):
        main(["-d", str(PHANTOM_ID), "--schedule", "debug", "-device", "cpu"])
    assert not any(benchmark_folders["nnUNet_results"].rglob("dkm_benchmark__*"))


def test_a_benchmark_output_that_cannot_be_made_is_refused_before_anything_trains(
    benchmark_folders: dict[str, Path], a_file: Path
) -> None:
    from nnunet_dkm.evaluation.benchmark.cli import main

    with pytest.raises(SystemExit, match=f"-o {a_file / 'out'}: {a_file} is a file, not a folder"):
        main(["-d", str(PHANTOM_ID), "--schedule", "debug", "-device", "cpu", "-o", str(a_file / "out")])


# -- nnU-Net's own commands around our trainers ------------------------------------------------------------------------


def test_the_trainer_path_help_names_the_fix_for_nnunets_message() -> None:
    result = run("nnUNetv2_dkm_trainer_path", "--help")
    assert result.returncode == 0
    assert "Could not find requested nnunet trainer" in result.stdout
    assert "export nnUNet_extTrainer=$(nnUNetv2_dkm_trainer_path)" in result.stdout and "--check" in result.stdout


def test_check_diagnoses_the_environment_in_one_line_per_check(planned_phantom: dict[str, Path], tiny_dm: Path,
                                                               corrupt_dm: Path) -> None:
    arguments = ["--check", "-d", str(PHANTOM_ID), "-c", "2d"]
    without = run("nnUNetv2_dkm_trainer_path", *arguments,
                  env=environment(planned_phantom, nnUNet_dkm_checkpoint=str(tiny_dm)))
    lines = without.stdout.strip().splitlines()
    assert without.returncode == 1 and len(lines) == 6, without.stdout + without.stderr[-2000:]  # 6th: case count
    assert [line.split(":")[0] for line in lines[:5]] == ["ok", "problem", "ok", "problem", "ok"]
    assert lines[1].startswith("problem: nnUNet_extTrainer is not set") and "$(nnUNetv2_dkm_trainer_path)" in lines[1]
    assert lines[4].startswith(f"ok: DM checkpoint of Dataset{PHANTOM_ID}_DKMPhantom 2d at $nnUNet_dkm_checkpoint=")

    with_variable = run("nnUNetv2_dkm_trainer_path", *arguments,
                        env=environment(planned_phantom, nnUNet_dkm_checkpoint=str(corrupt_dm),
                                        nnUNet_extTrainer=str(EXT_TRAINER_FOLDER)))
    lines = with_variable.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:5]] == ["ok", "ok", "ok", "ok", "problem"], with_variable.stdout
    assert lines[4].startswith(f"problem: not a DM checkpoint (unreadable): {corrupt_dm}")
    assert with_variable.returncode == 1


# -- round 4 (issue 36): nnU-Net's own mistakes caught by --check before a run ----------------------------------------


def image_file(path: Path, shape: tuple[int, ...] = (4, 16, 16), series: int = 1) -> Path:
    """A small NIfTI image (a 4D one with ``series`` > 1, as a DCE exported as one file)."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.zeros(shape, np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.JoinSeries([image] * series) if series > 1 else image, str(path))
    return path


@pytest.mark.parametrize(("files", "message"), [
    ({"a_0000.nii.gz": 1, "a_0001.nii.gz": 1}, "a_0001.nii.gz (1 file(s) of channel(s) _0001): the model reads _0000 "
                                               "only"),
    ({"a_0001.nii.gz": 1}, "a_0001.nii.gz (1 file(s) of channel(s) _0001)"),
    ({"a_0000.nii.gz": 3}, "a_0000.nii.gz is 4D (16 x 16 x 4 x 3); nnUNetv2_predict needs one 3D pre-contrast volume "
                           "per file"),
    ({"a.nii.gz": 1}, "a.nii.gz (1 file(s) in all) has no channel suffix"),
    ({}, "holds no *.nii.gz image"),
])
def test_check_names_a_prediction_folder_nnunet_would_fail_on(files: dict[str, int], message: str,
                                                              tmp_path: Path) -> None:
    from nnunet_dkm.environment_check import check_prediction_input

    folder = tmp_path / "in"
    folder.mkdir()
    for name, series in files.items():
        image_file(folder / name, series=series)
    result = check_prediction_input(folder)
    assert not result.ok and message in result.line(), result.line()
    image_file(tmp_path / "good" / "a_0000.nii.gz")
    assert check_prediction_input(tmp_path / "good").ok


def test_check_refuses_a_misspelled_trainer_and_predicting_into_the_input_folder(tmp_path: Path) -> None:
    folder = image_file(tmp_path / "in" / "a_0000.nii.gz").parent
    same = f"{folder}/../in"  # the same folder, spelt otherwise
    result = run("nnUNetv2_dkm_trainer_path", "--check", "-tr", "nnUNetTrainerDMK", "-i", str(folder), "-o", same,
                 env=environment({"nnUNet_extTrainer": EXT_TRAINER_FOLDER}))
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 7, result.stdout + result.stderr[-2000:]
    assert lines[4].startswith("problem: -tr nnUNetTrainerDMK: no such trainer in nnU-Net or nnunet-dkm; did you mean "
                               "nnUNetTrainerDKM") and lines[4].endswith("correct -tr")
    assert lines[5] == f"ok: -i {folder}: 1 case(s), channel _0000 each, 3D images"
    assert lines[6].startswith(f"problem: -o {same} is the -i folder: nnUNetv2_predict would write its "
                               f"predictions, dataset.json, plans.json and predict_from_raw_data_args.json among")


def test_check_counts_the_cases_nnunets_five_fold_split_needs(planned_phantom: dict[str, Path], tiny_dm: Path,
                                                              tmp_path: Path) -> None:
    folders = {name: Path(shutil.copytree(folder, tmp_path / name)) for name, folder in planned_phantom.items()}
    splits = next(folders["nnUNet_preprocessed"].glob("Dataset990_*")) / "splits_final.json"
    splits.unlink(missing_ok=True)
    arguments = ["--check", "-d", str(PHANTOM_ID), "-c", "2d"]
    env = environment(folders, nnUNet_dkm_checkpoint=str(tiny_dm), nnUNet_extTrainer=str(EXT_TRAINER_FOLDER))
    lines = run("nnUNetv2_dkm_trainer_path", *arguments, env=env).stdout.strip().splitlines()
    assert lines[5].startswith(f"problem: Dataset{PHANTOM_ID}_DKMPhantom has 3 training case(s); nnU-Net's default "
                               f"5-fold split needs at least 5"), lines
    assert "train fold 'all'" in lines[5]
    splits.write_text(json.dumps([{"train": ["a"], "val": ["b"]}]))
    lines = run("nnUNetv2_dkm_trainer_path", *arguments, env=env).stdout.strip().splitlines()
    assert lines[5] == f"ok: Dataset{PHANTOM_ID}_DKMPhantom: 3 training case(s), folds from {splits}"


def test_check_runs_the_dkm_trainers_own_dm_checks(planned_phantom: dict[str, Path], tiny_dm: Path,
                                                   tmp_path: Path) -> None:
    shutil.copy(tiny_dm, tmp_path / "dm_pre-only.pt")  # a kinetic DM where the pre-only control's DM is looked for
    result = run("nnUNetv2_dkm_trainer_path", "--check", "-d", str(PHANTOM_ID), "-c", "2d", "-tr",
                 "nnUNetTrainerDKM_preOnlyDM", env=environment(planned_phantom,
                                                                nnUNet_dkm_checkpoint=str(tmp_path / "dm.pt"),
                                                                nnUNet_extTrainer=str(EXT_TRAINER_FOLDER)))
    lines = result.stdout.strip().splitlines()
    assert lines[4].startswith("problem: nnUNetTrainerDKM_preOnlyDM needs a DM pretrained with the 'pre-only' "
                               "objective"), result.stdout + result.stderr[-2000:]
    assert lines[6] == "ok: -tr nnUNetTrainerDKM_preOnlyDM: nnU-Net finds this trainer"


# -- round 4: pretraining arguments that cannot work, refused before the first step --------------------------------

TINY_DM_ARGUMENTS = ["--channels", "16", "32", "32", "32", "--batch-size", "2", "--patch-size", "32", "32"]


@pytest.mark.parametrize(("case", "arguments", "message"), [
    ("checkpoint is a folder", [], "error: the DM checkpoint $nnUNet_dkm_checkpoint={dm} is a folder, where the "
                                   "checkpoint file is to be written: set nnUNet_dkm_checkpoint to a file path in it, "
                                   "e.g. {dm}/dm_checkpoint.pt, or unset it"),
    ("patch beyond the slices", ["--patch-size", "128", "128", "--batch-size", "2"],
     "error: --patch-size 128 128: larger than every slice of Dataset990_DKMPhantom 2d (at most 64 x 64 pixels), so "
     "the DM would train mostly on padding, many times slower per step; choose --patch-size at most 64 64"),
    ("nothing left to train", ["--continue", *TINY_DM_ARGUMENTS, "--steps", "1"],
     "error: --continue --steps 1: the checkpoint {dm} is at step 2 already, so there is nothing to do; pass --steps "
     "above 2 to train on"),
])
def test_pretraining_that_cannot_work_is_refused_before_the_first_step(
    case: str, arguments: list[str], message: str, planned_phantom: dict[str, Path], tiny_dm: Path, tmp_path: Path
) -> None:
    dm = tmp_path / "dm.pt"
    if case == "checkpoint is a folder":
        dm.mkdir()
    elif case == "nothing left to train":
        shutil.copy(tiny_dm, dm)
    before = dm.read_bytes() if dm.is_file() else None
    result = run("nnUNetv2_dkm_pretrain", "-d", str(PHANTOM_ID), "-c", "2d", *arguments,
                 env=environment(planned_phantom, nnUNet_dkm_checkpoint=str(dm)))
    assert one_error_line(result).startswith(message.format(dm=dm))
    assert (list(dm.iterdir()) == [] if dm.is_dir() else dm.read_bytes() == before if before else not dm.exists())
    assert not any(p.name.startswith(".tmp_") for p in tmp_path.iterdir())


# -- round 4: damaged DICOM folders (a copy of the real TCIA case) ---------------------------------------------------


def damage_truncated_slice(case: Path) -> Path:
    """One DCE slice cut in half, as an interrupted copy leaves it."""
    path = case / "image_dce_3dfgre_orig" / "1-030.dcm"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def damage_stray_series(case: Path) -> Path:
    """One DCE slice given a SeriesInstanceUID of its own (same series number), as an editing tool may leave it."""
    import pydicom
    from pydicom.uid import generate_uid

    path = case / "image_dce_3dfgre_orig" / "1-030.dcm"
    dataset = pydicom.dcmread(path)
    dataset.SeriesInstanceUID = generate_uid()
    dataset.save_as(path)
    return path


def damage_junk_files(case: Path) -> Path:
    """Files that are not DICOM beside the slices (notes, a thumbnail)."""
    (case / "image_dce_3dfgre_orig" / "thumbnail.png").write_bytes(b"\x89PNG not really")
    path = case / "notes.txt"
    path.write_text("exported by the scanner")
    return path


@pytest.mark.parametrize(("damage", "message"), [
    (damage_truncated_slice, "{path} is damaged, SimpleITK cannot read it"),
    (damage_stray_series, "shares its series number with 1 other SeriesInstanceUID(s) holding 1 file(s) ({path}): give "
                          "those files the DCE's SeriesInstanceUID"),
])
def test_a_damaged_dicom_series_is_named_by_its_file(damage, message: str, nact_pilot_folder: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    from dataset_conversion.convert_nact import convert_nact
    from nnunet_dkm.errors import NnunetDkmError

    case = Path(shutil.copytree(nact_pilot_folder / "UCSF-BR-06", tmp_path / "input" / "UCSF-BR-06"))
    path = damage(case)
    with pytest.raises(NnunetDkmError, match="no training case could be written"):
        convert_nact(case.parent, 991, raw_folder=tmp_path / "raw")
    out = capsys.readouterr().out
    assert message.format(path=path) in " ".join(out.split()), out
    assert list((tmp_path / "raw").iterdir()) == []


def test_junk_files_in_a_dicom_folder_are_named_in_a_warning(nact_pilot_folder: Path, tmp_path: Path) -> None:
    import warnings

    from dataset_conversion.convert_nact import convert_nact

    case = Path(shutil.copytree(nact_pilot_folder / "UCSF-BR-06", tmp_path / "input" / "UCSF-BR-06"))
    notes = damage_junk_files(case)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert_nact(case.parent, 991, raw_folder=tmp_path / "raw")
    ignored = [str(w.message) for w in caught if "not DICOM" in str(w.message)]
    assert len(ignored) == 1 and ignored[0].startswith("ignored 2 file(s) that are not DICOM: ") and str(notes) in \
        ignored[0] and "thumbnail.png" in ignored[0]


@pytest.mark.parametrize("command", ["nnUNetv2_dkm_convert_nact", "nnUNetv2_dkm_convert_mamamia"])
def test_a_converter_given_a_file_for_its_input_folder_says_so(command: str, a_file: Path, tmp_path: Path) -> None:
    from dataset_conversion.convert_mamamia import find_patients
    from dataset_conversion.convert_nact import convert_nact
    from nnunet_dkm.errors import NnunetDkmError

    with pytest.raises(NnunetDkmError, match=f"^input folder {a_file} is a file, not a folder: give the "):
        if command == "nnUNetv2_dkm_convert_nact":
            convert_nact(a_file, 991, raw_folder=tmp_path / "raw")
        else:
            find_patients(a_file)
    assert not (tmp_path / "raw").exists()


# -- round 4: images of the wrong dimension ---------------------------------------------------------------------------


def test_synthesis_from_a_4d_image_is_refused_before_the_output_folder_exists(
    planned_phantom: dict[str, Path], tiny_dm: Path, tmp_path: Path
) -> None:
    four_d = image_file(tmp_path / "in" / "a_0000.nii.gz", series=3)
    result = run("nnUNetv2_dkm_synthesize_postcontrast", "-i", str(four_d.parent), "-o", str(tmp_path / "out"), "-d",
                 str(PHANTOM_ID), "-chk", str(tiny_dm), env=environment(planned_phantom))
    assert one_error_line(result) == (f"error: {four_d} is 4D (16 x 16 x 4 x 3 voxels); 2D or 3D is needed: give one "
                                      f"pre-contrast volume per file, {{case}}_0000.nii.gz")
    assert not (tmp_path / "out").exists()


def test_an_intact_2d_mamamia_image_is_called_2d_not_unreadable(tmp_path: Path,
                                                               nnunet_folders: dict[str, Path]) -> None:
    import nibabel as nib
    import numpy as np
    from test_convert_mamamia import write_patient

    from dataset_conversion.convert_mamamia import convert_mamamia
    from dataset_conversion.raw_dataset import ConversionSummary

    root = tmp_path / "MAMA-MIA"
    write_patient(root, "DUKE_001", seed=1)
    write_patient(root, "DUKE_002", seed=2)
    phase = root / "images" / "DUKE_002" / "duke_002_0001.nii.gz"
    volume = nib.load(phase)  # one slice of the oblique volume, saved with its 3D affine: ITK cannot read it
    nib.save(nib.Nifti1Image(np.asarray(volume.dataobj)[:, :, 0], volume.affine, volume.header), phase)
    summary = ConversionSummary()
    convert_mamamia(root, 992, summary=summary)
    reason = dict(summary.skipped)["DUKE_002"]
    assert reason.startswith(f"{phase} is 2D (") and "3D is needed: give the whole 3D volume of this phase" in reason
    assert "cannot be read" not in reason


def test_check_asks_no_dm_of_a_vanilla_trainer() -> None:
    from nnunet_dkm.environment_check import check_dm_checkpoint

    result = check_dm_checkpoint("990", "2d", "nnUNetPlans", "nnUNetTrainer")
    assert result.line() == "ok: -tr nnUNetTrainer is not a DKM trainer: it reads no DM"
