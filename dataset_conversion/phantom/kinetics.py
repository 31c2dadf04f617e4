"""Contrast physics of the phantom, carried by dcmri: population AIF, extended Tofts, SPGR signal.

For every tissue voxel the noise-free signal of phase ``p`` is::

    C_p  = vp * cp(t_p) + ve * G(kep, t_p)              extended Tofts, kep = Ktrans / ve
    S_p  = M0 * SPGR(R10 + r1 * C_p; TR, flip angle)    steady-state spoiled gradient echo

where ``cp`` is the plasma concentration from the Parker population AIF (``dcmri.aif_parker``,
scaled per exam and delayed by the bolus arrival time) and ``G(kep, t) = kep * (cp * exp(-kep t))(t)``
is dcmri's extended-Tofts tissue concentration (``dcmri.conc_tissue(kinetics="HF")``, with unit
interstitial volume and no plasma term). Both ``G`` and the SPGR signal (``dcmri.signal_ss``) are
evaluated by dcmri on a grid (log-spaced kep, log-spaced R1) and interpolated per voxel, because
dcmri computes one value at a time and an exam has up to millions of voxels. ``M0`` is chosen per
tissue so that its pre-contrast signal has the calibrated level, so the pre-contrast T1 sets how
strongly a given concentration enhances.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import dcmri
import numpy as np

from dataset_conversion.phantom.anatomy import Anatomy, smooth_random_field
from dataset_conversion.phantom.parameters import PhantomParameters, TissueProperties

Array = np.ndarray


@dataclass(frozen=True)
class ContrastProtocol:
    """One exam's injection and acquisition.

    Attributes:
        phase_times_s: k-space-centre time of each phase after injection (s), pre-contrast first.
        repetition_time_s, flip_angle_deg: spoiled gradient-echo settings.
        relaxivity_per_m_s: r1 of the agent in plasma (1/(s M)) at the field strength.
        hematocrit: to turn the AIF's blood concentration into plasma concentration.
        bolus_arrival_s: delay between injection and arrival of the bolus.
        aif_scale: multiplies the population AIF (dose, cardiac output).
    """

    phase_times_s: tuple[float, ...]
    repetition_time_s: float
    flip_angle_deg: float
    relaxivity_per_m_s: float
    hematocrit: float
    bolus_arrival_s: float
    aif_scale: float


def draw_protocol(rng: np.random.Generator, params: PhantomParameters) -> ContrastProtocol:
    """Protocol of one exam: the preset's sequence plus a random bolus arrival and AIF scale."""
    return ContrastProtocol(phase_times_s=tuple(params.phase_times_s), repetition_time_s=params.repetition_time_s,
                            flip_angle_deg=params.flip_angle_deg,
                            relaxivity_per_m_s=float(dcmri.relaxivity(params.field_strength_t, "plasma", params.agent)),
                            hematocrit=params.hematocrit, bolus_arrival_s=float(rng.uniform(*params.bolus_arrival_s)),
                            aif_scale=float(rng.uniform(*params.aif_scale)))


class ExtendedToftsLookup:
    """Extended-Tofts tissue concentration (M) at the phase times, for arrays of parameters.

    Tabulates dcmri's tissue concentration for unit ``ve`` on ``num_kep`` log-spaced values of
    kep between ``kep_range`` (1/s) and interpolates linearly in log(kep).
    """

    def __init__(self, protocol: ContrastProtocol, kep_range=(1e-6, 0.5), num_kep: int = 192, dt_s: float = 0.5):
        times = np.asarray(protocol.phase_times_s, dtype=float)
        grid = np.arange(0.0, max(times.max(), 0.0) + 2 * dt_s, dt_s)
        blood = protocol.aif_scale * dcmri.aif_parker(grid, BAT=protocol.bolus_arrival_s)
        plasma = blood / (1.0 - protocol.hematocrit)
        self.plasma_at_phases = np.interp(times, grid, plasma, left=0.0)
        self.log_kep = np.linspace(np.log(kep_range[0]), np.log(kep_range[1]), num_kep)
        table = np.empty((num_kep, times.size))
        for row, kep in enumerate(np.exp(self.log_kep)):
            interstitial = dcmri.conc_tissue(
                blood, t=grid, kinetics="HF", H=protocol.hematocrit, vb=0.0, vi=1.0, PS=kep
            )
            table[row] = np.interp(times, grid, interstitial, left=0.0)
        self.table = table

    def concentration(self, ktrans_per_s: Array, ve: Array, vp: Array) -> Array:
        """Tissue concentration (M), shape (num_phases, n), for parameter arrays of shape (n,)."""
        ktrans_per_s, ve, vp = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (ktrans_per_s, ve, vp))
        kep = ktrans_per_s / np.maximum(ve, 1e-9)
        position = (np.log(np.clip(kep, *np.exp(self.log_kep[[0, -1]]))) - self.log_kep[0]) / (
            self.log_kep[1] - self.log_kep[0]
        )
        low = np.clip(np.floor(position).astype(int), 0, self.log_kep.size - 2)
        weight = np.clip(position - low, 0.0, 1.0)
        interstitial = (1.0 - weight) * self.table[low].T + weight * self.table[low + 1].T
        interstitial = np.where(ktrans_per_s > 0, interstitial, 0.0)
        return vp * self.plasma_at_phases[:, None] + ve * interstitial


