"""Parameters of the synthetic breast DCE-MRI phantom and its two presets (``demo`` and ``nact``).

Everything that decides how a phantom exam looks lives in :class:`PhantomParameters`, which is
written into ``dataset.json`` (``dkm.phantom_parameters``) so that a dataset can be regenerated
and its ground-truth anatomy rebuilt (see :mod:`dataset_conversion.phantom.stats`).

Acquisition defaults copy the real Breast-MRI-NACT-Pilot case UCSF-BR-06 (GE Signa 1.5 T,
fat-suppressed sagittal 3D FGRE, TR 8.2 ms, flip angle 20 degrees, 256 x 256 x 60 voxels of
0.703 x 0.703 x 2.0 mm, k-space-centre times -230, 177 and 531 s after injection). Tissue
values were tuned until the phantom's statistics matched the figures measured on that case
(see :data:`CALIBRATION_TARGETS`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Direction cosines of the real case (ImageOrientationPatient [0, 1, 0, 0, 0, -1], slices
#: stacked towards patient right): image x runs anterior -> posterior, image y superior ->
#: inferior, image z right <- left. SimpleITK's row-major 3x3 matrix, columns = image axes in LPS.
SAGITTAL_DIRECTION: tuple[float, ...] = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
#: Physical centre of the real case's field of view (LPS, mm), used as the phantom's centre.
SAGITTAL_CENTRE_MM: tuple[float, float, float] = (98.8, -17.1, -11.6)

#: Figures measured on the real case that the phantom is calibrated to: name -> (low, high).
CALIBRATION_TARGETS: dict[str, tuple[float, float]] = {
    "tumour_early_enhancement_percent": (90.0, 130.0),
    "tumour_ser": (0.7, 1.2),
    "fgt_early_enhancement_percent": (15.0, 40.0),
    "tumour_pre_snr": (8.0, 15.0),
    "tumour_fgt_pre_cnr": (-0.5, 2.0),
    "tumour_volume_percent_of_breast": (1.0, 8.0),
}


@dataclass(frozen=True)
class TissueProperties:
    """Relaxation, proton-density and extended-Tofts parameters of one tissue class.

    Attributes:
        t1_s: pre-contrast T1 in seconds at the phantom's field strength.
        relative_pre_signal: pre-contrast signal relative to fibroglandular tissue's (before
            bias field and noise); the equilibrium magnetisation is derived from it and ``t1_s``.
        ktrans_per_min: median volume transfer constant Ktrans (1/min).
        ktrans_case_log_sd: standard deviation of log(Ktrans) between exams.
        ktrans_voxel_log_sd: standard deviation of log(Ktrans) across voxels of one exam (smooth field).
        ve: extravascular extracellular volume fraction (median; varied +-20 % per exam).
        vp: plasma volume fraction.
    """

    t1_s: float
    relative_pre_signal: float
    ktrans_per_min: float
    ve: float
    vp: float
    ktrans_case_log_sd: float = 0.2
    ktrans_voxel_log_sd: float = 0.0


def _default_tissues() -> dict[str, TissueProperties]:
    # T1 at 1.5 T: fibroglandular 1.27 s and fat 0.30 s (Rakow-Penner et al. 2006); muscle 1.008 s
    # and blood 1.441 s as dcmri.T1(1.5, ...). Kinetics tuned to the real case's PE1/SER figures.
    return {
        "fat": TissueProperties(t1_s=0.30, relative_pre_signal=0.28, ktrans_per_min=0.003, ve=0.10, vp=0.003),
        "fibroglandular": TissueProperties(t1_s=1.27, relative_pre_signal=1.0, ktrans_per_min=0.008, ve=0.30, vp=0.005,
                                           ktrans_case_log_sd=0.3, ktrans_voxel_log_sd=0.3),
        "tumour": TissueProperties(t1_s=1.35, relative_pre_signal=1.0, ktrans_per_min=0.044, ve=0.40, vp=0.03,
                                   ktrans_case_log_sd=0.2, ktrans_voxel_log_sd=0.25),
        "necrosis": TissueProperties(t1_s=1.6, relative_pre_signal=0.85, ktrans_per_min=0.006, ve=0.5, vp=0.003),
        "skin": TissueProperties(t1_s=0.60, relative_pre_signal=1.25, ktrans_per_min=0.02, ve=0.30, vp=0.02),
        "muscle": TissueProperties(t1_s=1.008, relative_pre_signal=0.5, ktrans_per_min=0.02, ve=0.12, vp=0.02),
        # blood: the whole voxel is plasma + cells, no leakage: tissue concentration = blood concentration
        "blood": TissueProperties(
            t1_s=1.441, relative_pre_signal=0.6, ktrans_per_min=0.0, ve=0.0, vp=0.55, ktrans_case_log_sd=0.0
        ),
    }


@dataclass(frozen=True)
class PhantomParameters:
    """How one phantom exam is generated (everything except the random draws).

    Attributes:
        shape_xyz: grid size in voxels (x: anterior -> posterior, y: superior -> inferior, z: slices).
        field_of_view_mm: in-plane extent (x, y) in mm; the in-plane spacing is ``fov / shape``.
        slice_spacing_mm: distance between slice centres (mm); the slab is ``shape_z * spacing`` thick.
        direction: SimpleITK direction matrix (row-major 3x3) of the written images.
        centre_mm: physical (LPS) position of the centre of the field of view.
        phase_times_s: k-space-centre time of each phase relative to injection (s): one
            pre-contrast time <= 0, then at least two post-contrast times > 0, increasing.
        pre_contrast_cue: (tumour - pure fibroglandular tissue) pre-contrast signal difference in
            units of the noise sigma, i.e. the pre-contrast CNR the phantom aims for; partial volume
            with fat lowers fibroglandular voxels, so the measured CNR comes out somewhat higher.
        field_strength_t, repetition_time_s, flip_angle_deg: spoiled gradient-echo protocol.
        agent: contrast agent (dcmri name) for the relaxivity; hematocrit for plasma concentration.
        bolus_arrival_s: range of the delay between injection and arrival in the breast (s).
        aif_scale: range of the per-exam scaling of the population AIF (dose, cardiac output).
        fibroglandular_signal: mean pre-contrast signal of fibroglandular tissue (a.u.).
        fibroglandular_snr: range of fibroglandular pre-contrast signal / noise sigma per exam.
        bias_amplitude: standard deviation of log(bias field).
        max_vessels: up to this many enhancing vessels per exam (0: none).
        tumour_radius_mm: median radius of the tumour's main lobe.
        tumour_lobes: (min, max) number of connected lobes.
        necrosis_probability: chance of a poorly enhancing core in tumours larger than 12 mm.
        tissues: :class:`TissueProperties` per tissue class.
    """

    shape_xyz: tuple[int, int, int]
    field_of_view_mm: tuple[float, float] = (180.0, 180.0)
    slice_spacing_mm: float = 2.0
    direction: tuple[float, ...] = SAGITTAL_DIRECTION
    centre_mm: tuple[float, float, float] = SAGITTAL_CENTRE_MM
    phase_times_s: tuple[float, ...] = (-230.0, 177.0, 531.0)
    pre_contrast_cue: float = 0.5
    field_strength_t: float = 1.5
    repetition_time_s: float = 0.0082
    flip_angle_deg: float = 20.0
    agent: str = "gadopentetate"
    hematocrit: float = 0.45
    bolus_arrival_s: tuple[float, float] = (8.0, 20.0)
    aif_scale: tuple[float, float] = (0.85, 1.15)
    fibroglandular_signal: float = 300.0
    fibroglandular_snr: tuple[float, float] = (9.0, 14.0)
    bias_amplitude: float = 0.12
    max_vessels: int = 3
    tumour_radius_mm: float = 14.5
    tumour_lobes: tuple[int, int] = (3, 7)
    necrosis_probability: float = 0.35
    tissues: dict[str, TissueProperties] = field(default_factory=_default_tissues)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Array shape (z, y, x), as numpy arrays from SimpleITK are indexed."""
        x, y, z = self.shape_xyz
        return z, y, x

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        """Voxel spacing in mm along (x, y, z)."""
        x, y, _ = self.shape_xyz
        return self.field_of_view_mm[0] / x, self.field_of_view_mm[1] / y, float(self.slice_spacing_mm)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel spacing in mm along the array axes (z, y, x)."""
        sx, sy, sz = self.spacing_xyz
        return sz, sy, sx

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PhantomParameters:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` naming unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown phantom parameters {unknown}")
        converted: dict[str, Any] = {}
        for key, value in values.items():
            if key == "tissues":
                converted[key] = {name: TissueProperties(**props) for name, props in value.items()}
            elif isinstance(value, list):
                converted[key] = tuple(value)
            else:
                converted[key] = value
        return cls(**converted)


@dataclass(frozen=True)
class Preset:
    """A named dataset recipe: case counts plus the phantom parameters of every exam."""

    name: str
    num_train: int
    num_test: int
    num_unlabelled: int
    phantom: PhantomParameters


PRESETS: dict[str, Preset] = {
    # sized for the whole pipeline on a 2-core CPU: a real breast downsampled to 1.4 mm, 4 mm slices
    "demo": Preset(name="demo", num_train=32, num_test=12, num_unlabelled=48,
                   phantom=PhantomParameters(shape_xyz=(128, 128, 12), slice_spacing_mm=4.0)),
    # the label-scarce regime DKM exists for (few expert masks, many unlabelled exams) on make demo's 64 x 64 x 12
    # grid; with the same seed its exams equal those of `--preset demo --shape 64 64 12` with the same index
    "scarce": Preset(name="scarce", num_train=32, num_test=24, num_unlabelled=240,
                     phantom=PhantomParameters(shape_xyz=(64, 64, 12), slice_spacing_mm=4.0)),
    # the real protocol's grid: 256 x 256 x 60 at 0.703 x 0.703 x 2.0 mm, sagittal
    "nact": Preset(name="nact", num_train=48, num_test=16, num_unlabelled=96,
                   phantom=PhantomParameters(shape_xyz=(256, 256, 60), slice_spacing_mm=2.0)),
}


def validate_phase_times(phase_times: Sequence[float]) -> tuple[float, ...]:
    """Check a phase schedule and return it as a tuple of floats.

    Raises ``ValueError`` with the rule that is broken: at least three times (one pre-contrast,
    two post-contrast), the first <= 0 s (before injection), the others > 0 s, strictly increasing.
    """
    times = tuple(float(t) for t in phase_times)
    if len(times) < 3:
        raise ValueError(
            f"need at least 3 phase times (pre-contrast, then >= 2 post-contrast), got {len(times)}: {list(times)}"
        )
    if times[0] > 0:
        raise ValueError(f"the first (pre-contrast) phase time must be <= 0 s (injection at t=0), got {times[0]}")
    if any(t <= 0 for t in times[1:]):
        raise ValueError(f"post-contrast phase times must be > 0 s, got {list(times[1:])}")
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise ValueError(f"phase times must increase strictly, got {list(times)}")
    return times


def preset_parameters(preset: str, shape: Sequence[int] | None = None, phase_times: Sequence[float] | None = None,
                      pre_contrast_cue: float | None = None, vessels: bool | None = None) -> PhantomParameters:
    """The phantom parameters of ``preset`` with the given overrides (``None`` keeps the preset's).

    ``shape`` is (x, y, z) in voxels; the in-plane field of view and the slice spacing stay the
    preset's, so a smaller grid means coarser in-plane voxels over the same breast.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    params = PRESETS[preset].phantom
    changes: dict[str, Any] = {}
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be three positive voxel counts (x y z), got {list(shape)}")
        if min(shape[:2]) < 32:
            raise ValueError(f"in-plane shape must be at least 32 x 32 voxels to hold a breast, got {list(shape)}")
        changes["shape_xyz"] = shape
    if phase_times is not None:
        changes["phase_times_s"] = validate_phase_times(phase_times)
    if pre_contrast_cue is not None:
        changes["pre_contrast_cue"] = float(pre_contrast_cue)
    if vessels is not None:
        changes["max_vessels"] = params.max_vessels if vessels else 0
    return dataclasses.replace(params, **changes)
