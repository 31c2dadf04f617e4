"""Anatomy of the synthetic breast phantom: tissue fractions on a sagittal grid (numpy/scipy only).

Frame: arrays are indexed (z, y, x) like ``SimpleITK.GetArrayFromImage``; x runs anterior ->
posterior (nipple at low x, chest wall at high x), y superior -> inferior, z across the sagittal
slices. Positions are in mm from the corner of the field of view (voxel centres at
``(i + 0.5) * spacing``). Each tissue is a fraction map in [0, 1], so boundaries carry partial
volume like a real acquisition; fractions of the tissues in one voxel sum to at most 1 (the rest
is air or lung, which give no signal).

The exam: a breast (an ellipsoid with a wavy outline, hanging from the chest wall) under a skin
shell; inside it fat and textured fibroglandular tissue, concentrated behind the nipple and away
from the skin and the chest wall; one irregular tumour made of several connected ellipsoidal
lobes, with a rough margin and sometimes a necrotic core; optional vessels running from the chest
wall towards the nipple; behind the breast a band of pectoral muscle and then lung.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dataset_conversion.phantom.parameters import PhantomParameters

Array = np.ndarray


@dataclass
class Anatomy:
    """Tissue fractions of one exam; every map is float32 with shape (z, y, x) and values in [0, 1].

    Attributes:
        skin, fat, fibroglandular, tumour, necrosis, vessel, muscle: fraction of each voxel
            occupied by the tissue. ``necrosis`` is the part of ``tumour`` that barely enhances
            (it is included in ``tumour``, not added to it).
        tumour_depth: how deep inside the tumour a voxel lies (mm from the tumour margin, 0 outside).
        breast: 1 where the voxel centre lies in the breast (inside its outline, anterior of the chest
            wall; the subcutaneous layer of the chest above and below the breast is not counted).
    """

    skin: Array
    fat: Array
    fibroglandular: Array
    tumour: Array
    necrosis: Array
    vessel: Array
    muscle: Array
    tumour_depth: Array
    breast: Array

    @property
    def tissue_total(self) -> Array:
        """Fraction of each voxel that holds tissue (1 - air/lung), shape (z, y, x)."""
        return self.skin + self.fat + self.fibroglandular + self.tumour + self.vessel + self.muscle

    def tumour_region(self) -> Array:
        """Boolean (z, y, x): voxels at least half filled with tumour (the region the label rule looks in)."""
        return self.tumour >= 0.5


# -- random fields ----------------------------------------------------------------------------------


def smooth_random_field(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float],
                        correlation_mm: float | Sequence[float]) -> Array:
    """Gaussian random field with zero mean and unit standard deviation, float32 of ``shape``.

    White noise smoothed with a Gaussian of standard deviation ``correlation_mm`` (per axis if a
    sequence). For speed the noise is drawn and smoothed on a grid coarsened to about a third of
    the correlation length, then linearly interpolated up to ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    correlation = np.broadcast_to(np.asarray(correlation_mm, dtype=float), (len(shape),))
    sigma_voxels = correlation / np.asarray(spacing, dtype=float)
    factors = np.maximum(1, np.floor(sigma_voxels / 3.0)).astype(int)
    coarse_shape = tuple(int(np.ceil(s / f)) + 2 for s, f in zip(shape, factors, strict=True))
    noise = rng.standard_normal(coarse_shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=sigma_voxels / factors, mode="wrap")
    if np.any(factors > 1):
        noise = ndimage.zoom(noise, factors, order=1, grid_mode=False)
    field = noise[tuple(slice(0, s) for s in shape)]
    field = field - field.mean()
    std = float(field.std())
    return (field / std if std > 0 else field).astype(np.float32)


