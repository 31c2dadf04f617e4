"""The scanner side of the phantom: receiver gain, coil bias field, Rician noise and digitisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataset_conversion.phantom.anatomy import Grid, smooth_random_field
from dataset_conversion.phantom.parameters import PhantomParameters

Array = np.ndarray


@dataclass(frozen=True)
class ScannerSettings:
    """Per-exam signal scale and noise.

    Attributes:
        fibroglandular_signal: mean pre-contrast signal of fibroglandular tissue (a.u.), before bias.
        noise_sigma: standard deviation of the complex Gaussian noise in each channel (a.u.).
    """

    fibroglandular_signal: float
    noise_sigma: float


def draw_scanner_settings(rng: np.random.Generator, params: PhantomParameters) -> ScannerSettings:
    """Random receiver gain (x0.8 to x1.25) and fibroglandular SNR within ``params.fibroglandular_snr``."""
    signal = params.fibroglandular_signal * float(rng.uniform(0.8, 1.25))
    snr = float(rng.uniform(*params.fibroglandular_snr))
    return ScannerSettings(fibroglandular_signal=signal, noise_sigma=signal / snr)


def bias_field(rng: np.random.Generator, params: PhantomParameters) -> Array:
    """Smooth multiplicative receive-coil sensitivity, float32 (z, y, x), geometric mean about 1.

    A random field with a 60 mm correlation length plus a gentle anterior-posterior gradient
    (breast coils see the anterior breast better than the chest wall).
    """
    grid = Grid(params.shape_zyx, params.spacing_zyx)
    field = smooth_random_field(rng, grid.shape, grid.spacing, 60.0)
    slope = rng.uniform(-0.3, 0.0)
    gradient = slope * (grid.x / grid.extent[2] - 0.5)
    return np.exp(params.bias_amplitude * field + gradient).astype(np.float32)


def acquire(rng: np.random.Generator, signal: Array, bias: Array, noise_sigma: float) -> Array:
    """Magnitude image of one phase: |signal * bias + complex Gaussian noise|, rounded to integers.

    Rician noise drawn from the exam's own generator (``dcmri.add_noise`` draws from numpy's
    global state, which would make exams depend on the order they are generated in). Rounding
    mimics a scanner's integer output; with sigma of tens of units it adds no visible noise.
    Returns float32 of the input shape, values >= 0.
    """
    clean = signal * bias
    real = clean + noise_sigma * rng.standard_normal(clean.shape, dtype=np.float32)
    imaginary = noise_sigma * rng.standard_normal(clean.shape, dtype=np.float32)
    return np.round(np.hypot(real, imaginary)).astype(np.float32)
