"""Figures written next to the DM checkpoint: the loss curve and DDIM samples on held-out tumour slices.

Drawn with matplotlib's object-oriented ``Figure`` (no pyplot, no global backend switch), saved atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from monai.networks.nets import DiffusionModelUNet

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.diffusion.config import DiffusionConfig, InputScaling
from nnunet_dkm.diffusion.estimates import synthesise_post_contrast
from nnunet_dkm.preprocessing import CachedExam
from pretrain_dm.slices import crop_around

SAMPLE_ROWS = 4


def save_figure(figure: Figure, path: Path, dpi: int = 110) -> None:
    """Save atomically (temporary file, then rename)."""
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=dpi, bbox_inches="tight", format="png"))


def plot_loss_curve(history: dict[str, list[float]], path: Path) -> None:
    """Training loss (raw and smoothed) and validation loss against the step, log scale."""
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
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


def held_out_tumour_patches(exams: Sequence[CachedExam], patch_size: tuple[int, int], seed: int,
                            rows: int = SAMPLE_ROWS) -> np.ndarray:
    """Up to ``rows`` (1 + K, H, W) patches centred on tumour in held-out ``exams`` (on the most enhancing slice of
    exams without label), spread over exams first, then over slices."""
    rng = np.random.default_rng(seed)
    candidates = []  # (exam, slice index) in round-robin order over the held-out exams
    per_exam = []
    for exam in exams:
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
        patches.append(crop_around(np.asarray(images[:, index], dtype=np.float32), centre, patch_size, rng))
    return np.stack(patches)


def plot_samples(network: DiffusionModelUNet, config: DiffusionConfig, scaling: InputScaling, patches: np.ndarray,
                 seed: int, ddim_steps: int, step: int, path: Path) -> None:
    """Rows of held-out slices: pre-contrast, true post-contrast 1, DM post-contrast 1 (DDIM), DM minus true.

    Args:
        patches: (N, 1 + K, H, W) nnU-Net-normalised patches (channel 0 pre-contrast).

    All panels in nnU-Net-normalised units (pre-contrast z-score); the DM output is mapped back from its input range.
    """
    device = next(network.parameters()).device
    x_pre = torch.from_numpy(patches[:, :1]).to(device) * scaling.scale + scaling.offset
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(patches), config.num_post_phases, *patches.shape[2:]), generator=generator)
    synthetic = synthesise_post_contrast(network, config, x_pre, noise.to(device), ddim_steps)
    synthetic = ((synthetic.cpu() - scaling.offset) / scaling.scale).numpy()
    pre, true_post = patches[:, 0], patches[:, 1]
    figure = Figure(figsize=(10, 2.6 * len(patches)))
    axes = figure.subplots(len(patches), 4, squeeze=False)
    low, high = np.percentile(np.concatenate([pre.ravel(), true_post.ravel()]), [1, 99.5])
    titles = ("pre-contrast", "true post-contrast 1", f"DM post-contrast 1 ({ddim_steps} DDIM steps)", "DM - true")
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
    figure.suptitle(f"held-out slices after {step} steps")
    save_figure(figure, path)