def random_rotation(rng: np.random.Generator) -> Array:
    """A uniformly random 3x3 rotation matrix (QR of a Gaussian matrix, sign-corrected)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def soft_inside(signed_distance_mm: Array, voxel_mm: float) -> Array:
    """Partial-volume fraction from a signed distance (positive inside): a linear ramp one voxel wide."""
    return np.clip(0.5 + signed_distance_mm / voxel_mm, 0.0, 1.0).astype(np.float32)


# -- geometry ---------------------------------------------------------------------------------------


@dataclass
class Grid:
    """Voxel-centre coordinates (mm) as broadcastable arrays: z (nz,1,1), y (1,ny,1), x (1,1,nx)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def z(self) -> Array:
        return ((np.arange(self.shape[0]) + 0.5) * self.spacing[0])[:, None, None]

    @property
    def y(self) -> Array:
        return ((np.arange(self.shape[1]) + 0.5) * self.spacing[1])[None, :, None]

    @property
    def x(self) -> Array:
        return ((np.arange(self.shape[2]) + 0.5) * self.spacing[2])[None, None, :]

    @property
    def extent(self) -> Array:
        """Size of the field of view in mm along (z, y, x)."""
        return np.asarray(self.shape) * np.asarray(self.spacing)

    @property
    def in_plane_voxel(self) -> float:
        return float(min(self.spacing[1], self.spacing[2]))


@dataclass
class BreastShape:
    """Per-exam breast geometry in mm (frame of :class:`Grid`)."""

    chest_wall_x: float  # anterior surface of the pectoral muscle
    depth: float  # nipple-to-chest-wall distance (ellipsoid semi-axis along x)
    half_height: float  # semi-axis along y
    half_width: float  # semi-axis along z
    centre_y: float
    centre_z: float
    sag: float  # shift (mm) of the nipple along y relative to the base
    body_fat: float  # skin-to-muscle thickness above and below the breast
    skin: float  # skin thickness
    muscle: float  # pectoral muscle thickness

    def normalised_radius(self, grid: Grid) -> tuple[Array, Array]:
        """Ellipsoidal radius rho (1 on the outline) and |grad rho| (1/mm), both (z, y, x)."""
        depth_mm = self.chest_wall_x - grid.x
        dy = grid.y - self.centre_y - self.sag * np.clip(depth_mm / self.depth, 0.0, 1.0) ** 2
        dz = grid.z - self.centre_z
        u, v, w = depth_mm / self.depth, dy / self.half_height, dz / self.half_width
        rho = np.sqrt(u**2 + v**2 + w**2) + 1e-6
        gradient = np.sqrt((u / self.depth) ** 2 + (v / self.half_height) ** 2 + (w / self.half_width) ** 2) / rho
        return rho.astype(np.float32), gradient.astype(np.float32)


def sample_breast_shape(rng: np.random.Generator, grid: Grid) -> BreastShape:
    """Draw a plausible breast for a field of view (sizes in mm, scaled to the in-plane extent)."""
    _, fov_y, fov_x = grid.extent
    scale = min(fov_x, fov_y) / 180.0  # tuned on the real case's 180 mm field of view
    chest_wall_x = fov_x * rng.uniform(0.66, 0.76)
    depth = min(rng.uniform(88.0, 112.0) * scale, chest_wall_x - 10.0 * scale)
    return BreastShape(chest_wall_x=chest_wall_x, depth=depth, half_height=rng.uniform(62.0, 80.0) * scale,
                       half_width=rng.uniform(55.0, 70.0) * scale, centre_y=fov_y / 2 + rng.uniform(-8.0, 8.0) * scale,
                       centre_z=grid.extent[0] / 2 + rng.uniform(-0.1, 0.1) * grid.extent[0],
                       sag=rng.uniform(-8.0, 14.0) * scale, body_fat=rng.uniform(8.0, 16.0) * scale,
                       skin=rng.uniform(1.4, 2.2), muscle=rng.uniform(8.0, 15.0) * scale)


# -- tissues ----------------------------------------------------------------------------------------


