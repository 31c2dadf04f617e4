"""One phantom exam from (seed, split, index): anatomy, contrast dynamics, acquisition and label.

Each exam draws from its own random generators, derived with numpy's ``SeedSequence`` from
``(seed, split, index, attempt, stream)``, so an exam does not change when the number of exams
changes, and its anatomy can be rebuilt without redoing the rest (:func:`generate_anatomy_for`).
If the FTV rule leaves a labelled exam's label empty (a tumour too small or too faint after
noise), the exam is drawn again with ``attempt + 1``; that is deterministic too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from dataset_conversion.phantom.anatomy import Anatomy, generate_anatomy
from dataset_conversion.phantom.kinetics import dynamic_signal
from dataset_conversion.phantom.parameters import PhantomParameters
from dataset_conversion.phantom.scanner import acquire, bias_field, draw_scanner_settings
from dataset_conversion.raw_dataset import DatasetConversionError
from nnunet_dkm.ftv_rule import ftv_label

Array = np.ndarray

#: split name -> code used in the seed; "unlabelled" exams go to unlabelledTr/.
SPLIT_CODES: dict[str, int] = {"Tr": 0, "Ts": 1, "unlabelled": 2}
STREAM_CODES: dict[str, int] = {"anatomy": 0, "kinetics": 1, "scanner": 2}
CASE_PREFIXES: dict[str, str] = {"Tr": "phantom_tr", "Ts": "phantom_ts", "unlabelled": "phantom_ul"}
MAX_ATTEMPTS = 20


def case_id(split: str, index: int) -> str:
    """File-name identifier of an exam, e.g. ``phantom_tr_007``."""
    return f"{CASE_PREFIXES[split]}_{index:03d}"


def case_rng(seed: int, split: str, index: int, attempt: int, stream: str) -> np.random.Generator:
    """The generator of one random stream of one exam."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    key = (SPLIT_CODES[split], int(index), int(attempt), STREAM_CODES[stream])
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=key))


@dataclass
class PhantomCase:
    """One generated exam.

    Attributes:
        case_id: identifier used in file names.
        split, index, attempt: what the exam was drawn from (see :func:`case_rng`).
        phases: float32 images (z, y, x), pre-contrast first, in acquisition order.
        label: uint8 FTV label (z, y, x).
        anatomy: the ground-truth tissue fractions.
        noise_sigma: noise standard deviation per channel (a.u.); background magnitude is Rayleigh(sigma).
    """

    case_id: str
    split: str
    index: int
    attempt: int
    phases: list[Array]
    label: Array
    anatomy: Anatomy
    noise_sigma: float


def generate_anatomy_for(params: PhantomParameters, seed: int, split: str, index: int, attempt: int = 0) -> Anatomy:
    """Rebuild only the anatomy of an exam (cheap; used to measure statistics against ground truth)."""
    return generate_anatomy(case_rng(seed, split, index, attempt, "anatomy"), params)


def _generate_attempt(params: PhantomParameters, seed: int, split: str, index: int, attempt: int) -> PhantomCase:
    anatomy = generate_anatomy_for(params, seed, split, index, attempt)
    scanner_rng = case_rng(seed, split, index, attempt, "scanner")
    scanner = draw_scanner_settings(scanner_rng, params)
    clean = dynamic_signal(case_rng(seed, split, index, attempt, "kinetics"), anatomy, params,
                           fibroglandular_signal=scanner.fibroglandular_signal, noise_sigma=scanner.noise_sigma)
    bias = bias_field(scanner_rng, params)
    phases = [acquire(scanner_rng, phase, bias, scanner.noise_sigma) for phase in clean]
    label = ftv_label(phases[0], phases[1], anatomy.tumour_region())
    return PhantomCase(case_id(split, index), split, index, attempt, phases, label, anatomy, scanner.noise_sigma)


def generate_case(params: PhantomParameters, seed: int, split: str, index: int) -> PhantomCase:
    """Generate exam ``index`` of ``split``; redraws (deterministically) until its label is non-empty.

    Raises :class:`DatasetConversionError` when no draw gives a tumour voxel (e.g. phase times
    before the bolus arrives).
    """
    for attempt in range(MAX_ATTEMPTS):
        case = _generate_attempt(params, seed, split, index, attempt)
        if case.label.any():
            return case
    raise DatasetConversionError(
        f"exam {case_id(split, index)}: no tumour voxel reached 70 % early enhancement in {MAX_ATTEMPTS} draws; "
        f"the first post-contrast time ({params.phase_times_s[1]:g} s) is probably too early for the bolus "
        f"(arrival {params.bolus_arrival_s[0]:g}-{params.bolus_arrival_s[1]:g} s) or the grid {params.shape_xyz} "
        f"too coarse"
    )


def to_image(array: Array, params: PhantomParameters) -> sitk.Image:
    """A (z, y, x) array as a SimpleITK image with the phantom's spacing, direction and centred origin."""
    image = sitk.GetImageFromArray(array)
    spacing = np.asarray(params.spacing_xyz)
    direction = np.asarray(params.direction, dtype=float).reshape(3, 3)
    half_extent = (np.asarray(params.shape_xyz) - 1) / 2 * spacing
    origin = np.asarray(params.centre_mm) - direction @ half_extent
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(d) for d in direction.ravel()))
    image.SetOrigin(tuple(float(o) for o in origin))
    return image
