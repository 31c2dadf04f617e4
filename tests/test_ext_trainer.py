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


@pytest.mark.slow
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


@pytest.mark.slow
def test_every_registered_trainer_resolves_through_nnunet_and_every_class_is_registered() -> None:
    from nnunet_dkm.training import TRAINERS

    defined = set()
    for source in (Path(__file__).resolve().parents[1] / "nnunet_dkm").rglob("*.py"):
        defined |= {line.split("(")[0][len("class "):] for line in source.read_text().splitlines()
                    if line.startswith("class nnUNetTrainer")}
    assert defined == set(TRAINERS)  # grep "^class nnUNetTrainer" lists every trainer a user can pass to -tr
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
            "import contextlib, io\n"
            f"for name in {sorted(TRAINERS)!r}:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        cls = find(name)\n"
            "    print('FOUND', cls.__name__)\n")
    env = {**os.environ, "nnUNet_extTrainer": str(EXT_TRAINER_FOLDER)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line.split()[1] for line in result.stdout.splitlines()] == sorted(TRAINERS)


@pytest.mark.slow
def test_the_startup_hook_makes_the_export_unnecessary_and_keeps_a_users_folders(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    subprocess.run([str(BIN / "nnUNetv2_dkm_trainer_path"), "--install-startup-hook", "--site-packages", str(site)],
                   check=True, capture_output=True)
    code = ("import site, sys, os\n"
            f"site.addsitedir({str(site)!r})\n"
            "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
            "print('VALUE', os.environ['nnUNet_extTrainer'])\n"
            "print('FOUND', find('nnUNetTrainerDKM_demo').__name__)\n")
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    cases = (("", str(EXT_TRAINER_FOLDER)), ("/my/trainers", f"/my/trainers{os.pathsep}{EXT_TRAINER_FOLDER}"))
    for users_value, expected in cases:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env={**env, "nnUNet_extTrainer": users_value} if users_value else env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"VALUE {expected}" in result.stdout and "FOUND nnUNetTrainerDKM_demo" in result.stdout
    subprocess.run([str(BIN / "nnUNetv2_dkm_trainer_path"), "--remove-startup-hook", "--site-packages", str(site)],
                   check=True, capture_output=True)
    assert not any(site.iterdir())


def test_the_startup_hook_is_silent_when_nnunet_dkm_is_gone(tmp_path: Path) -> None:
    from nnunet_dkm.ext_trainer_path import STARTUP_HOOK_LINE

    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "hook.pth").write_text(STARTUP_HOOK_LINE.replace("nnunet_dkm.ext_trainer_path", "no_such_package.x"))
    result = subprocess.run([sys.executable, "-c", f"import site; site.addsitedir({str(site)!r}); print('ok')"],
                            capture_output=True, text=True)
    assert result.stdout.strip() == "ok" and result.stderr == ""
