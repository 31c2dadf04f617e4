"""Figures written next to the DM checkpoint: the loss curve and DDIM samples on held-out tumour slices."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from nnunet_dkm.diffusion.network import synthesise_post_contrast  # noqa: E402
from pretrain_dm.slices import crop_around  # noqa: E402

if TYPE_CHECKING:
    from pretrain_dm.training import DmPretrainer

SAMPLE_ROWS = 4


def save_figure(figure: plt.Figure, path: Path) -> None:
    """Save atomically (temporary file, then rename) and close the figure."""
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(temporary, dpi=110, bbox_inches="tight")
    plt.close(figure)
    os.replace(temporary, path)


def plot_loss_curve(history: dict[str, list[float]], path: Path) -> None:
    """Training loss (raw and smoothed) and validation loss against the step, log scale."""
    figure, axis = plt.subplots(figsize=(7, 4))
    steps, losses = np.asarray(history["step"]), np.asarray(history["train_loss"])
    if len(losses):
        axis.plot(steps, losses, color="0.75", linewidth=0.6, label="training loss")
        window = max(1, len(losses) // 50)
        smoothed = np.convolve(losses, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1:], smoothed, color="C0", label=f"training loss (mean of {window})")
    if history["val_loss"]:
        axis.plot(history["val_step"], history["val_loss"], "o-", color="C3", label="validation loss (fixed set)")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("MSE")
    axis.set_title("DM pretraining")
    axis.legend()
    axis.grid(alpha=0.3)
    save_figure(figure, path)


def held_out_tumour_patches(pretrainer: DmPretrainer, rows: int = SAMPLE_ROWS) -> np.ndarray:
    """Up to ``rows`` (1 + K, H, W) patches centred on tumour in held-out exams (on the most enhancing slice of
    unlabelled ones), spread over exams first, then over slices."""
    rng = np.random.default_rng(pretrainer.settings.seed)
    candidates = []  # (exam, slice index) in round-robin order over the held-out exams
    per_exam = []
    for exam in pretrainer.validation_exams:
        slices = list(exam.tumour_slices) or [int(np.argmax(exam.slice_enhancement))]
        picks = [slices[i] for i in np.linspace(0, len(slices) - 1, min(rows, len(slices))).round().astype(int)]
        per_exam.append([(exam, index) for index in dict.fromkeys(picks)])
    for round_ in range(rows):
        candidates += [picks[round_] for picks in per_exam if round_ < len(picks)]
    patches = []
    for exam, index in candidates[:rows]:
        images, seg = exam.load()
        if seg is not None and seg[index].any():
            centre = np.argwhere(seg[index] > 0).mean(axis=0).round().astype(int)
        else:
            centre = np.array(images.shape[2:]) // 2
        patches.append(crop_around(np.asarray(images[:, index], dtype=np.float32), centre, pretrainer.patch_size, rng))
    return np.stack(patches)


def plot_samples(pretrainer: DmPretrainer, path: Path) -> None:
    """Rows of held-out slices: pre-contrast, true post-contrast 1, DM post-contrast 1 (DDIM), DM minus true.

    All panels in nnU-Net-normalised units (pre-contrast z-score); the DM output is mapped back from its input range.
    """
    patches = torch.from_numpy(held_out_tumour_patches(pretrainer))
    network = (pretrainer.ema if pretrainer.ema is not None else pretrainer.network).eval()
    x_pre, _ = pretrainer._scaled(patches)
    generator = torch.Generator().manual_seed(pretrainer.settings.seed)
    noise = torch.randn((len(patches), pretrainer.config.num_post_phases, *pretrainer.patch_size), generator=generator)
    synthetic = synthesise_post_contrast(network, pretrainer.config, x_pre, noise.to(x_pre.device),
                                         pretrainer.settings.sample_ddim_steps)
    scaling = pretrainer.scaling
    synthetic = ((synthetic.cpu() - scaling.offset) / scaling.scale).numpy()
    pre, true_post = patches[:, 0].numpy(), patches[:, 1].numpy()
    figure, axes = plt.subplots(len(patches), 4, figsize=(10, 2.6 * len(patches)), squeeze=False)
    low, high = np.percentile(np.concatenate([pre.ravel(), true_post.ravel()]), [1, 99.5])
    titles = ("pre-contrast", "true post-contrast 1", f"DM post-contrast 1 ({pretrainer.settings.sample_ddim_steps} "
              "DDIM steps)", "DM - true")
    for row in range(len(patches)):
        difference = synthetic[row, 0] - true_post[row]
        limit = float(np.abs(difference).max()) or 1.0
        panels = (pre[row], true_post[row], synthetic[row, 0], difference)
        for column, panel in enumerate(panels):
            axis = axes[row, column]
            if column == 3:
                shown = axis.imshow(panel, cmap="coolwarm", vmin=-limit, vmax=limit)
                figure.colorbar(shown, ax=axis, fraction=0.046)
            else:
                axis.imshow(panel, cmap="gray", vmin=low, vmax=high)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[column], fontsize=9)
    figure.suptitle(f"held-out slices after {pretrainer.step} steps")
    save_figure(figure, path)
