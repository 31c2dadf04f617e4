"""Atomic outputs: leftovers of killed runs are cleaned up at the next start, and finished outputs get the user's
normal permissions (not the private modes of temporary files)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import randomised_network, tiny_config

from nnunet_dkm.atomic import (
    default_file_mode,
    default_folder_mode,
    make_temporary_folder,
    publish,
    remove_stale_temporaries,
    temporary_name,
    write_atomically,
)

BIN = Path(sys.executable).parent


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_leftovers_of_dead_runs_on_this_host_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / temporary_name("Dataset990_X").replace(f".{os.getpid()}.", f".{dead_pid()}.")
    dead.mkdir()
    (dead / "a.nii.gz").write_bytes(b"x")
    dead_file = tmp_path / (temporary_name("dm_checkpoint.pt").replace(f".{os.getpid()}.", f".{dead_pid()}.") + ".pt")
    dead_file.write_bytes(b"x")
    live = make_temporary_folder(tmp_path, "Dataset991_Y")  # this process: alive
    other_host = tmp_path / ".tmp_Dataset992_Z.otherhost.1.0123abcd"
    other_host.mkdir()
    unrelated = tmp_path / ".tmp_cache_abc"
    unrelated.mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([dead, dead_file])
    assert not dead.exists() and not dead_file.exists()
    assert live.is_dir() and other_host.is_dir() and unrelated.is_dir()


def test_finished_outputs_get_the_users_normal_permissions(tmp_path: Path) -> None:
    from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint, save_checkpoint
    from nnunet_dkm.diffusion.config import InputScaling

    table = write_atomically(tmp_path / "table.csv", lambda path: path.write_text("a,b\n"))
    assert stat.S_IMODE(table.stat().st_mode) == default_file_mode()
    folder = make_temporary_folder(tmp_path, "Dataset993_P")
    publish(folder, tmp_path / "Dataset993_P")
    assert stat.S_IMODE((tmp_path / "Dataset993_P").stat().st_mode) == default_folder_mode()
    config = tiny_config()
    checkpoint = DiffusionCheckpoint(config, randomised_network(config).state_dict(), InputScaling(0.5, 0.0), {})
    saved = save_checkpoint(checkpoint, tmp_path / "dm_checkpoint.pt")
    assert stat.S_IMODE(saved.stat().st_mode) == default_file_mode() != 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset993_P", "dm_checkpoint.pt", "table.csv"]


def test_a_killed_synthesis_is_cleaned_up_by_the_next_one(nnunet_folders: dict[str, Path]) -> None:
    raw = nnunet_folders["nnUNet_raw"]
    command = [str(BIN / "nnUNetv2_dkm_synthesize"), "--shape", "48", "48", "4", "--num-test", "0",
               "--num-unlabelled", "0"]
    killed = subprocess.Popen([*command, "-d", "907", "--num-train", "40"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not [p for p in raw.glob(".tmp_Dataset907_*/imagesTr/*")] and time.monotonic() < deadline:
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    leftovers = list(raw.glob(".tmp_Dataset907_*"))
    assert len(leftovers) == 1, "the killed run should have left its temporary folder"

    result = subprocess.run([*command, "-d", "908", "--num-train", "1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"removed {leftovers[0]}" in result.stdout
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset908_DKMPhantom"]
    assert stat.S_IMODE((raw / "Dataset908_DKMPhantom").stat().st_mode) == default_folder_mode()


@pytest.mark.parametrize(("mask", "file_mode", "folder_mode"),
                         [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_default_modes_are_what_open_and_mkdir_give_under_the_umask(mask: int, file_mode: int, folder_mode: int,
                                                                    tmp_path: Path) -> None:
    previous = os.umask(mask)
    try:
        (tmp_path / "plain.txt").write_text("x")
        (tmp_path / "folder").mkdir()
        assert default_file_mode() == file_mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
        assert default_folder_mode() == folder_mode == stat.S_IMODE((tmp_path / "folder").stat().st_mode)
    finally:
        os.umask(previous)
