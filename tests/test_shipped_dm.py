"""Shipped DMs: exported small (float16 weights, sidecar), installed where the trainer finds it, refused for other
plans; and the demo's shipped DM fits the phantom ``make demo`` synthesizes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import PHANTOM_ID, use_nnunet_folders

from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpointError, load_checkpoint, load_network
from nnunet_dkm.diffusion.shipping import export_dm, install_dm, read_sidecar, sidecar_path
from nnunet_dkm.fingerprints import file_sha256
from nnunet_dkm.paths import dm_checkpoint_location


@pytest.fixture
def phantom(planned_phantom: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A private copy of the planned phantom without DMs: raw and preprocessed dataset folders."""
    folders = {name: Path(shutil.copytree(folder, tmp_path / name, ignore=shutil.ignore_patterns("dkm")))
               for name, folder in planned_phantom.items()}
    use_nnunet_folders(folders, monkeypatch)
    monkeypatch.delenv("nnUNet_dkm_checkpoint", raising=False)
    return {"raw": next(folders["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*")),
            "preprocessed": next(folders["nnUNet_preprocessed"].glob(f"Dataset{PHANTOM_ID}_*"))}


def test_export_writes_float16_weights_and_a_sidecar_and_install_round_trips(phantom: dict[str, Path],
                                                                            tiny_dm: Path, tmp_path: Path) -> None:
    shipped = tmp_path / "ship" / "dm.pt"
    shipped.parent.mkdir()
    export_dm(tiny_dm, shipped, phantom["raw"], phantom["preprocessed"], resumable=False, command="export")
    checkpoint = load_checkpoint(shipped)
    assert checkpoint.training_state is None
    assert {w.dtype for w in checkpoint.weights.values() if w.is_floating_point()} == {torch.float16}
    assert shipped.stat().st_size < 0.6 * tiny_dm.stat().st_size  # no optimizer state, half the bytes per weight
    sidecar = read_sidecar(shipped)
    assert sidecar["sha256"] == file_sha256(shipped) and sidecar["weights_dtype"] == "float16"
    assert sidecar["steps"] == sidecar["recipe_steps"] == 2
    assert sidecar["plans_identity"]["dataset_name"] == phantom["raw"].name
    assert sidecar["made_by"].startswith(f"nnUNetv2_dkm_pretrain -d {PHANTOM_ID} -c 2d")

    target, notes = install_dm(shipped, phantom["raw"], phantom["preprocessed"], "2d", "nnUNetPlans", "kinetic",
                               overwrite=False)
    assert target == dm_checkpoint_location(phantom["preprocessed"], "2d").path
    assert file_sha256(target) == sidecar["sha256"]
    assert not any("other data" in note for note in notes)
    network, _ = load_network(target)  # float16 weights into the float32 network
    original, _ = load_network(tiny_dm)
    assert next(network.parameters()).dtype == torch.float32
    inputs, t = torch.randn(1, 3, 32, 32), torch.tensor([250])
    with torch.no_grad():
        torch.testing.assert_close(network(inputs, t), original(inputs, t), rtol=2e-2, atol=2e-2)
    again, notes = install_dm(shipped, phantom["raw"], phantom["preprocessed"], "2d", "nnUNetPlans", "kinetic", False)
    assert again == target and "already installed (same sha256)" in notes


def test_install_refuses_other_plans_a_damaged_file_and_a_different_installed_dm(
        phantom: dict[str, Path], tiny_dm: Path, tmp_path: Path) -> None:
    shipped = tmp_path / "dm.pt"
    export_dm(tiny_dm, shipped, phantom["raw"], phantom["preprocessed"], resumable=False, command="export")
    plans_file = phantom["preprocessed"] / "nnUNetPlans.json"
    original_plans = plans_file.read_text()
    plans = json.loads(original_plans)
    plans["configurations"]["2d"]["spacing"] = [s * 2 for s in plans["configurations"]["2d"]["spacing"]]
    plans_file.write_text(json.dumps(plans))
    with pytest.raises(DiffusionCheckpointError, match="spacing"):
        install_dm(shipped, phantom["raw"], phantom["preprocessed"], "2d", "nnUNetPlans", "kinetic", False)
    assert not dm_checkpoint_location(phantom["preprocessed"], "2d").path.exists()
    plans_file.write_text(original_plans)

    other = tmp_path / "other.pt"
    shutil.copyfile(tiny_dm, other)
    install_dm(other, phantom["raw"], phantom["preprocessed"], "2d", "nnUNetPlans", "kinetic", False)
    with pytest.raises(DiffusionCheckpointError, match="--overwrite"):
        install_dm(shipped, phantom["raw"], phantom["preprocessed"], "2d", "nnUNetPlans", "kinetic", False)
    install_dm(shipped, phantom["raw"], phantom["preprocessed"], "2d", "nnUNetPlans", "kinetic", True)

    damaged = sidecar_path(shipped)
    damaged.write_text(damaged.read_text().replace(file_sha256(shipped), "0" * 64))
    with pytest.raises(DiffusionCheckpointError, match="differs from its sidecar"):
        install_dm(shipped, phantom["raw"], phantom["preprocessed"], "2d", "nnUNetPlans", "kinetic", True)