def _fibroglandular_density(
    rng: np.random.Generator, grid: Grid, shape: BreastShape, rho: Array, depth_below_skin: Array
) -> Array:
    """Fibroglandular fraction within the breast (z, y, x), before other tissues take their share.

    Dense centrally behind the nipple, absent in the subcutaneous and retromammary fat, with a
    texture elongated along the ducts (anterior-posterior) plus a fine-grained component.
    """
    spacing = grid.spacing
    lobules = smooth_random_field(rng, grid.shape, spacing, (6.0, 5.0, 7.0))
    ducts = smooth_random_field(rng, grid.shape, spacing, (2.5, 1.8, 10.0))
    fine = smooth_random_field(rng, grid.shape, spacing, 1.0)
    depth_mm = shape.chest_wall_x - grid.x + 6.0 * lobules
    dy = (grid.y - shape.centre_y - shape.sag * np.clip(depth_mm / shape.depth, 0.0, 1.0) ** 2) / shape.half_height
    dz = (grid.z - shape.centre_z) / shape.half_width
    towards_nipple = np.clip(depth_mm / shape.depth, 0.0, 1.0)
    cone_radius = 0.25 + 0.4 * (1.0 - towards_nipple)  # glandular tissue converges on the nipple
    central = np.exp(-((dy**2 + dz**2) / cone_radius**2)) * np.exp(-((rho / 0.95) ** 6))
    subcutaneous = rng.uniform(4.0, 11.0)
    retromammary = rng.uniform(4.0, 12.0)
    away_from_skin = np.clip((depth_below_skin - subcutaneous) / 5.0, 0.0, 1.0)
    away_from_wall = np.clip((depth_mm - retromammary) / 8.0, 0.0, 1.0)
    threshold = rng.uniform(0.6, 1.3)  # low: dense breast, high: fatty breast
    drive = 1.6 * central + 0.5 * lobules + 0.45 * ducts + 0.3 * fine - threshold
    density = 1.0 / (1.0 + np.exp(-drive / 0.15))
    return (density * away_from_skin * away_from_wall).astype(np.float32)


@dataclass
class TumourShape:
    """Connected ellipsoidal lobes: centres (n, 3) in mm (z, y, x), rotations (n, 3, 3), semi-axes (n, 3)."""

    centres: Array
    rotations: Array
    semi_axes: Array
    necrotic_fraction: float  # main-lobe radius fraction that is necrotic (0: none)


def sample_tumour_shape(
    rng: np.random.Generator, grid: Grid, shape: BreastShape, params: PhantomParameters
) -> TumourShape:
    """Draw a lobulated tumour inside the breast, centred in the imaged slab and well under the skin."""
    main_radius = float(np.clip(params.tumour_radius_mm * np.exp(0.3 * rng.standard_normal()), 6.0, 22.0))
    for _ in range(200):
        depth = shape.depth * rng.uniform(0.3, 0.65)
        centre_y = shape.centre_y + shape.half_height * rng.uniform(-0.4, 0.4)
        centre_z = grid.extent[0] / 2 + grid.extent[0] * rng.uniform(-0.12, 0.12)
        u = depth / shape.depth
        v = (centre_y - shape.centre_y - shape.sag * u**2) / shape.half_height
        w = (centre_z - shape.centre_z) / shape.half_width
        margin = (main_radius + 8.0) / min(shape.depth, shape.half_height, shape.half_width)
        if np.sqrt(u**2 + v**2 + w**2) < 1.0 - margin:
            break
    else:  # a very small breast: shrink the tumour and put it at the breast's centre
        main_radius, depth, centre_y, centre_z = 6.0, 0.45 * shape.depth, shape.centre_y, shape.centre_z
    centres = [np.array([centre_z, centre_y, shape.chest_wall_x - depth])]
    radii = [main_radius]
    low, high = params.tumour_lobes
    for _ in range(int(rng.integers(low, high + 1)) - 1):
        parent = int(rng.integers(len(centres)))
        radius = radii[parent] * rng.uniform(0.4, 0.75)
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        centres.append(centres[parent] + direction * (radii[parent] + radius) * rng.uniform(0.6, 0.85))
        radii.append(radius)
    semi_axes = np.array([r * rng.uniform(0.75, 1.25, size=3) for r in radii])
    rotations = np.stack([random_rotation(rng) for _ in radii])
    necrotic = 0.0
    if main_radius > 12.0 and rng.uniform() < params.necrosis_probability:
        necrotic = rng.uniform(0.3, 0.55)
    return TumourShape(np.stack(centres), rotations, semi_axes, necrotic)


