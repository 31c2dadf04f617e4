"""DICOM SEG frames onto an image's grid, by physical position, tolerating what real exporters write.

SEG frames onto the pre-contrast grid (:func:`seg_on_grid`), tolerating what real exporters write.
The offset of a SEG is the continuous image index (column, row, slice) of the centre of its first
pixel minus (0, 0, nearest slice), also given in mm along the image's axes:

- **same grid**: same orientation, pixel spacing and matrix, every frame at offset 0 (within 0.1
  voxel, like rounded positions): frame pixel (r, c) -> image pixel (r, c) on the frame's slice.
- **same grid, sub-voxel offset**: as above, but all frames share one offset (within 0.1 voxel) of at
  most half a voxel per axis (e.g. an exporter that wrote the corner of the first pixel instead of its
  centre: +-0.5 in-plane). Still the same pixel grid: pixel (r, c) -> (r, c), slice by rounding (an
  exact half slice goes to the higher index). One warning per SEG file with the offset.
  The offset and the mapping are recorded per case in dataset.json in every case.
- **resampled**: anything else on the DCE's FrameOfReferenceUID (larger offsets, other spacing,
  orientation or matrix): the frames are stacked into an image with their own geometry (slices
  SpacingBetweenSlices, else SliceThickness, apart) and resampled onto the pre-contrast grid by
  physical position with nearest neighbour (SimpleITK), with a warning. A SEG 3 pixels off in-plane is
  therefore taken at its word: its mask moves 3 pixels on the image. Frames are the only link between
  these SEGs and the DCE, so their stated position is trusted rather than guessed back onto the grid;
  the warning, the summary note and the recorded offset make such a case easy to find and drop.
- **refused** (:class:`DatasetConversionError` naming the file): another FrameOfReferenceUID, frames
  that lie on no regular stack, or more than half of the mask outside the image (with the offset).
  The converter then writes the exam without label (it is never lost).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from dataset_conversion.raw_dataset import DatasetConversionError

GRID_TOLERANCE_VOXELS = 0.1  # frame offsets within this (of the grid, of each other) are noise or rounded positions
SUB_VOXEL_LIMIT = 0.5  # a common frame offset up to half a voxel per axis keeps the image's pixel grid
SUB_VOXEL_SLACK = 0.01  # float noise allowed beyond the half voxel
STACK_TOLERANCE = 0.1  # frames of a resampled SEG must lie on their own regular stack within this (in its voxels)
MAX_STACK_SLICES = 4096
MAX_OUTSIDE_FRACTION = 0.5  # a SEG with more of its mask outside the image than this is refused
MAPPING_SAME = "same grid"
MAPPING_SUB_VOXEL = "same grid, sub-voxel offset"
MAPPING_RESAMPLED = "resampled"


class LabelGridWarning(UserWarning):
    """A SEG was placed on the image with an offset, by resampling, or partly outside it; the label is still built."""


@dataclass
class SegFrames:
    """A DICOM SEG's frames as stored, with their geometry (all segments merged).

    ``inside`` is bool (frames, rows, columns); ``positions`` (frames, 3) the ImagePositionPatient of each
    frame, i.e. the centre of its first pixel in mm; ``direction`` (3, 3) has the row direction, the column
    direction and the slice normal as columns (ITK's x, y, z axes); ``spacing_xy`` the pixel spacing in mm
    between columns and between rows (ITK x, y order, the reverse of DICOM PixelSpacing);
    ``slice_spacing`` SpacingBetweenSlices, else SliceThickness, else None.
    """

    path: Path
    inside: np.ndarray
    positions: np.ndarray
    direction: np.ndarray
    spacing_xy: np.ndarray
    slice_spacing: float | None
    frame_of_reference_uid: str


@dataclass(frozen=True)
class SegPlacement:
    """How a SEG's frames were put on the image grid.

    ``offset_voxels`` is the continuous image index (column, row, slice) of the centre of the SEG's first
    pixel, minus (0, 0, nearest slice): (0, 0, 0) on the image's own grid, (0.5, 0.5, 0) for frames written
    half a pixel off in-plane. ``offset_mm`` is the same along the image's axes in mm. ``outside_fraction``
    is the share of the SEG's mask voxels that fall outside the image and were dropped.
    """

    mapping: str
    offset_voxels: tuple[float, float, float]
    offset_mm: tuple[float, float, float]
    outside_fraction: float = 0.0

    def record(self) -> dict[str, object]:
        """The placement for a case's dataset.json record."""
        return {
            "label_grid_mapping": self.mapping,
            "label_grid_offset_voxels": [_tidy(v, 4) for v in self.offset_voxels],
            "label_grid_offset_mm": [_tidy(v, 4) for v in self.offset_mm],
            "label_outside_image_fraction": round(self.outside_fraction, 4),
        }

    def describe(self) -> str:
        """The offset in words, e.g. ``(+0.50, +0.50, +0.00) voxels = (+0.352, +0.352, +0.000) mm``."""
        voxels = ", ".join(f"{_tidy(v, 2):+.2f}" for v in self.offset_voxels)
        millimetres = ", ".join(f"{_tidy(v, 3):+.3f}" for v in self.offset_mm)
        return f"({voxels}) voxels = ({millimetres}) mm along the image's column, row and slice axes"


def _tidy(value: float, digits: int) -> float:
    """``value`` rounded, without a negative zero."""
    return round(value, digits) + 0.0


@dataclass
class SegOnGrid:
    """A SEG's mask on the image grid: bool ``mask`` (z, y, x) of the image's size, and how it got there."""

    mask: np.ndarray
    placement: SegPlacement


def read_seg_frames(seg_path: Path, reference: sitk.Image) -> SegFrames:
    """Read a DICOM SEG's frames and per-frame geometry.

    FRACTIONAL SEGs are thresholded at half their MaximumFractionalValue (> 127 of 255), BINARY ones at
    > 0. Frames without PlaneOrientation or PixelMeasures (per frame or shared) are taken to have the
    ``reference`` image's orientation and pixel spacing.

    Raises:
        DatasetConversionError: naming ``seg_path``: unreadable, no SEG, a frame without position, or frames
        of different orientation or pixel spacing.
    """
    try:
        dataset = pydicom.dcmread(seg_path)
        frames = dataset.pixel_array
    except Exception as error:
        raise DatasetConversionError(f"{seg_path}: cannot read the SEG ({error})") from error
    if str(dataset.get("Modality", "")) != "SEG" or "PerFrameFunctionalGroupsSequence" not in dataset:
        raise DatasetConversionError(f"{seg_path}: not a DICOM SEG with per-frame positions")
    frames = frames.reshape(-1, int(dataset.Rows), int(dataset.Columns))
    if len(dataset.PerFrameFunctionalGroupsSequence) != len(frames):
        raise DatasetConversionError(
            f"{seg_path}: {len(frames)} frames but {len(dataset.PerFrameFunctionalGroupsSequence)} per-frame positions"
        )
    if str(dataset.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        inside = frames.astype(np.int32) * 2 > int(dataset.get("MaximumFractionalValue", 255))
    else:
        inside = frames > 0

    image_direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    default_orientation = np.concatenate([image_direction[:, 0], image_direction[:, 1]])
    shared = dataset.get("SharedFunctionalGroupsSequence", [None])[0]
    positions, orientations, spacings = [], [], []
    for index, groups in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        position = _functional_value(groups, shared, "PlanePositionSequence", "ImagePositionPatient")
        if position is None:
            raise DatasetConversionError(f"{seg_path}: frame {index + 1} has no ImagePositionPatient")
        orientation = _functional_value(groups, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        pixel_spacing = _functional_value(groups, shared, "PixelMeasuresSequence", "PixelSpacing")
        positions.append([float(v) for v in position])
        orientations.append(default_orientation if orientation is None else [float(v) for v in orientation])
        spacings.append(reference.GetSpacing()[:2] if pixel_spacing is None else [float(pixel_spacing[1]),
                                                                                  float(pixel_spacing[0])])
    orientations, spacings = np.asarray(orientations), np.asarray(spacings)
    if not np.allclose(orientations, orientations[0], atol=1e-4):
        raise DatasetConversionError(f"{seg_path}: frames have different ImageOrientationPatient; cannot place them")
    if not np.allclose(spacings, spacings[0], rtol=1e-4):
        raise DatasetConversionError(f"{seg_path}: frames have different PixelSpacing; cannot place them")
    row, column = orientations[0][:3], orientations[0][3:]
    if not np.allclose([row @ row, column @ column, row @ column], [1, 1, 0], atol=1e-3):
        raise DatasetConversionError(f"{seg_path}: ImageOrientationPatient {orientations[0].tolist()} is not two "
                                     "orthogonal unit vectors")
    return SegFrames(path=seg_path, inside=inside, positions=np.asarray(positions),
                     direction=np.column_stack([row, column, np.cross(row, column)]), spacing_xy=spacings[0],
                     slice_spacing=_seg_slice_spacing(shared),
                     frame_of_reference_uid=str(dataset.get("FrameOfReferenceUID", "")))


def _functional_value(frame_groups, shared, sequence: str, keyword: str):
    """A functional-group attribute, per-frame first, then shared; None if neither has it."""
    for groups in (frame_groups, shared):
        if groups is not None and sequence in groups and len(groups[sequence].value) > 0:
            item = groups[sequence].value[0]
            if keyword in item:
                return item[keyword].value
    return None


def _seg_slice_spacing(shared) -> float | None:
    """SpacingBetweenSlices, else SliceThickness, from the shared PixelMeasuresSequence; None where absent."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _functional_value(None, shared, "PixelMeasuresSequence", keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return None


def frame_indices(frames: SegFrames, reference: sitk.Image) -> np.ndarray:
    """Continuous image index (column, row, slice) of each frame's first pixel centre: array (frames, 3)."""
    return np.asarray([reference.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in frames.positions])


def grid_offset(index: np.ndarray) -> np.ndarray:
    """Offset (3,) of a continuous index (column, row, slice) from pixel (0, 0) of the nearest slice (ties up)."""
    return np.array([index[0], index[1], index[2] - np.floor(index[2] + 0.5)])


def _on_the_image_pixel_grid(frames: SegFrames, reference: sitk.Image, indices: np.ndarray) -> bool:
    """True where the frames are the image's pixel grid, up to one common offset of at most half a voxel.

    Same orientation and pixel spacing, frames of the image's matrix, every frame at the same sub-voxel
    offset (the slice offset compared modulo one slice, so +0.5 and -0.5 agree).
    """
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    if not np.allclose(frames.direction[:, :2], direction[:, :2], atol=1e-3):
        return False
    if not np.allclose(frames.spacing_xy, reference.GetSpacing()[:2], rtol=1e-3):
        return False
    if frames.inside.shape[1:] != tuple(reference.GetSize()[1::-1]):
        return False
    if (np.abs(indices[:, :2]) > SUB_VOXEL_LIMIT + SUB_VOXEL_SLACK).any():  # in-plane offset = index of pixel (0, 0)
        return False
    in_plane_spread = np.abs(indices[:, :2] - indices[0, :2]).max()
    slice_spread = np.abs((indices[:, 2] - indices[0, 2] + 0.5) % 1.0 - 0.5).max()
    return bool(max(in_plane_spread, slice_spread) <= GRID_TOLERANCE_VOXELS)


def _place_on_image_grid(frames: SegFrames, indices: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, float]:
    """Frame pixel (r, c) -> image pixel (r, c) on the slice nearest the frame (after the common slice offset).

    Returns the bool mask (z, y, x) of ``size`` (x, y, z) and the fraction of mask voxels on frames beyond
    the image's slices (dropped).
    """
    slice_offset = grid_offset(indices[0])[2]
    slices = np.floor(indices[:, 2] - slice_offset + 0.5).astype(int)
    mask = np.zeros(tuple(size)[::-1], dtype=bool)
    dropped = 0
    for slice_index, inside in zip(slices, frames.inside, strict=True):
        if 0 <= slice_index < size[2]:
            mask[slice_index] |= inside
        else:
            dropped += int(inside.sum())
    total = int(frames.inside.sum())
    return mask, dropped / total if total else 0.0


def seg_as_image(frames: SegFrames, default_slice_spacing: float) -> sitk.Image:
    """The SEG's frames stacked into a uint8 image with their own geometry (frames may leave gaps).

    Slices are ``frames.slice_spacing`` apart (``default_slice_spacing`` where the SEG stores none), starting
    at the frame lowest along the normal; frames at the same position are merged.

    Raises:
        DatasetConversionError: naming the file and frame, where frames do not lie on one regular stack.
    """
    normal = frames.direction[:, 2]
    along = frames.positions @ normal
    first = int(np.argmin(along))
    spacing = frames.slice_spacing or default_slice_spacing
    steps = (along - along[first]) / spacing
    in_plane = frames.positions - np.outer(along - along[first], normal) - frames.positions[first]
    for index, (step, shift) in enumerate(zip(steps, in_plane, strict=True)):
        if abs(step - round(step)) > STACK_TOLERANCE or np.abs(shift).max() > STACK_TOLERANCE * frames.spacing_xy.min():
            raise DatasetConversionError(
                f"label {frames.path} does not match its image: frame {index + 1} at ImagePositionPatient "
                f"{np.round(frames.positions[index], 3).tolist()} is not on the regular stack of the SEG's other "
                f"frames ({spacing:g} mm apart); cannot place it"
            )
    slices = np.round(steps).astype(int)
    if slices.max() >= MAX_STACK_SLICES:
        raise DatasetConversionError(f"{frames.path}: frames span {slices.max() + 1} slices; cannot place them")
    volume = np.zeros((slices.max() + 1, *frames.inside.shape[1:]), np.uint8)
    for slice_index, inside in zip(slices, frames.inside, strict=True):
        volume[slice_index] |= inside
    image = sitk.GetImageFromArray(volume)
    image.SetOrigin(frames.positions[first].tolist())
    image.SetSpacing((*frames.spacing_xy.tolist(), spacing))
    image.SetDirection(frames.direction.ravel().tolist())
    return image


def fraction_outside(image: sitk.Image, reference: sitk.Image) -> float:
    """Share of ``image``'s non-zero voxels whose centres fall outside ``reference``'s voxels (0 where none)."""
    points = np.argwhere(sitk.GetArrayViewFromImage(image) > 0)[:, ::-1].astype(float)  # (n, 3) x, y, z
    if len(points) == 0:
        return 0.0
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    physical = np.asarray(image.GetOrigin()) + (points * image.GetSpacing()) @ direction.T
    reference_direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    index = (physical - reference.GetOrigin()) @ reference_direction / reference.GetSpacing()
    inside = ((index >= -0.5) & (index < np.asarray(reference.GetSize()) - 0.5)).all(axis=1)
    return float(1.0 - inside.mean())


def resample_onto(image: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """``image`` resampled onto ``reference``'s grid by physical position, nearest neighbour: bool (z, y, x)."""
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(resampled) > 0


def seg_on_grid(seg_path: Path, reference: sitk.Image, frame_of_reference_uid: str = "") -> SegOnGrid:
    """Place a DICOM SEG's frames on ``reference``'s grid by physical position (see the module doc).

    Frames on the image's pixel grid up to one common offset of at most half a voxel per axis map pixel to
    pixel ("same grid", or "same grid, sub-voxel offset" with a warning); any other geometry is resampled by
    physical position with nearest neighbour ("resampled", with a warning). One warning per call, naming
    the file and the offset.

    Args:
        seg_path: the SEG file.
        reference: 3D image whose grid the mask is wanted on.
        frame_of_reference_uid: the image's FrameOfReferenceUID; checked against the SEG's when given.

    Returns:
        the bool mask (z, y, x) of ``reference``'s size and its :class:`SegPlacement`.

    Raises:
        DatasetConversionError: naming ``seg_path``: unreadable or no SEG, another frame of reference,
        frames on no regular stack, or more than half of the mask outside the image (with the offset).
    """
    frames = read_seg_frames(seg_path, reference)
    if frame_of_reference_uid and frames.frame_of_reference_uid not in ("", frame_of_reference_uid):
        raise DatasetConversionError(
            f"label {seg_path} does not match its image: FrameOfReferenceUID {frames.frame_of_reference_uid} "
            f"differs from the DCE's {frame_of_reference_uid}, so its frames cannot be placed by position"
        )
    indices = frame_indices(frames, reference)
    offset = grid_offset(indices[0])
    if _on_the_image_pixel_grid(frames, reference, indices):
        mask, outside = _place_on_image_grid(frames, indices, reference.GetSize())
        exact = np.abs(offset).max() <= GRID_TOLERANCE_VOXELS
        mapping = MAPPING_SAME if exact else MAPPING_SUB_VOXEL
    else:
        image = seg_as_image(frames, default_slice_spacing=reference.GetSpacing()[2])
        mask, outside, mapping = resample_onto(image, reference), fraction_outside(image, reference), MAPPING_RESAMPLED
    placement = SegPlacement(mapping=mapping, offset_voxels=tuple(float(v) for v in offset),
                             offset_mm=tuple(float(v) for v in offset * np.asarray(reference.GetSpacing())),
                             outside_fraction=outside)
    if outside > MAX_OUTSIDE_FRACTION:
        raise DatasetConversionError(
            f"label {seg_path} does not match its image: {100 * outside:.0f} % of its mask lies outside the image "
            f"(SEG offset {placement.describe()})"
        )
    _warn_about_placement(seg_path, placement)
    return SegOnGrid(mask=mask, placement=placement)


def _warn_about_placement(seg_path: Path, placement: SegPlacement) -> None:
    """One warning for a SEG placed with an offset, by resampling, or partly outside the image."""
    if placement.mapping == MAPPING_SAME and placement.outside_fraction == 0:
        return
    where = "lie on the image grid"
    if placement.mapping != MAPPING_SAME:
        where = f"lie off the image grid by {placement.describe()}"
    how = {
        MAPPING_SAME: "mapped pixel to pixel",
        MAPPING_SUB_VOXEL: "same grid, sub-voxel offset: mapped pixel to pixel, slice by rounding",
        MAPPING_RESAMPLED: "resampled onto the image grid by physical position (nearest neighbour)",
    }[placement.mapping]
    dropped = (
        f"; {100 * placement.outside_fraction:.1f} % of the mask lies outside the image and is dropped"
        if placement.outside_fraction > 0 else ""
    )
    warnings.warn(f"{seg_path}: SEG frames {where}; {how}{dropped}", LabelGridWarning, stacklevel=3)