def test_an_unfinished_dm_ships_only_resumable(phantom: dict[str, Path], tiny_dm: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from nnunet_dkm.diffusion.checkpoint import save_checkpoint

    checkpoint = load_checkpoint(tiny_dm)
    unfinished = tmp_path / "unfinished.pt"
    save_checkpoint(replace(checkpoint, metadata={**checkpoint.metadata, "steps": 1}), unfinished)
    with pytest.raises(DiffusionCheckpointError, match="--resumable"):
        export_dm(unfinished, tmp_path / "out.pt", phantom["raw"], phantom["preprocessed"], False, "export")
    export_dm(unfinished, tmp_path / "out.pt", phantom["raw"], phantom["preprocessed"], True, "export")
    assert load_checkpoint(tmp_path / "out.pt").training_state is not None
    _, notes = install_dm(tmp_path / "out.pt", phantom["raw"], phantom["preprocessed"], "2d", "nnUNetPlans",
                          "kinetic", False)
    assert any(note.endswith("--continue") for note in notes)


def run_demo_dm(phantom: dict[str, Path], **environment: str) -> str:
    """``scripts/demo_dm.sh`` on the phantom copy; its output."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **environment}
    command = ["bash", str(REPO / "scripts" / "demo_dm.sh"), str(PHANTOM_ID), str(phantom["preprocessed"])]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout + result.stderr


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # pretrains two DMs of 2 steps through the command line
def test_the_demo_uses_a_shipped_dm_made_for_its_plans_and_else_pretrains(phantom: dict[str, Path], tiny_dm: Path,
                                                                         tmp_path: Path) -> None:
    from dataclasses import replace

    from nnunet_dkm.diffusion.checkpoint import save_checkpoint

    shipped = tmp_path / "shipped.pt"
    export_dm(tiny_dm, shipped, phantom["raw"], phantom["preprocessed"], resumable=False, command="export")
    installed = dm_checkpoint_location(phantom["preprocessed"], "2d").path

    output = run_demo_dm(phantom, DEMO_SHIPPED_DM=str(shipped))
    assert "using the DM shipped with the repository" in output and "pretraining the DM here" not in output
    assert file_sha256(installed) == file_sha256(shipped)
    assert f"reusing {installed}" in run_demo_dm(phantom, DEMO_SHIPPED_DM=str(shipped))

    installed.unlink()
    output = run_demo_dm(phantom, DEMO_SHIPPED_DM=str(shipped), DEMO_PRETRAIN="1", DEMO_DM_STEPS="2")
    assert "DEMO_PRETRAIN=1" in output and "DM pretraining took" in output
    assert load_checkpoint(installed).metadata["steps"] == 2 and file_sha256(installed) != file_sha256(shipped)

    installed.unlink()
    checkpoint = load_checkpoint(tiny_dm)
    other_plans = tmp_path / "other_plans.pt"
    save_checkpoint(replace(checkpoint, plans_identity={**checkpoint.plans_identity,
                                                        "dataset_name": "Dataset991_Other"}), other_plans)
    output = run_demo_dm(phantom, DEMO_SHIPPED_DM=str(other_plans), DEMO_DM_STEPS="2")
    assert "Dataset991_Other" in output and "cannot be used for this dataset" in output
    assert "DM pretraining took" in output and load_checkpoint(installed).metadata["steps"] == 2


DEMO_DM = REPO / "benchmarks" / "dms" / "demo_phantom_2d.pt"


def test_the_committed_demo_dm_is_finished_and_fits_the_phantom_make_demo_synthesizes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository's demo DM: the small recipe's 8000 steps, float16, the file its sidecar describes, made for
    the plans of ``make demo``'s phantom (64x64x12, the demo preset; fewer cases give the same plans)."""
    from conftest import plan_and_preprocess

    from dataset_conversion.phantom.synthesize import synthesize_dataset

    sidecar = read_sidecar(DEMO_DM)
    assert sidecar is not None and sidecar["sha256"] == file_sha256(DEMO_DM) and not sidecar["resumable"]
    checkpoint = load_checkpoint(DEMO_DM)
    assert not checkpoint.stopped_early and checkpoint.metadata["steps"] == 8000
    assert checkpoint.metadata["preset"] == "small" and checkpoint.training_state is None
    assert {tensor.dtype for tensor in checkpoint.weights.values() if tensor.is_floating_point()} == {torch.float16}

    folders = {name: tmp_path / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in folders.values():
        folder.mkdir()
    synthesize_dataset(PHANTOM_ID, preset="demo", seed=0, num_train=5, num_test=0, num_unlabelled=0,
                       shape=(64, 64, 12), raw_folder=folders["nnUNet_raw"])
    plan_and_preprocess(PHANTOM_ID, env={**os.environ, **{name: str(path) for name, path in folders.items()}})
    use_nnunet_folders(folders, monkeypatch)
    monkeypatch.delenv("nnUNet_dkm_checkpoint", raising=False)
    raw = next(folders["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*"))
    preprocessed = next(folders["nnUNet_preprocessed"].glob(f"Dataset{PHANTOM_ID}_*"))
    installed, notes = install_dm(DEMO_DM, raw, preprocessed, "2d", "nnUNetPlans", "kinetic", False)
    assert file_sha256(installed) == sidecar["sha256"] and "8000" in notes[0]
    network, _ = load_network(installed)  # float16 weights into the float32 network
    assert next(network.parameters()).dtype == torch.float32
