"""How close is the DM's synthetic post-contrast image to the truth? Measured on the files
``nnUNetv2_dkm_synthesize_postcontrast`` writes, against the true post-contrast phases, with no mask or label given
to the DM.

Every case is read in its original space and expressed in units of its own pre-contrast image: ``(x - mean) / std``
with the pre-contrast image's mean and standard deviation, for every image of the case alike (so ``post - pre`` is the
enhancement in pre-contrast standard deviations, whatever the scanner's gain).

Regions: ``tumour`` (the label, where the case has one) and ``breast`` (the body mask of the pre-contrast image,
Otsu as in the benchmark's "all tissue" baseline, minus the tumour).

Estimates compared, per post-contrast phase:
- ``synthetic``: the command's output;
- ``identity``: the pre-contrast image itself (no enhancement anywhere);
- ``linear``: a global linear map ``post_k = a_k pre + b_k`` fitted on the DM's training exams;
- ``mask-told ceiling``: not a pre-contrast-only estimate: inside the TRUE tumour mask, pre + an enhancement fitted
  on the training tumours from what the pre-contrast slice shows there (``TumourMaskOracle``); the linear map
  elsewhere.

Metrics per region: MAE (pooled over the region's voxels of all cases), PSNR and SSIM (per case, averaged over
cases; data range: the case's true post-contrast range; SSIM from scikit-image's 2D map, averaged over the region's
voxels) and the Pearson correlation of predicted against true enhancement (pooled; undefined for identity).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.metrics import structural_similarity

from nnunet_dkm.evaluation.baselines import body_mask
from nnunet_dkm.preprocessing import DceExam

REGIONS = ("tumour", "breast")
LINEAR_FIT_VOXELS_PER_EXAM = 200_000  # a random subset per exam bounds the fit's memory on large real exams


def read_volume(path) -> np.ndarray:
    """(z, y, x) float32 array of an image file."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


@dataclass
class QualityCase:
    """One case in units of its pre-contrast image.

    Attributes:
        pre: (z, y, x) pre-contrast image; posts: (K, z, y, x) true post-contrast phases;
        tumour: (z, y, x) bool label or None; breast: (z, y, x) bool body mask minus tumour.
    """

    case_id: str
    pre: np.ndarray
    posts: np.ndarray
    tumour: np.ndarray | None
    breast: np.ndarray
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def read(cls, exam: DceExam) -> QualityCase:
        raw_pre = read_volume(exam.pre_file)
        mean, std = float(raw_pre.mean()), max(float(raw_pre.std()), 1e-6)
        posts = np.stack([(read_volume(p) - mean) / std for p in exam.post_files])
        tumour = read_volume(exam.label_file) > 0 if exam.label_file is not None else None
        body = body_mask(raw_pre)
        breast = body & ~tumour if tumour is not None else body
        return cls(exam.case_id, (raw_pre - mean) / std, posts, tumour, breast, mean, std)

    def normalised(self, array: np.ndarray) -> np.ndarray:
        """An image of this case in its original intensities, in units of its pre-contrast image."""
        return (array - self.mean) / self.std

    def region(self, name: str) -> np.ndarray | None:
        return self.tumour if name == "tumour" else self.breast


def fit_global_linear(pre: np.ndarray, post: np.ndarray) -> tuple[float, float]:
    """Least-squares ``post = a * pre + b`` over all given voxels; returns (a, b)."""
    a, b = np.polyfit(pre.ravel().astype(np.float64), post.ravel().astype(np.float64), 1)
    return float(a), float(b)


def distance_to_margin(mask: np.ndarray) -> np.ndarray:
    """Per 2D slice, each mask voxel's distance (voxels) to the nearest voxel outside the mask; (N, H, W) or (H, W)."""
    if mask.ndim == 2:
        return ndimage.distance_transform_edt(mask)
    return np.stack([ndimage.distance_transform_edt(slice_) for slice_ in mask])


