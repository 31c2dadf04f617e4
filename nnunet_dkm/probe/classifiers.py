"""Pixel classifiers on frozen features (as in label-efficient diffusion segmentation): logistic regression and a
2-layer MLP, in torch, seeded and deterministic.

Features are standardised with the fit pixels' mean and standard deviation. Both minimise the binary cross-entropy
plus a small L2 penalty on the weights, full-batch on the CPU, for a fixed budget, so the same pixels and seed give
the same weights: logistic regression with L-BFGS (convex: it reaches the optimum), the MLP with Adam.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

CLASSIFIERS = ("logistic", "mlp")


@dataclass(frozen=True)
class ClassifierSettings:
    """Training of the pixel classifiers.

    Attributes:
        hidden: MLP hidden width.
        steps: MLP Adam steps.
        learning_rate: MLP Adam learning rate.
        weight_decay: MLP L2 weight decay (Adam's, coupled).
        logistic_iterations: L-BFGS iterations of the logistic regression.
        logistic_l2: L2 penalty on the logistic regression's weights (not the bias).
    """

    hidden: int = 32
    steps: int = 300
    learning_rate: float = 0.01
    weight_decay: float = 1e-3
    logistic_iterations: int = 100
    logistic_l2: float = 1e-4

    def describe(self) -> str:
        """One sentence for reports."""
        return (f"logistic regression: L-BFGS, {self.logistic_iterations} iterations, L2 {self.logistic_l2:g}; "
                f"2-layer MLP (hidden {self.hidden}, ReLU): Adam, {self.steps} full-batch steps, learning rate "
                f"{self.learning_rate:g}, weight decay {self.weight_decay:g}")


def build_model(kind: str, channels: int, hidden: int) -> nn.Module:
    """``logistic``: Linear(C, 1); ``mlp``: Linear(C, hidden), ReLU, Linear(hidden, 1). Outputs logits [N, 1]."""
    if kind == "logistic":
        return nn.Linear(channels, 1)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    raise ValueError(f"unknown classifier {kind!r}; choose from {CLASSIFIERS}")


class PixelClassifier:
    """A trained classifier with its standardisation: ``predict`` maps (N, C) features to (N,) probabilities."""

    def __init__(self, kind: str, model: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
        self.kind = kind
        self.model = model.eval()
        self.mean = torch.from_numpy(mean.astype(np.float32))
        self.std = torch.from_numpy(std.astype(np.float32))

    def predict(self, features: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Tumour probabilities (N,) float32 of (N, C) features."""
        out = []
        with torch.no_grad():
            for start in range(0, len(features), chunk):
                x = (torch.from_numpy(np.ascontiguousarray(features[start:start + chunk], dtype=np.float32))
                     - self.mean) / self.std
                out.append(torch.sigmoid(self.model(x)[:, 0]))
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def fit_classifier(kind: str, features: np.ndarray, labels: np.ndarray, seed: int,
                   settings: ClassifierSettings = ClassifierSettings()) -> PixelClassifier:
    """Train ``kind`` on (N, C) features and (N,) 0/1 labels; weights depend only on the data and ``seed``.

    The global torch random state is left untouched (the initialisation runs in a forked RNG).
    """
    if len(features) == 0 or len(np.unique(labels)) < 2:
        raise ValueError("the classifier needs pixels of both classes")
    mean = features.mean(axis=0, dtype=np.float64)
    std = np.maximum(features.std(axis=0, dtype=np.float64), 1e-6)
    x = torch.from_numpy(((features - mean) / std).astype(np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(kind, x.shape[1], settings.hidden)
    loss_function = nn.BCEWithLogitsLoss()
    model.train()
    if kind == "logistic":
        optimiser = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=settings.logistic_iterations,
                                      history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimiser.zero_grad(set_to_none=True)
            loss = loss_function(model(x)[:, 0], y) + settings.logistic_l2 * model.weight.square().sum()
            loss.backward()
            return loss

        optimiser.step(closure)
    else:
        optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate,
                                     weight_decay=settings.weight_decay)
        for _ in range(settings.steps):
            optimiser.zero_grad(set_to_none=True)
            loss_function(model(x)[:, 0], y).backward()
            optimiser.step()
    return PixelClassifier(kind, model, mean, std)