@functools.lru_cache(maxsize=8)
def _spgr_table(repetition_time_s: float, flip_angle_deg: float) -> tuple[Array, Array]:
    log_r1 = np.linspace(np.log(0.05), np.log(1000.0), 4096)
    return log_r1, np.asarray(dcmri.signal_ss(1.0, np.exp(log_r1), repetition_time_s, flip_angle_deg))


def spgr_signal(r1_per_s: Array, repetition_time_s: float, flip_angle_deg: float) -> Array:
    """Steady-state spoiled gradient-echo signal per unit M0 (``dcmri.signal_ss``), any array shape."""
    log_r1, signal = _spgr_table(float(repetition_time_s), float(flip_angle_deg))
    return np.interp(np.log(np.asarray(r1_per_s, dtype=float)), log_r1, signal)


def tissue_signal(lookup: ExtendedToftsLookup, protocol: ContrastProtocol, tissue: TissueProperties, pre_signal: Array,
                  ktrans_per_min: Array, ve: Array, vp: Array) -> Array:
    """Noise-free signal (num_phases, n) of ``n`` voxels of one tissue.

    ``pre_signal`` is the wanted pre-contrast signal of each voxel (it fixes M0 given the tissue's
    T1); the kinetic parameters are per voxel or scalars.
    """
    r10 = 1.0 / tissue.t1_s
    concentration = lookup.concentration(np.asarray(ktrans_per_min) / 60.0, ve, vp)
    relative = spgr_signal(r10 + protocol.relaxivity_per_m_s * concentration, protocol.repetition_time_s,
                           protocol.flip_angle_deg)
    baseline = spgr_signal(r10, protocol.repetition_time_s, protocol.flip_angle_deg)
    return np.asarray(pre_signal, dtype=float) * relative / baseline


def dynamic_signal(rng: np.random.Generator, anatomy: Anatomy, params: PhantomParameters, fibroglandular_signal: float,
                   noise_sigma: float) -> list[Array]:
    """Noise-free signal of every phase, a list of float32 arrays of shape (z, y, x).

    Kinetic parameters vary per exam (log-normal Ktrans, +-20 % ve) and, for fibroglandular
    tissue and tumour, smoothly across voxels; the tumour enhances more at its rim. The tumour's
    pre-contrast signal exceeds fibroglandular tissue's by ``params.pre_contrast_cue`` noise
    sigmas (the pre-contrast cue).
    """
    protocol = draw_protocol(rng, params)
    lookup = ExtendedToftsLookup(protocol)
    shape, spacing = anatomy.fat.shape, params.spacing_zyx
    texture = (1.0 + 0.08 * smooth_random_field(rng, shape, spacing, 2.0)).ravel()
    heterogeneity = smooth_random_field(rng, shape, spacing, 5.0).ravel()
    tumour_pre = fibroglandular_signal + params.pre_contrast_cue * noise_sigma
    rim = (1.0 + 0.4 * np.exp(-anatomy.tumour_depth / 3.0)).ravel()  # margins enhance most
    fractions = {
        "fat": anatomy.fat,
        "fibroglandular": anatomy.fibroglandular,
        "tumour": np.clip(anatomy.tumour - anatomy.necrosis, 0.0, None),
        "necrosis": anatomy.necrosis,
        "skin": anatomy.skin,
        "muscle": anatomy.muscle,
        "blood": anatomy.vessel,
    }
    pre_levels = {name: params.tissues[name].relative_pre_signal * fibroglandular_signal for name in fractions}
    pre_levels["tumour"] = tumour_pre
    pre_levels["necrosis"] = params.tissues["necrosis"].relative_pre_signal * tumour_pre
    total = np.zeros((len(protocol.phase_times_s), anatomy.fat.size), dtype=float)
    for name, fraction in fractions.items():
        tissue = params.tissues[name]
        case_ktrans = tissue.ktrans_per_min * np.exp(tissue.ktrans_case_log_sd * rng.standard_normal())
        case_ve = tissue.ve * rng.uniform(0.8, 1.2)
        voxels = np.flatnonzero(fraction > 0)
        if voxels.size == 0:
            continue
        ktrans = case_ktrans * np.exp(tissue.ktrans_voxel_log_sd * heterogeneity[voxels])
        if name == "tumour":
            ktrans = ktrans * rim[voxels]
        pre = pre_levels[name] * texture[voxels]
        signal = tissue_signal(lookup, protocol, tissue, pre, ktrans, case_ve, tissue.vp)
        total[:, voxels] += fraction.ravel()[voxels] * signal
    return [phase.reshape(shape).astype(np.float32) for phase in total]