def _tumour_fractions(rng: np.random.Generator, grid: Grid, tumour: TumourShape) -> tuple[Array, Array, Array]:
    """Tumour fraction, necrotic fraction and depth below the tumour margin (mm), each (z, y, x).

    Computed in the tumour's bounding box only; the margin is roughened by a smooth random field.
    """
    spacing = np.asarray(grid.spacing)
    reach = (tumour.semi_axes.max(axis=1)[:, None] + 4.0)
    low = np.floor(((tumour.centres - reach).min(axis=0)) / spacing).astype(int)
    high = np.ceil(((tumour.centres + reach).max(axis=0)) / spacing).astype(int) + 1
    low = np.clip(low, 0, grid.shape)
    high = np.clip(high, 0, grid.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    full = [np.zeros(grid.shape, np.float32) for _ in range(3)]
    if any(b <= a for a, b in zip(low, high, strict=True)):
        return full[0], full[1], full[2]
    axes_mm = [(np.arange(a, b) + 0.5) * s for a, b, s in zip(low, high, spacing, strict=True)]
    coords = np.stack(np.meshgrid(*axes_mm, indexing="ij"), axis=-1)
    depth = np.full(coords.shape[:3], -np.inf, dtype=np.float32)
    main_rho = None
    for centre, rotation, axes in zip(tumour.centres, tumour.rotations, tumour.semi_axes, strict=True):
        local = (coords - centre) @ rotation / axes
        rho = np.sqrt((local**2).sum(axis=-1))
        depth = np.maximum(depth, (1.0 - rho) * axes.mean())
        if main_rho is None:
            main_rho = rho
    roughness = smooth_random_field(rng, depth.shape, spacing, 2.5)
    depth = depth + 2.5 * roughness
    voxel = grid.in_plane_voxel
    fraction = soft_inside(depth, voxel)
    necrosis = np.zeros_like(fraction)
    if tumour.necrotic_fraction > 0:
        core_depth = (tumour.necrotic_fraction - main_rho) * tumour.semi_axes[0].mean() + 0.8 * roughness
        necrosis = soft_inside(core_depth, voxel) * fraction
    full[0][box], full[1][box], full[2][box] = fraction, necrosis, np.clip(depth, 0.0, None)
    return full[0], full[1], full[2]


def _vessel_fraction(rng: np.random.Generator, grid: Grid, shape: BreastShape, max_vessels: int) -> Array:
    """Fraction of blood vessels (z, y, x): curved tubes from the chest wall towards the nipple."""
    result = np.zeros(grid.shape, np.float32)
    count = int(rng.integers(1, max_vessels + 1)) if max_vessels > 0 else 0
    if count == 0:
        return result
    spacing = np.asarray(grid.spacing)
    centreline = np.zeros(grid.shape, bool)
    radius_map = np.zeros(grid.shape, np.float32)
    for _ in range(count):
        start = np.array([
            shape.centre_z + shape.half_width * rng.uniform(-0.5, 0.5),
            shape.centre_y + shape.half_height * rng.uniform(-0.7, 0.7),
            shape.chest_wall_x - rng.uniform(3.0, 12.0),
        ])
        end = np.array([
            shape.centre_z + shape.half_width * rng.uniform(-0.3, 0.3),
            shape.centre_y + shape.half_height * rng.uniform(-0.3, 0.3),
            shape.chest_wall_x - shape.depth * rng.uniform(0.55, 0.85),
        ])
        bend = (start + end) / 2 + rng.normal(0.0, 10.0, size=3)
        length = np.linalg.norm(end - start) + np.linalg.norm(bend - start)
        s = np.linspace(0.0, 1.0, int(length / (0.3 * spacing.min())) + 2)[:, None]
        points = (1 - s) ** 2 * start + 2 * s * (1 - s) * bend + s**2 * end  # quadratic Bezier
        index = np.floor(points / spacing).astype(int)
        inside = np.all((index >= 0) & (index < np.asarray(grid.shape)), axis=1)
        index = index[inside]
        centreline[tuple(index.T)] = True
        radius_map[tuple(index.T)] = rng.uniform(0.8, 1.8)
    if not centreline.any():
        return result
    distance, nearest = ndimage.distance_transform_edt(~centreline, sampling=spacing, return_indices=True)
    radius = radius_map[tuple(nearest)]
    return soft_inside(radius - distance, grid.in_plane_voxel)


def generate_anatomy(rng: np.random.Generator, params: PhantomParameters) -> Anatomy:
    """Draw one exam's anatomy on the grid of ``params`` (see the module docstring for the frame)."""
    grid = Grid(params.shape_zyx, params.spacing_zyx)
    voxel = grid.in_plane_voxel
    shape = sample_breast_shape(rng, grid)
    tumour_shape = sample_tumour_shape(rng, grid, shape, params)

    rho, gradient = shape.normalised_radius(grid)
    outline = smooth_random_field(rng, grid.shape, grid.spacing, 20.0)
    rho = rho * (1.0 + 0.035 * outline)
    breast_distance = (1.0 - rho) / gradient  # approx. signed distance to the breast outline (mm)
    wall_wave = smooth_random_field(rng, grid.shape, grid.spacing, 15.0)
    body_distance = grid.x - (shape.chest_wall_x - shape.body_fat) + 1.5 * wall_wave
    fillet = 5.0  # mm; a smooth maximum rounds the fold where the breast meets the chest
    outer_distance = fillet * np.logaddexp(breast_distance / fillet, body_distance / fillet)

    inside_skin = soft_inside(outer_distance, voxel)
    below_skin = soft_inside(outer_distance - shape.skin, voxel)
    chest = soft_inside(grid.x - shape.chest_wall_x + 2.0 * wall_wave, voxel)
    lung = soft_inside(grid.x - shape.chest_wall_x - shape.muscle + 2.5 * wall_wave, voxel)
    soft_tissue = below_skin * (1.0 - chest)  # breast and subcutaneous tissue under the skin

    density = _fibroglandular_density(rng, grid, shape, rho, outer_distance - shape.skin)
    tumour, necrosis, tumour_depth = _tumour_fractions(rng, grid, tumour_shape)
    vessel = _vessel_fraction(rng, grid, shape, params.max_vessels)

    tumour = tumour * soft_tissue
    necrosis = np.minimum(necrosis, tumour)
    vessel = vessel * (soft_tissue - tumour)
    fibroglandular = density * np.clip(soft_tissue - tumour - vessel, 0.0, None)
    fat = np.clip(soft_tissue - tumour - vessel - fibroglandular, 0.0, None)
    return Anatomy(skin=(inside_skin - below_skin).astype(np.float32), fat=fat.astype(np.float32),
                   fibroglandular=fibroglandular.astype(np.float32), tumour=tumour.astype(np.float32),
                   necrosis=necrosis.astype(np.float32), vessel=vessel.astype(np.float32),
                   muscle=(np.clip(chest - lung, 0.0, None) * below_skin).astype(np.float32),
                   tumour_depth=(tumour_depth * (tumour > 0)).astype(np.float32),
                   breast=((breast_distance >= 0) & (chest < 0.5)).astype(np.float32))
