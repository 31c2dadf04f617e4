"""DM pretraining: checkpoints, exact resume, refusal to overwrite, NaN stop, DDP, and the CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import PHANTOM_ID, use_nnunet_folders

from nnunet_dkm.diffusion.checkpoint import load_checkpoint, load_network
from nnunet_dkm.diffusion.presets import DM_PRESETS
from nnunet_dkm.preprocessing import PlannedDataset, build_cache
from pretrain_dm.objective import enhancement_weights, weighted_mse
from pretrain_dm.settings import PretrainingError, PretrainSettings
from pretrain_dm.slices import PatchSampler, crop_around
from pretrain_dm.training import DmPretrainer

BIN = Path(sys.executable).parent
TINY = {"channels": (16, 32, 32, 32)}


def tiny_settings(monkeypatch: pytest.MonkeyPatch, checkpoint: Path, steps: int, **changes) -> PretrainSettings:
    """Tiny settings for a run that writes ``checkpoint`` (through ``$nnUNet_dkm_checkpoint``, as a user would)."""
    monkeypatch.setenv("nnUNet_dkm_checkpoint", str(checkpoint))
    values = dict(dataset_id=PHANTOM_ID, config_overrides=dict(TINY), steps=steps, batch_size=2, patch_size=(32, 32),
                  validate_every=2, save_every=2, ema_decay=0.9, sample_ddim_steps=2, warmup_steps=2)
    values.update(changes)
    return PretrainSettings(**values)


def test_pretraining_writes_a_self_contained_checkpoint_and_figures(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    path = DmPretrainer(tiny_settings(monkeypatch, tmp_path / "dm.pt", steps=4), progress=False).run()

    network, checkpoint = load_network(path)
    assert checkpoint.weights_are_ema and checkpoint.config.channels == TINY["channels"]
    assert checkpoint.config.num_post_phases == 2  # the phantom's early and late phases
    assert checkpoint.plans_identity["configuration"] == "2d"
    assert checkpoint.metadata["steps"] == 4 and len(checkpoint.metadata["validation_exams"]) >= 1
    assert not set(checkpoint.metadata["validation_exams"]) & set(checkpoint.metadata["train_exams"])
    assert np.isfinite(checkpoint.metadata["last_validation_loss"])
    output = network(torch.zeros(1, 3, 32, 32), torch.tensor([10]))
    assert output.shape == (1, 2, 32, 32)
    for figure in ("dm_loss_curve.png", "dm_samples.png"):
        assert (tmp_path / figure).stat().st_size > 10_000


def test_continue_resumes_exactly(planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    straight = DmPretrainer(tiny_settings(monkeypatch, tmp_path / "straight.pt", steps=4), progress=False).run()
    DmPretrainer(tiny_settings(monkeypatch, tmp_path / "resumed.pt", steps=2), progress=False).run()
    resumed = DmPretrainer(tiny_settings(monkeypatch, tmp_path / "resumed.pt", steps=4), resume=True,
                           progress=False).run()

    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    for key in a.weights:
        torch.testing.assert_close(a.weights[key], b.weights[key], rtol=0, atol=0)
    for key in a.training_state["raw_weights"]:
        torch.testing.assert_close(a.training_state["raw_weights"][key], b.training_state["raw_weights"][key],
                                   rtol=0, atol=0)
    assert a.training_state["history"]["train_loss"] == b.training_state["history"]["train_loss"]


def test_slices_per_second_after_continue_counts_only_this_process_steps(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A clock that advances 10 s per training step: 2 slices per step give 0.2 slices/s, also after a resume (it
    used to count the steps done before --continue too)."""
    use_nnunet_folders(planned_phantom, monkeypatch)
    DmPretrainer(tiny_settings(monkeypatch, tmp_path / "dm.pt", steps=2), progress=False).run()
    clock, postfixes = [0.0], []
    train_step = DmPretrainer.train_step

    def slow_step(self: DmPretrainer) -> float:
        clock[0] += 10.0
        return train_step(self)

    class Bar:
        def set_postfix(self, **values: str) -> None:
            postfixes.append(values["slices_s"])

        def __getattr__(self, name: str):
            return lambda *args, **kwargs: None

    monkeypatch.setattr("pretrain_dm.training.time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(DmPretrainer, "train_step", slow_step)
    monkeypatch.setattr(DmPretrainer, "_progress_bar", lambda self: Bar())
    DmPretrainer(tiny_settings(monkeypatch, tmp_path / "dm.pt", steps=4), resume=True, progress=False).run()
    assert postfixes == ["0.2", "0.2"]


def test_existing_checkpoint_needs_continue_or_overwrite(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    DmPretrainer(tiny_settings(monkeypatch, tmp_path / "dm.pt", steps=2), progress=False).run()
    with pytest.raises(PretrainingError, match="already exists.*--continue.*--overwrite"):
        DmPretrainer(tiny_settings(monkeypatch, tmp_path / "dm.pt", steps=2), progress=False)
    with pytest.raises(PretrainingError, match="settings that differ.*batch_size"):
        DmPretrainer(tiny_settings(monkeypatch, tmp_path / "dm.pt", steps=4, batch_size=3), resume=True,
                     progress=False)
    DmPretrainer(tiny_settings(monkeypatch, tmp_path / "dm.pt", steps=2, seed=5), overwrite=True,
                 progress=False).run()
    assert load_checkpoint(tmp_path / "dm.pt").training_state["settings"]["seed"] == 5


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    pretrainer = DmPretrainer(tiny_settings(monkeypatch, tmp_path / "dm.pt", steps=6), progress=False)
    real_loss = pretrainer._loss
    calls = {"n": 0}

    def loss_that_diverges(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if pretrainer.step >= 3 and pretrainer.network.training else loss

    monkeypatch.setattr(pretrainer, "_loss", loss_that_diverges)
    with pytest.raises(PretrainingError, match="loss became nan at step 3.*last good checkpoint"):
        pretrainer.run()
    assert load_checkpoint(tmp_path / "dm.pt").metadata["steps"] == 2


def test_foreground_sampling_finds_the_tumour(
    planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    cache = build_cache(PlannedDataset.load(PHANTOM_ID, "2d"), progress=False)
    labelled = [exam for exam in cache.exams if exam.source == "labelled"]

    def share_with_tumour(fraction: float) -> float:
        sampler = PatchSampler(labelled, (16, 16), fraction, np.random.default_rng(0))
        return float(np.mean([patch[-1].any() for patch in sampler.sample_batch(40, with_label=True)]))

    assert share_with_tumour(1.0) == 1.0
    assert share_with_tumour(0.0) < 0.6


def test_enhancement_weighting_favours_enhancing_pixels_and_is_off_by_default() -> None:
    x_pre = torch.zeros(1, 1, 2, 2)
    x_post = torch.tensor([[[[0.0, 0.0], [0.0, 2.0]], [[0.0, 0.0], [0.0, 4.0]]]])  # K = 2 phases
    assert enhancement_weights(x_pre, x_post, 0.0) is None
    weights = enhancement_weights(x_pre, x_post, 1.0)
    assert torch.equal(weights, torch.tensor([[[[1.0, 1.0], [1.0, 4.0]]]]))
    prediction, target = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    assert weighted_mse(prediction, target, None) == weighted_mse(prediction, target, weights) == 1.0
    error_at_enhancing_pixel = torch.zeros(1, 2, 2, 2)
    error_at_enhancing_pixel[..., 1, 1] = 1.0
    assert torch.isclose(weighted_mse(error_at_enhancing_pixel, torch.zeros_like(target), weights),
                         torch.tensor(4.0 / 7.0))  # mean(w * e^2) / mean(w) = (4 * 2 / 8) / (7 / 4)


def test_each_preset_recipe_has_one_source_that_settings_and_cli_read() -> None:
    from pretrain_dm.cli import build_parser, settings_from_args

    for name, preset in DM_PRESETS.items():
        from_cli = settings_from_args(build_parser().parse_args(["-d", "990", "--preset", name]))
        assert from_cli.recipe == preset.recipe == PretrainSettings(dataset_id=990, preset=name).recipe
        assert from_cli.max_minutes is None  # the recipe is a step count; minutes are only an optional cap
    small = DM_PRESETS["small"].recipe
    assert (small.foreground_fraction, small.enhancement_weight, small.high_noise_fraction) == (0.9, 2.0, 0.5)
    plain = settings_from_args(build_parser().parse_args(["-d", "990", "--enhancement-weight", "0",
                                                          "--foreground-fraction", "0.5", "--steps", "7"]))
    assert (plain.foreground_fraction, plain.enhancement_weight, plain.steps) == (0.5, 0.0, 7)
    assert plain.batch_size == small.batch_size


@pytest.mark.parametrize("arguments", [["--steps", "0"], ["--batch-size", "0"], ["--steps", "-5"],
                                       ["--foreground-fraction", "1.5"], ["--lr", "nan"], ["--max-minutes", "inf"],
                                       ["--patch-size", "0", "64"]])
def test_bad_numbers_get_a_one_line_error(arguments: list[str], capsys: pytest.CaptureFixture) -> None:
    from pretrain_dm.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["-d", "990", *arguments])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("nnUNetv2_dkm_pretrain: error: argument") and arguments[0] in error


def test_kept_snapshots_hold_the_weights_of_their_step(planned_phantom: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    pretrainer = DmPretrainer(tiny_settings(monkeypatch, tmp_path / "dm.pt", steps=3, keep_steps=(0, 2), ema_decay=0),
                              progress=False)
    initial = {k: v.clone() for k, v in pretrainer.network.state_dict().items()}
    pretrainer.run()
    untrained, two = load_checkpoint(tmp_path / "dm.step0.pt"), load_checkpoint(tmp_path / "dm.step2.pt")
    assert (untrained.metadata["steps"], two.metadata["steps"]) == (0, 2)
    assert untrained.training_state is None and not (tmp_path / "dm.step3.pt").exists()
    for key, value in initial.items():
        torch.testing.assert_close(untrained.weights[key], value, rtol=0, atol=0)
    final = load_checkpoint(tmp_path / "dm.pt")
    assert any(not torch.equal(two.weights[k], final.weights[k]) for k in final.weights)


def test_label_free_pretraining_never_sees_a_tumour_label(planned_phantom: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_nnunet_folders(planned_phantom, monkeypatch)
    pretrainer = DmPretrainer(tiny_settings(monkeypatch, tmp_path / "dm.pt", steps=1, patch_centring="enhancement"),
                              progress=False)
    assert all(exam.seg_file is None and not exam.tumour_slices for exam in pretrainer.cache.exams)
    assert {exam.source for exam in pretrainer.cache.exams} == {"labelled", "unlabelled"}  # still every exam
    pretrainer.run()
    metadata = load_checkpoint(tmp_path / "dm.pt").metadata
    assert metadata["label_free"] is True and metadata["recipe"]["patch_centring"] == "enhancement"


def test_crop_keeps_the_centre_and_pads_small_slices() -> None:
    rng = np.random.default_rng(0)
    stack = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12) + 1
    for _ in range(20):
        patch = crop_around(stack, np.array([7, 3]), (4, 4), rng)
        assert stack[0, 7, 3] in patch[0] and patch.shape == (2, 4, 4)
    padded = crop_around(stack, np.array([5, 5]), (16, 16), rng)
    assert padded.shape == (2, 16, 16) and np.count_nonzero(padded[0]) == 120


@pytest.mark.slow
def test_cli_error_names_the_missing_dataset(nnunet_folders: dict[str, Path]) -> None:
    result = subprocess.run([str(BIN / "nnUNetv2_dkm_pretrain"), "-d", "321", "-c", "2d"], capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and "no dataset with id 321" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_torchrun_two_cpu_processes_end_with_identical_weights(
    planned_phantom: dict[str, Path], tmp_path: Path
) -> None:
    env = {**os.environ, **{k: str(v) for k, v in planned_phantom.items()}, "OMP_NUM_THREADS": "1"}
    command = [
        str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "pretrain_dm",
        "-d", str(PHANTOM_ID), "-c", "2d", "--steps", "3", "--batch-size", "2", "--patch-size", "32", "32",
        "--channels", "16", "32", "32", "32", "--validate-every", "3",
    ]  # fmt: skip
    env["nnUNet_dkm_checkpoint"] = str(tmp_path / "ddp.pt")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    checkpoint = load_checkpoint(tmp_path / "ddp.pt")
    digests = checkpoint.metadata["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert checkpoint.metadata["world_size"] == 2


SLOW_RANK = """import os, sys, time
from pretrain_dm import training
from pretrain_dm.cli import main

if os.environ["RANK"] == "1":  # rank 1 starts training 3 s after rank 0 and is slower at every step
    run, train_step = training.DmPretrainer.run, training.DmPretrainer.train_step
    training.DmPretrainer.run = lambda self: (time.sleep(3), run(self))[1]
    training.DmPretrainer.train_step = lambda self: (time.sleep(0.3), train_step(self))[1]
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_torchrun_ranks_stop_together_at_the_time_cap_when_one_is_slower(
    planned_phantom: dict[str, Path], tmp_path: Path
) -> None:
    script = tmp_path / "slow_rank.py"
    script.write_text(SLOW_RANK)
    env = {**os.environ, **{k: str(v) for k, v in planned_phantom.items()}, "OMP_NUM_THREADS": "1",
           "nnUNet_dkm_checkpoint": str(tmp_path / "capped.pt")}
    command = [
        str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(script), "-d", str(PHANTOM_ID), "-c", "2d",
        "--steps", "1000", "--max-minutes", "0.1", "--batch-size", "2", "--patch-size", "32", "32",
        "--channels", "16", "32", "32", "32", "--validate-every", "1000",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "--max-minutes 0.1 reached" in result.stdout
    checkpoint = load_checkpoint(tmp_path / "capped.pt")
    digests = checkpoint.metadata["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] and 0 < checkpoint.metadata["steps"] < 1000


@pytest.mark.slow
def test_sigterm_saves_the_step_reached_and_exits_with_143(planned_phantom: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, **{k: str(v) for k, v in planned_phantom.items()}, "OMP_NUM_THREADS": "1",
           "nnUNet_dkm_checkpoint": str(tmp_path / "dm.pt")}
    command = [
        str(BIN / "nnUNetv2_dkm_pretrain"), "-d", str(PHANTOM_ID), "-c", "2d", "--steps", "1000",
        "--save-every", "1000", "--validate-every", "1000", "--batch-size", "2", "--patch-size", "32", "32",
        "--channels", "16", "32", "32", "32",
    ]  # fmt: skip
    progress = tmp_path / "progress.txt"
    with progress.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        deadline = time.monotonic() + 300
        while not re.search(r"\b([2-9]|\d\d+)/1000\b", progress.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)  # until two steps are done
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM == 143, progress.read_text()[-3000:]
    checkpoint = load_checkpoint(tmp_path / "dm.pt")
    steps = checkpoint.metadata["steps"]
    assert 2 <= steps < 1000 and checkpoint.training_state["step"] == steps
    assert checkpoint.stopped_early and checkpoint.pretraining_steps() == (steps, 1000)
    assert f"checkpoint saved at step {steps}" in stdout and "--continue" in stdout


def test_batches_drawn_ahead_train_the_same_weights(planned_phantom: dict[str, Path],
                                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The GPU path's background prefetch (forced on here, on the CPU) changes no draw: same weights, bit for bit."""
    use_nnunet_folders(planned_phantom, monkeypatch)
    in_place = DmPretrainer(tiny_settings(monkeypatch, tmp_path / "in_place.pt", steps=3), progress=False).run()
    monkeypatch.setattr("pretrain_dm.training.prefetches", lambda device: True)
    trainer = DmPretrainer(tiny_settings(monkeypatch, tmp_path / "ahead.pt", steps=3), progress=False)
    assert trainer.batches.pool is not None
    ahead = trainer.run()

    a, b = load_checkpoint(in_place), load_checkpoint(ahead)
    for key in a.weights:
        torch.testing.assert_close(a.weights[key], b.weights[key], rtol=0, atol=0)
    assert a.training_state["history"]["train_loss"] == b.training_state["history"]["train_loss"]
