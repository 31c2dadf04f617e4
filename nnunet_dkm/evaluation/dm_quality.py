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


class LeastSquares:
    """A least-squares fit ``y ~ X @ c`` accumulated block by block in its normal equations (float64), so that its
    memory does not grow with the number of exams; blocks of rows ``X`` (n, k) and ``y`` (n,)."""

    def __init__(self, unknowns: int) -> None:
        self.gram = np.zeros((unknowns, unknowns))
        self.moment = np.zeros(unknowns)

    def add(self, design: np.ndarray, target: np.ndarray) -> None:
        design = design.astype(np.float64).reshape(-1, self.moment.size)
        self.gram += design.T @ design
        self.moment += design.T @ target.astype(np.float64).ravel()

    def solve(self) -> np.ndarray:
        """The coefficients (k,); the minimum-norm solution where the rows do not determine them all."""
        coefficients, *_ = np.linalg.lstsq(self.gram, self.moment, rcond=None)
        return coefficients


def fit_global_linear(pre: np.ndarray, post: np.ndarray) -> tuple[float, float]:
    """Least-squares ``post = a * pre + b`` over all given voxels; returns (a, b)."""
    fit = LeastSquares(2)
    fit.add(np.stack([pre.ravel(), np.ones(pre.size)], axis=1), post)
    a, b = fit.solve()
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
        normal_equations = LeastSquares(7)
        for pre, post, mask in slices:
            normal_equations.add(cls.features(pre, mask), (post - pre)[mask])
        return cls(normal_equations.solve())

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
        """Read one exam at a time (memory flat in the number of exams): the linear maps from a random subset of
        each exam's voxels, the ceilings from its tumour slices, both through their normal equations."""
        rng = np.random.default_rng(seed)
        num_phases = len(training_exams[0].post_files)
        linear = [LeastSquares(2) for _ in range(num_phases)]
        ceilings = [LeastSquares(7) for _ in range(num_phases)]
        labelled = False
        for exam in training_exams:
            case = QualityCase.read(exam)
            count = case.pre.size
            chosen = rng.choice(count, size=min(count, LINEAR_FIT_VOXELS_PER_EXAM), replace=False)
            pre = case.pre.ravel()[chosen]
            design = np.stack([pre, np.ones_like(pre)], axis=1)
            tumour_slices = [] if case.tumour is None else np.flatnonzero(case.tumour.any(axis=(1, 2)))
            labelled = labelled or len(tumour_slices) > 0
            for phase in range(num_phases):
                linear[phase].add(design, case.posts[phase].ravel()[chosen])
                for z in tumour_slices:
                    mask = case.tumour[z]
                    ceilings[phase].add(TumourMaskOracle.features(case.pre[z], mask),
                                        (case.posts[phase][z] - case.pre[z])[mask])
        return cls([tuple(float(v) for v in fit.solve()) for fit in linear],
                   [TumourMaskOracle(fit.solve()) for fit in ceilings] if labelled else None)

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
    """Pools one estimate's errors in one region over cases, as running sums (memory flat in the number of cases)."""

    voxels: int = 0
    absolute_error_sum: float = 0.0
    # sums of p, t, p^2, t^2 and p * t over the voxels, p the predicted and t the true enhancement (float64)
    enhancement_moments: np.ndarray = field(default_factory=lambda: np.zeros(5))
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)

    def add(self, estimate: np.ndarray, pre: np.ndarray, true_post: np.ndarray, mask: np.ndarray) -> None:
        """Add the voxels of ``mask`` of one case; (z, y, x) arrays of the same shape."""
        if not mask.any():
            return
        made, truth, before = (array[mask].astype(np.float64) for array in (estimate, true_post, pre))
        errors, predicted, true = made - truth, made - before, truth - before
        self.voxels += errors.size
        self.absolute_error_sum += float(np.abs(errors).sum())
        self.enhancement_moments += [predicted.sum(), true.sum(), predicted @ predicted, true @ true, predicted @ true]
        data_range = max(float(true_post.max() - true_post.min()), 1e-6)
        mse = max(float(np.mean(errors**2)), 1e-12)
        self.psnr.append(10.0 * np.log10(data_range**2 / mse))
        _, ssim_map = structural_similarity(true_post, estimate, data_range=data_range, full=True,
                                            channel_axis=0 if min(true_post.shape[1:]) >= 7 else None)
        self.ssim.append(float(ssim_map[mask].mean()))

    def summary(self) -> dict[str, float]:
        """MAE, PSNR, SSIM and enhancement correlation; NaN where the region had no voxel."""
        if not self.voxels:
            return {"mae": np.nan, "psnr": np.nan, "ssim": np.nan, "enhancement_corr": np.nan, "voxels": 0}
        mean_p, mean_t, mean_pp, mean_tt, mean_pt = self.enhancement_moments / self.voxels
        variance_p, variance_t = mean_pp - mean_p**2, mean_tt - mean_t**2
        # a constant enhancement (identity's is 0 everywhere) has no correlation; the tolerance absorbs rounding
        constant = min(variance_p / max(mean_pp, 1e-300), variance_t / max(mean_tt, 1e-300)) < 1e-12
        return {
            "mae": self.absolute_error_sum / self.voxels,
            "psnr": float(np.mean(self.psnr)),
            "ssim": float(np.mean(self.ssim)),
            "enhancement_corr": np.nan if constant else float((mean_pt - mean_p * mean_t) /
                                                              np.sqrt(variance_p * variance_t)),
            "voxels": self.voxels,
        }


def score_cases(cases: Iterable[tuple[QualityCase, np.ndarray]], references: References) -> list[dict]:
    """One row per (estimate, phase, region): the region's summary.

    Args:
        cases: per evaluated case, the case and its synthetic phases (K, z, y, x) in the case's original
            intensities; consumed one at a time, so a generator keeps one case in memory.
        references: the fitted reference estimates.
    """
    scores: dict[tuple[str, int, str], RegionScore] = {}
    for case, synthetic in cases:
        for phase in range(case.posts.shape[0]):
            estimates = {"synthetic": case.normalised(synthetic[phase]), **references.estimates(case, phase)}
            for name, estimate in estimates.items():
                for region in REGIONS:
                    mask = case.region(region)
                    if mask is not None:
                        scores.setdefault((name, phase + 1, region), RegionScore()).add(
                            estimate, case.pre, case.posts[phase], mask)
    return [{"estimate": name, "phase": phase, "region": region, **score.summary()}
            for (name, phase, region), score in scores.items()]