@dataclass
class TumourMaskOracle:
    """A ceiling, not an estimate from the pre-contrast image alone: it is told where the tumour is.

    Inside the true tumour mask it predicts ``post = pre + e`` with ``e`` a least-squares fit on training tumours
    of what the pre-contrast slice shows there: the intensity (1, pre, pre^2) and the distance to the tumour margin
    (exp(-d/1.5), exp(-d/3), d, pre * exp(-d/3)). Outside it, a given estimate is kept.
    """

    coefficients: np.ndarray

    @staticmethod
    def features(pre: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(n_voxels_in_mask, 7) design matrix; pre and mask of the same shape, 2D or (N, H, W)."""
        values, depth = pre[mask], distance_to_margin(mask)[mask]
        rim = np.exp(-depth / 3.0)
        return np.stack([np.ones_like(values), values, values * values, np.exp(-depth / 1.5), rim, depth,
                         values * rim], axis=1)

    @classmethod
    def fit(cls, slices: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> TumourMaskOracle:
        """Fit on (pre, post, tumour mask) 2D slices (each (H, W)) that contain tumour."""
        slices = list(slices)
        design = np.concatenate([cls.features(pre, mask) for pre, _, mask in slices])
        enhancement = np.concatenate([(post - pre)[mask] for pre, post, mask in slices])
        coefficients, *_ = np.linalg.lstsq(design.astype(np.float64), enhancement.astype(np.float64), rcond=None)
        return cls(coefficients)

    def predict(self, pre: np.ndarray, mask: np.ndarray, outside: np.ndarray) -> np.ndarray:
        """``outside`` with the tumour voxels replaced by ``pre + fitted enhancement``; (N, H, W) arrays."""
        estimate = outside.astype(np.float32, copy=True)
        if mask.any():
            estimate[mask] = pre[mask] + self.features(pre, mask) @ self.coefficients
        return estimate


@dataclass
class References:
    """What the training exams give the reference estimates: the linear map per phase and the mask-told ceiling
    per phase (None where no training exam has a tumour label)."""

    linear: list[tuple[float, float]]
    ceilings: list[TumourMaskOracle] | None

    @classmethod
    def fit(cls, training_exams: Sequence[DceExam], seed: int = 0) -> References:
        rng = np.random.default_rng(seed)
        num_phases = len(training_exams[0].post_files)
        pre_values: list[np.ndarray] = []
        post_values: list[list[np.ndarray]] = [[] for _ in range(num_phases)]
        tumour_slices: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(num_phases)]
        for exam in training_exams:
            case = QualityCase.read(exam)
            count = case.pre.size
            chosen = rng.choice(count, size=min(count, LINEAR_FIT_VOXELS_PER_EXAM), replace=False)
            pre_values.append(case.pre.ravel()[chosen])
            for phase in range(num_phases):
                post_values[phase].append(case.posts[phase].ravel()[chosen])
                if case.tumour is not None:
                    tumour_slices[phase] += [(case.pre[z], case.posts[phase][z], case.tumour[z])
                                             for z in np.flatnonzero(case.tumour.any(axis=(1, 2)))]
        pre_all = np.concatenate(pre_values)
        linear = [fit_global_linear(pre_all, np.concatenate(values)) for values in post_values]
        ceilings = [TumourMaskOracle.fit(slices) for slices in tumour_slices] if tumour_slices[0] else None
        return cls(linear, ceilings)

    def estimates(self, case: QualityCase, phase: int) -> dict[str, np.ndarray]:
        """Identity, linear map and (where possible) the mask-told ceiling for one phase of a case."""
        a, b = self.linear[phase]
        linear = a * case.pre + b
        out = {"identity": case.pre, "linear": linear}
        if self.ceilings is not None and case.tumour is not None:
            out["mask-told ceiling"] = self.ceilings[phase].predict(case.pre, case.tumour, linear)
        return out


@dataclass
class RegionScore:
    """Pools one estimate's errors in one region over cases."""

    absolute_errors: list[np.ndarray] = field(default_factory=list)
    predicted_enhancement: list[np.ndarray] = field(default_factory=list)
    true_enhancement: list[np.ndarray] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)

    def add(self, estimate: np.ndarray, pre: np.ndarray, true_post: np.ndarray, mask: np.ndarray) -> None:
        """Add the voxels of ``mask`` of one case; (z, y, x) arrays of the same shape."""
        if not mask.any():
            return
        errors = estimate[mask] - true_post[mask]
        self.absolute_errors.append(np.abs(errors))
        self.predicted_enhancement.append(estimate[mask] - pre[mask])
        self.true_enhancement.append(true_post[mask] - pre[mask])
        data_range = max(float(true_post.max() - true_post.min()), 1e-6)
        mse = max(float(np.mean(errors.astype(np.float64) ** 2)), 1e-12)
        self.psnr.append(10.0 * np.log10(data_range**2 / mse))
        _, ssim_map = structural_similarity(true_post, estimate, data_range=data_range, full=True,
                                            channel_axis=0 if min(true_post.shape[1:]) >= 7 else None)
        self.ssim.append(float(ssim_map[mask].mean()))

    def summary(self) -> dict[str, float]:
        """MAE, PSNR, SSIM and enhancement correlation; NaN where the region had no voxel."""
        if not self.absolute_errors:
            return {"mae": np.nan, "psnr": np.nan, "ssim": np.nan, "enhancement_corr": np.nan, "voxels": 0}
        predicted = np.concatenate(self.predicted_enhancement)
        true = np.concatenate(self.true_enhancement)
        constant = predicted.std() < 1e-8 or true.std() < 1e-8
        return {
            "mae": float(np.concatenate(self.absolute_errors).mean()),
            "psnr": float(np.mean(self.psnr)),
            "ssim": float(np.mean(self.ssim)),
            "enhancement_corr": np.nan if constant else float(np.corrcoef(predicted, true)[0, 1]),
            "voxels": int(predicted.size),
        }


def score_cases(cases: Sequence[QualityCase], synthetic: dict[str, np.ndarray],
                references: References) -> list[dict]:
    """One row per (estimate, phase, region): the region's summary.

    Args:
        cases: the evaluated cases.
        synthetic: per case id, the synthetic phases (K, z, y, x) in the case's original intensities.
        references: the fitted reference estimates.
    """
    scores: dict[tuple[str, int, str], RegionScore] = {}
    for case in cases:
        estimates_by_phase = []
        for phase in range(case.posts.shape[0]):
            estimates = {"synthetic": case.normalised(synthetic[case.case_id][phase]),
                         **references.estimates(case, phase)}
            estimates_by_phase.append(estimates)
        for phase, estimates in enumerate(estimates_by_phase):
            for name, estimate in estimates.items():
                for region in REGIONS:
                    mask = case.region(region)
                    if mask is not None:
                        scores.setdefault((name, phase + 1, region), RegionScore()).add(
                            estimate, case.pre, case.posts[phase], mask)
    rows = []
    for (name, phase, region), score in scores.items():
        rows.append({"estimate": name, "phase": phase, "region": region, **score.summary()})
    return rows
