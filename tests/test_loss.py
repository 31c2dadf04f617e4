"""The SSIM term and the DC + CE + SSIM loss, against values computed independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunet_dkm.loss.dc_ce_ssim import DC_CE_SSIM_loss, SSIMLoss
from nnunet_dkm.loss.ssim import global_ssim


def numpy_ssim(s: np.ndarray, g: np.ndarray) -> float:
    """Eq. 7 written out with numpy: global means, population variances and covariance, L = 1."""
    c1, c2 = 0.01**2, 0.03**2
    mu_s, mu_g = s.mean(), g.mean()
    cov = ((s - mu_s) * (g - mu_g)).mean()
    return ((2 * mu_s * mu_g + c1) * (2 * cov + c2)) / ((mu_s**2 + mu_g**2 + c1) * (s.var() + g.var() + c2))


def test_identical_maps_give_one() -> None:
    maps = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(global_ssim(maps, maps), torch.ones(2, 3))


def test_hand_checked_case() -> None:
    # S = [0, 0.5, 1, 1], G = [0, 0, 1, 1]: mu_S = 0.625, mu_G = 0.5, var_S = 0.171875, var_G = 0.25,
    # cov = 0.1875 -> SSIM = (0.625 + 1e-4)(0.375 + 9e-4) / ((0.640625 + 1e-4)(0.421875 + 9e-4)) = 0.86917...
    s = torch.tensor([0.0, 0.5, 1.0, 1.0]).view(1, 1, 2, 2)
    g = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)
    expected = (0.625 + 1e-4) * (0.375 + 9e-4) / ((0.640625 + 1e-4) * (0.421875 + 9e-4))
    assert global_ssim(s, g).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(numpy_ssim(s.numpy(), g.numpy()), rel=1e-9)


def test_random_maps_match_numpy() -> None:
    rng = np.random.default_rng(0)
    s, g = rng.random((16, 16)), (rng.random((16, 16)) > 0.7).astype(float)
    value = global_ssim(torch.tensor(s)[None, None], torch.tensor(g)[None, None]).item()
    assert value == pytest.approx(numpy_ssim(s, g), rel=1e-5)


def test_constant_maps_have_finite_gradients() -> None:
    logits = torch.zeros(2, 2, 8, 8, requires_grad=True)  # softmax 0.5 everywhere
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)  # no foreground at all
    loss = SSIMLoss()(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_ignore_label_is_left_out() -> None:
    target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    target[..., :2, :] = 1
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 1, :2, :] = 10.0
    logits[:, 0, 2:, :] = 10.0
    perfect = SSIMLoss(ignore_label=2)(logits, target).item()
    corrupted_target = target.clone()
    corrupted_target[..., 3, :] = 2  # ignored row: whatever the prediction there, it must not count
    logits_wrong_there = logits.clone()
    logits_wrong_there[:, 1, 3, :] = 10.0
    logits_wrong_there[:, 0, 3, :] = -10.0
    assert SSIMLoss(ignore_label=2)(logits_wrong_there, corrupted_target).item() == pytest.approx(perfect, abs=1e-6)
    assert perfect < 1e-3


def test_region_training_uses_sigmoid_and_the_ignore_channel() -> None:
    target = torch.zeros(1, 2, 4, 4)  # one region + ignore channel
    target[:, 0, :2] = 1
    logits = torch.where(target[:, :1] > 0, 10.0, -10.0)
    assert SSIMLoss(regions=True, ignore_label=True)(logits, target).item() < 1e-3


def test_compound_loss_adds_half_of_one_minus_the_foreground_ssim() -> None:
    base = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    loss = DC_CE_SSIM_loss(base, SSIMLoss())
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 16, 16, generator=generator)
    target = (torch.rand(2, 1, 16, 16, generator=generator) > 0.6).long()
    foreground = 1.0 / (1.0 + np.exp((logits[:, 0] - logits[:, 1]).double().numpy()))  # softmax of class 1
    ssim = np.mean([numpy_ssim(foreground[b], target[b, 0].double().numpy()) for b in range(2)])
    expected = base(logits, target).item() + 0.5 * (1.0 - ssim)
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
