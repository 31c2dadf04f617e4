"""Shared pytest fixtures: the real TCIA case location and isolated nnU-Net folders."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

# one worker process where nnU-Net's convention (and the DM cache's -np default) would spawn several: each spawned
# worker costs seconds here; read by nnunetv2.configuration at its import, so set before anything imports nnunetv2
os.environ.setdefault("nnUNet_def_n_proc", "1")

from nnunet_dkm.ext_trainer_path import EXT_TRAINER_FOLDER  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NACT_PILOT = REPO_ROOT.parent / "shared" / "data" / "breast_mri_nact_pilot"


@pytest.fixture(scope="session")
def nact_pilot_folder() -> Path:
    """The shared real Breast-MRI-NACT-Pilot case; tests using it skip where it is absent.

    Override the location with ``NNUNET_DKM_NACT_PILOT``.
    """
    folder = Path(os.environ.get("NNUNET_DKM_NACT_PILOT", DEFAULT_NACT_PILOT))
    if not folder.is_dir():
        pytest.skip(
            f"real TCIA Breast-MRI-NACT-Pilot case not found at {folder} "
            "(set NNUNET_DKM_NACT_PILOT to its folder to run this test)"
        )
    return folder


@pytest.fixture
def nnunet_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Fresh nnUNet_raw / nnUNet_preprocessed / nnUNet_results folders, exported for the test."""
    folders = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
        folders[name] = folder
    return folders


PHANTOM_ID = 990


def worker_threads() -> int:
    """Torch threads for one test process: the cores it may use, shared among pytest-xdist's workers (``make test``
    runs one per core; two workers of two threads each on two cores run several times slower)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, len(os.sched_getaffinity(0)) // workers)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, give each worker and the commands it runs (they inherit ``OMP_NUM_THREADS``) its share of
    the cores."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(worker_threads())
        torch.set_num_threads(worker_threads())


def journey_environment(root: Path) -> dict[str, str]:
    """The environment of a command-line journey: fresh nnU-Net folders under ``root``, the DKM trainers findable,
    this test process's torch threads, one nnU-Net export worker (each spawned worker costs seconds here), no DM
    override."""
    env = {**os.environ, "nnUNet_def_n_proc": "1", "nnUNet_extTrainer": str(EXT_TRAINER_FOLDER)}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir()
        env[name] = str(root / name)
    env.pop("nnUNet_dkm_checkpoint", None)
    return env


def run_command(command: list[str], env: dict[str, str], expect_ok: bool = True) -> subprocess.CompletedProcess:
    """Run one command line (15 min at most); where it must succeed, fail with the tail of its output."""
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if expect_ok:
        assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def plan_and_preprocess(dataset_id: int, env: dict[str, str] | None = None) -> None:
    """Run ``nnUNetv2_plan_and_preprocess -d ID -c 2d --verify_dataset_integrity`` with one worker process."""
    import sys

    command = [
        str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"),
        "-d", str(dataset_id), "-c", "2d", "--verify_dataset_integrity", "-npfp", "1", "-np", "1", "--no_pbar",
    ]  # fmt: skip
    run_command(command, env or os.environ.copy())


@pytest.fixture(scope="session")
def planned_phantom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small synthetic phantom dataset (id 990), planned and preprocessed for 2d by nnU-Net itself.

    Returns the three nnU-Net folders; tests export them with ``use_nnunet_folders``. Treat as read-only
    apart from ``dkm/`` outputs.
    """
    from dataset_conversion.phantom.synthesize import synthesize_dataset

    root = tmp_path_factory.mktemp("planned_phantom")
    folders = {name: root / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in folders.values():
        folder.mkdir()
    synthesize_dataset(
        PHANTOM_ID, preset="demo", seed=3, num_train=3, num_test=1, num_unlabelled=2, shape=(64, 64, 6),
        raw_folder=folders["nnUNet_raw"],
    )
    plan_and_preprocess(PHANTOM_ID, env={**os.environ, **{k: str(v) for k, v in folders.items()}})
    return folders


def use_nnunet_folders(folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Export a set of nnU-Net folders for the duration of one test."""
    for name, folder in folders.items():
        monkeypatch.setenv(name, str(folder))


@pytest.fixture(scope="session")
def tiny_dm(planned_phantom: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DM pretrained for two steps on the planned phantom, outside the dataset's dkm folder (read-only)."""
    from pretrain_dm.settings import PretrainSettings
    from pretrain_dm.training import DmPretrainer

    with pytest.MonkeyPatch.context() as monkeypatch:
        use_nnunet_folders(planned_phantom, monkeypatch)
        monkeypatch.setenv("nnUNet_dkm_checkpoint", str(tmp_path_factory.mktemp("tiny_dm") / "dm.pt"))
        settings = PretrainSettings(dataset_id=PHANTOM_ID, config_overrides={"channels": (16, 32, 32, 32)}, steps=2,
                                    batch_size=2, patch_size=(32, 32), sample_ddim_steps=1)
        return DmPretrainer(settings, progress=False).run()


TINY_DM = {"channels": (8, 16, 16, 16), "norm_num_groups": 8, "num_head_channels": 8}


def tiny_config(**overrides):
    """A DM config small enough for unit tests (the small preset, narrowed)."""
    from nnunet_dkm.diffusion.presets import preset_network

    return preset_network("small", **{**TINY_DM, **overrides})


def randomised_network(config, seed: int = 0):
    """A DM whose every parameter is random (MONAI zero-initialises the output conv), in eval mode."""
    import torch

    from nnunet_dkm.diffusion.network import build_network

    torch.manual_seed(seed)
    network = build_network(config)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return network.eval()


def squeeze(text: str) -> str:
    """``text`` with runs of spaces folded to one: markdown tables are padded to their widest cell."""
    return re.sub(" +", " ", text)
