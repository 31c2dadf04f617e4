"""One error path for every ``nnUNetv2_dkm_*`` command: the project's errors and the OSErrors about the user's paths
end in one ``error:`` line with exit status 1; tracebacks only with ``--verbose`` or ``nnUNet_dkm_verbose``."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
from pathlib import Path

import pytest

from nnunet_dkm.command_line import (
    add_verbose_argument,
    check_writable_folder,
    command_line_entry,
)
from nnunet_dkm.errors import NnunetDkmError

REPO_ROOT = Path(__file__).resolve().parents[1]


def failing_command(error: BaseException):
    """A command whose work raises ``error``."""

    @command_line_entry
    def main(argv: list[str]) -> None:
        parser = argparse.ArgumentParser()
        add_verbose_argument(parser)
        parser.parse_args(argv)
        raise error

    return main


@pytest.mark.parametrize(("error", "line"), [
    (NnunetDkmError("dataset 999 not found: run X"), "error: dataset 999 not found: run X"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/out"),
     "error: /data/out: permission denied: choose a path you may use, or change its permissions"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/in"), "error: /data/in: no such file or "
     "folder: check the path (and the nnUNet_raw, nnUNet_preprocessed and nnUNet_results variables)"),
    (OSError(errno.ENOSPC, "No space left on device"), "error: no space left on the disk (No space left on device): "
     "free some space or choose a folder on another disk"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), "error: /mnt/ro/x: read-only file system: choose a "
     "folder on a writable disk"),
    (MemoryError("Unable to allocate 7.28 TiB"), "error: out of memory (Unable to allocate 7.28 TiB): choose smaller "
     "sizes (shape, batch size, patch size, number of cases) or a machine with more memory"),
])
def test_user_errors_end_in_one_line_and_exit_status_1(error: BaseException, line: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_dkm_verbose", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        failing_command(error)([])
    assert exit_info.value.code == line  # Python prints it to stderr and exits with status 1


def test_tracebacks_with_verbose_or_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    error = PermissionError(errno.EACCES, "Permission denied", "/data/out")
    monkeypatch.delenv("nnUNet_dkm_verbose", raising=False)
    with pytest.raises(PermissionError):
        failing_command(error)(["--verbose"])
    with pytest.raises(SystemExit):  # the switch does not stick to the next command of the same process
        failing_command(error)([])
    monkeypatch.setenv("nnUNet_dkm_verbose", "1")
    with pytest.raises(PermissionError):
        failing_command(error)([])


def test_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_dkm_verbose", raising=False)
    with pytest.raises(KeyError):
        failing_command(KeyError("x"))([])
    with pytest.raises(OSError, match="Invalid argument"):  # an OSError that is not about a path
        failing_command(OSError(errno.EINVAL, "Invalid argument"))([])
    with pytest.raises(RuntimeError, match="shape mismatch"):
        failing_command(RuntimeError("shape mismatch"))([])


def test_ctrl_c_says_interrupted_with_the_shells_status(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("nnUNet_dkm_verbose", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        failing_command(KeyboardInterrupt())([])
    assert exit_info.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"


def test_an_output_folder_under_a_file_is_refused_without_creating_anything(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(NnunetDkmError, match=rf"^-o {a_file}/out/deeper: {a_file} is a file, not a folder"):
        check_writable_folder(a_file / "out" / "deeper", "-o")
    assert check_writable_folder(tmp_path / "new" / "folder", "-o") == tmp_path / "new" / "folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing created


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder; the sweep tests this as another user")
def test_a_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(NnunetDkmError, match="permission denied"):
        check_writable_folder(locked / "out", "--raw-folder")


def console_scripts() -> dict[str, str]:
    """``setup.py``'s console scripts: name -> ``module:function``."""
    text = (REPO_ROOT / "setup.py").read_text()
    return dict(re.findall(r'"(nnUNetv2_dkm_\w+)=([\w.]+:\w+)"', text))


def test_every_command_goes_through_the_one_error_path() -> None:
    scripts = console_scripts()
    assert len(scripts) >= 9
    for name, target in scripts.items():
        module_name, function_name = target.split(":")
        main = getattr(importlib.import_module(module_name), function_name)
        assert getattr(main, "__wrapped__", None) is not None, f"{name}: main is not wrapped by command_line_entry"


@pytest.mark.parametrize("gpu_visible, expected", [(True, "cuda"), (False, "cpu")])
def test_the_dkm_commands_default_to_cuda_where_a_gpu_is_visible_else_cpu(
        monkeypatch: pytest.MonkeyPatch, gpu_visible: bool, expected: str) -> None:
    import torch

    from nnunet_dkm.evaluation.dm_quality_cli import parse_args as dm_quality_arguments
    from nnunet_dkm.probe.cli import parser as probe_parser
    from pretrain_dm.cli import build_parser as pretrain_parser

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu_visible)
    assert pretrain_parser().parse_args(["-d", "990"]).device == expected
    assert probe_parser().parse_args(["-d", "990"]).device == expected
    assert dm_quality_arguments(["-d", "990"]).device == expected
    assert pretrain_parser().parse_args(["-d", "990", "-device", "cpu"]).device == "cpu"
