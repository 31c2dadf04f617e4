"""Shared pytest fixtures: the real TCIA case location and isolated nnU-Net folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
