"""The DM-quality measure (``nnUNetv2_dkm_dm_quality``): metrics, references, and the command on the images that
``nnUNetv2_dkm_synthesize_postcontrast`` writes."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PHANTOM_ID, use_nnunet_folders

from nnunet_dkm.evaluation.dm_quality import RegionScore, TumourMaskOracle, distance_to_margin, fit_global_linear
from pretrain_dm.settings import PretrainSettings
from pretrain_dm.training import DmPretrainer


def disc_slices(count: int, seed: int, noise: float = 0.3) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(pre, post, mask) slices with a disc 'tumour' whose enhancement is 1 + 0.5 pre + 3 exp(-depth / 3) + noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    slices = []
    for _ in range(count):
        cy, cx, radius = rng.uniform(12, 20), rng.uniform(12, 20), rng.uniform(5, 9)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        pre = rng.normal(0.0, 1.0, (32, 32)).astype(np.float32)
        enhancement = 1.0 + 0.5 * pre + 3.0 * np.exp(-distance_to_margin(mask) / 3.0)
        post = pre + np.where(mask, enhancement, 0.2) + rng.normal(0.0, noise, (32, 32))
        slices.append((pre, post.astype(np.float32), mask))
    return slices


def test_region_scores_are_mae_psnr_ssim_and_the_pearson_of_enhancement() -> None:
    rng = np.random.default_rng(0)
    pre = rng.normal(0, 1, (2, 16, 16)).astype(np.float32)
    true = pre + rng.uniform(0, 3, pre.shape).astype(np.float32)
    estimate = true + 0.5
    mask = np.zeros(pre.shape, bool)
    mask[:, 4:12, 4:12] = True
    score = RegionScore()
    score.add(estimate, pre, true, mask)
    summary = score.summary()
    assert summary["mae"] == pytest.approx(0.5)
    data_range = float(true.max() - true.min())
    assert summary["psnr"] == pytest.approx(10 * math.log10(data_range**2 / 0.25), rel=1e-5)
    assert summary["enhancement_corr"] == pytest.approx(1.0)  # a constant offset keeps the enhancement's shape
    exact = RegionScore()
    exact.add(true, pre, true, mask)
    assert exact.summary()["mae"] == 0 and exact.summary()["ssim"] == pytest.approx(1.0)
    identity = RegionScore()
    identity.add(pre, pre, true, mask)
    assert math.isnan(identity.summary()["enhancement_corr"])  # identity predicts no enhancement


def test_pooled_figures_from_running_sums_equal_those_of_the_pooled_voxels() -> None:
    rng = np.random.default_rng(1)
    score, predicted, true, errors = RegionScore(), [], [], []
    for size in (3, 5):  # two cases of different sizes, added one at a time
        pre = rng.normal(0, 1, (size, 12, 12)).astype(np.float32)
        post = pre + rng.uniform(0, 3, pre.shape).astype(np.float32)
        estimate = post + rng.normal(0, 0.5, pre.shape).astype(np.float32)
        mask = rng.random(pre.shape) < 0.4
        score.add(estimate, pre, post, mask)
        predicted.append(estimate[mask] - pre[mask])
        true.append(post[mask] - pre[mask])
        errors.append(np.abs(estimate[mask] - post[mask]))
    summary = score.summary()
    assert summary["voxels"] == sum(e.size for e in errors)
    assert summary["mae"] == pytest.approx(np.concatenate(errors).astype(np.float64).mean(), rel=1e-6)
    assert summary["enhancement_corr"] == pytest.approx(np.corrcoef(np.concatenate(predicted),
                                                                    np.concatenate(true))[0, 1], rel=1e-6)


def test_global_linear_map_recovers_slope_and_offset() -> None:
    pre = np.linspace(-2, 2, 50)
    assert np.allclose(fit_global_linear(pre, 1.5 * pre + 0.25), (1.5, 0.25))


def test_distance_to_margin_counts_voxels_inside_the_mask() -> None:
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    depth = distance_to_margin(mask)
    assert depth[3, 3] == 3 and depth[1, 3] == 1 and depth[0, 0] == 0
    assert distance_to_margin(mask[None]).shape == (1, 7, 7)


def test_mask_oracle_learns_the_visible_part_of_the_enhancement_and_keeps_the_rest() -> None:
    oracle = TumourMaskOracle.fit(disc_slices(20, seed=0))
    pre, post, mask = (np.stack(parts) for parts in zip(*disc_slices(10, seed=1), strict=True))
    outside = pre + 0.2
    estimate = oracle.predict(pre, mask, outside)
    assert np.array_equal(estimate[~mask], outside[~mask])
    score = RegionScore()
    score.add(estimate, pre, post, mask)
    assert score.summary()["mae"] < 0.35  # close to the noise (mean |N(0, 0.3)| = 0.24)
    assert score.summary()["enhancement_corr"] > 0.9


@pytest.fixture(scope="module")
def quality_dm(planned_phantom: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_nnunet_folders(planned_phantom, monkeypatch)
        monkeypatch.setenv("nnUNet_dkm_checkpoint", str(tmp_path_factory.mktemp("quality_dm") / "dm.pt"))
        settings = PretrainSettings(dataset_id=PHANTOM_ID, config_overrides={"channels": (16, 32, 32, 32)}, steps=2,
                                    batch_size=2, patch_size=(32, 32), sample_ddim_steps=1)
        return DmPretrainer(settings, progress=False).run()


def test_the_measure_gives_zero_for_the_true_images_and_the_identity_row_for_the_pre_contrast_image(
    planned_phantom: dict[str, Path], quality_dm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from nnunet_dkm.evaluation.dm_quality_cli import main

    use_nnunet_folders(planned_phantom, monkeypatch)
    raw = next(planned_phantom["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*"))
    exact, identity = tmp_path / "exact", tmp_path / "identity"
    exact.mkdir()
    identity.mkdir()
    for post in (raw / "kineticsTs").glob("*.nii.gz"):
        shutil.copyfile(post, exact / post.name)
        case, phase = post.name[: -len("_0001.nii.gz")], post.name[-len("0001.nii.gz"):]
        shutil.copyfile(raw / "imagesTs" / f"{case}_0000.nii.gz", identity / f"{case}_{phase}")
    common = ["-d", str(PHANTOM_ID), "-c", "2d", "-chk", str(quality_dm)]
    main([*common, "--synthetic", str(exact), "-o", str(tmp_path / "q_exact")])
    table = pd.read_csv(tmp_path / "q_exact" / "results.csv")
    synthetic = table[table["estimate"] == "synthetic"]
    assert (synthetic["mae"] == 0).all() and (synthetic["mae_vs_identity"] == -1).all()
    main([*common, "--synthetic", str(identity), "-o", str(tmp_path / "q_identity")])
    table = pd.read_csv(tmp_path / "q_identity" / "results.csv").set_index(["estimate", "phase", "region"])
    for key in [k for k in table.index if k[0] == "identity"]:
        made = table.loc[("synthetic", *key[1:])]
        assert made["mae"] == pytest.approx(table.loc[key, "mae"], rel=1e-6)
        assert made["psnr"] == pytest.approx(table.loc[key, "psnr"], rel=1e-6)
    report = (tmp_path / "q_identity" / "results.md").read_text()
    assert "## tumour" in report and "mask-told ceiling" in report and "linear" in report
    assert (tmp_path / "q_identity" / "examples.png").read_bytes()[:4] == b"\x89PNG"


def test_the_measure_synthesises_with_the_command_and_reuses_what_it_made(
    planned_phantom: dict[str, Path], quality_dm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    from nnunet_dkm.evaluation.dm_quality_cli import main

    use_nnunet_folders(planned_phantom, monkeypatch)
    arguments = ["-d", str(PHANTOM_ID), "-c", "2d", "-chk", str(quality_dm), "--ddim-steps", "2", "-o",
                 str(tmp_path / "q")]
    main(arguments)
    made = sorted(p.name for p in (tmp_path / "q" / "synthetic").iterdir())
    assert "synthesis.json" in made and any(name.endswith("_0001.nii.gz") for name in made)
    stamp = (tmp_path / "q" / "synthetic" / "synthesis.json").stat().st_mtime_ns
    capsys.readouterr()
    main(arguments)
    assert "synthesising" not in capsys.readouterr().err
    assert (tmp_path / "q" / "synthetic" / "synthesis.json").stat().st_mtime_ns == stamp
    record = json.loads((tmp_path / "q" / "synthetic" / "synthesis.json").read_text())
    assert record["checkpoint_sha256"] == hashlib.sha256(quality_dm.read_bytes()).hexdigest()
    assert record["cases"] == sorted(record["cases"]) and len(record["cases"]) >= 1  # the images' cases, by name
    table = pd.read_csv(tmp_path / "q" / "results.csv")
    assert set(table["estimate"]) >= {"identity", "linear", "synthetic"}
