"""nnU-Net finds our trainers through nnUNet_extTrainer, and users are told what to export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_dkm.ext_trainer_path import EXT_TRAINER_FOLDER
from pretrain_dm.cli import next_steps

BIN = Path(sys.executable).parent


def test_trainer_path_prints_a_folder_with_exactly_one_shim() -> None:
    result = subprocess.run([str(BIN / "nnUNetv2_dkm_trainer_path")], capture_output=True, text=True, check=True)
    folder = Path(result.stdout.strip())
    assert folder == EXT_TRAINER_FOLDER
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".py") == ["nnunet_dkm_trainers.py"]
    assert not (folder / "__init__.py").exists()


NAMES = ["nnUNetTrainerDKM", "nnUNetTrainerDKM_f1234_demo", "nnUNetTrainerDKMPaper",
         "nnUNetTrainerDKM_untrainedDM_debug",
         "nnUNetTrainer_demo"]


def test_nnunet_finds_the_trainers_by_name() -> None:
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
            f"for name in {NAMES!r}:\n"
            "    cls = find(name)\n"
            "    print('FOUND', cls.__name__, cls.__mro__[-2].__name__)\n")
    env = {**os.environ, "nnUNet_extTrainer": str(EXT_TRAINER_FOLDER)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    found = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("FOUND")]
    assert found == [[name, "nnUNetTrainer"] for name in NAMES]


def test_the_export_line_is_shown_while_the_variable_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    assert "export nnUNet_extTrainer=$(nnUNetv2_dkm_trainer_path)" in next_steps(990, "2d")
    monkeypatch.setenv("nnUNet_extTrainer", str(EXT_TRAINER_FOLDER))
    assert "export" not in next_steps(990, "2d")
    assert "nnUNetv2_train 990 2d 0 -tr nnUNetTrainerDKM" in next_steps(990, "2d")
