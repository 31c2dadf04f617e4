"""Find the DCE acquisition of a Breast-MRI-NACT-Pilot exam and split it into phases.

At UCSF the whole DCE acquisition is usually ONE series (e.g. series 2, "Sagittal-IR_3DFGRE":
3 phases x 60 sagittal slices), with no TemporalPositionIdentifier or TriggerTime. The phases
are consecutive InstanceNumber blocks of N files, N being the number of distinct slice
positions; each block has its own ContentTime. Parametric maps derived from it are named after
it (``"<description>: SER"``, ``"<description>: PE1"``) and numbered by the UCSF rule
``S*10000 + 1000`` (SER) and ``S*10000 + 1001`` (PE1) for DCE series number S.

:func:`find_dce_series` locates the DCE by, in order: the series-number rule, the maps'
description prefix, the images the maps list in SourceImageSequence, and finally (exams without
maps) the original MR series with the most phases. :func:`split_phases` handles one series with
phases tagged by TemporalPositionIdentifier or TriggerTime, one untagged series (InstanceNumber
blocks, checked against ContentTime), any number of phases, and phases stored as separate
series. :func:`read_phase_image` builds a 3D SimpleITK image of one phase from its sorted files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from dataset_conversion.dicom_index import DicomFileHeader, DicomSeries, Exam, as_numbers, private_value
from dataset_conversion.raw_dataset import DatasetConversionError

MAP_DESCRIPTION = re.compile(r"^(?P<parent>.*?)\s*:\s*(?P<map>SER|PE\d+)\s*$", re.IGNORECASE)
UCSF_MAP_OFFSETS = {1000: "SER", 1001: "PE1"}
UCSF_PRIVATE_CREATOR = "UCSF BIRP PRIVATE CREATOR 011710xx"
UCSF_PHASE_TIMES_OFFSET = 0x34  # (0117,1034): k-space-centre time of each phase, s after injection
POSITION_TOLERANCE_MM = 0.01
ORIENTATION_TOLERANCE = 1e-4


@dataclass
class DceAcquisition:
    """The series holding one exam's DCE acquisition and how they were found."""

    series: list[DicomSeries]
    how_found: str

    @property
    def series_number(self) -> int | None:
        return self.series[0].series_number

    @property
    def label(self) -> str:
        return "; ".join(s.label for s in self.series)


@dataclass
class DcePhase:
    """One phase: its files sorted along the slice normal (the order SimpleITK stacks them in)."""

    files: list[DicomFileHeader]
    content_time: str

    @property
    def instance_range(self) -> str:
        numbers = [f.instance_number for f in self.files if f.instance_number is not None]
        return f"InstanceNumber {min(numbers)}-{max(numbers)}" if numbers else "no InstanceNumber"


# -- geometry helpers -----------------------------------------------------------------------------
def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal (3,) of the slice plane: row direction x column direction, as DICOM and ITK define it."""
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, column)
    return normal / np.linalg.norm(normal)


def slice_location(header: DicomFileHeader) -> float:
    """Position (mm) of a slice along its normal: where SimpleITK puts it in the stack."""
    return float(np.dot(header.image_position, slice_normal(header.image_orientation)))


def distinct_locations(locations: Sequence[float], tolerance: float = POSITION_TOLERANCE_MM) -> list[float]:
    """Distinct slice locations (sorted), merging values closer than ``tolerance`` (63.799999 == 63.800003)."""
    distinct: list[float] = []
    for value in sorted(locations):
        if not distinct or value - distinct[-1] > tolerance:
            distinct.append(value)
    return distinct


def is_parametric_map(series: DicomSeries) -> bool:
    """True for the UCSF SER/PE maps (description ``"...: SER"``/``"...: PE1"``, or derived DCE images)."""
    if MAP_DESCRIPTION.match(series.description):
        return True
    first = series.files[0]
    return first.is_derived and "DCE" in (t.upper() for t in first.image_type)


def is_original_image_series(series: DicomSeries) -> bool:
    """An acquired (not derived) series of placeable MR slices: a DCE candidate."""
    first = series.files[0]
    return (
        series.modality == "MR"
        and not first.is_segmentation
        and not first.is_derived
        and not is_parametric_map(series)
        and all(f.is_slice for f in series.files)
    )


# -- finding the DCE series -----------------------------------------------------------------------
def find_dce_series(exam: Exam) -> DceAcquisition:
    """The series holding ``exam``'s DCE acquisition (one series, or one series per phase).

    Raises:
        DatasetConversionError: no DCE series can be identified (message names the exam).
    """
    originals = [s for s in exam.series_list() if is_original_image_series(s)]
    maps = [s for s in exam.series_list() if is_parametric_map(s)]

    by_number: dict[int, DicomSeries] = {}
    for series in originals:  # where a number holds several series, the one with most files
        number = series.series_number
        if number is not None and (number not in by_number or len(series.files) > len(by_number[number].files)):
            by_number[number] = series
    for map_series in maps:
        number = map_series.series_number
        if number is not None and number % 10000 in UCSF_MAP_OFFSETS and number // 10000 in by_number:
            parent = by_number[number // 10000]
            _check_no_stray_series(exam, parent, originals)
            return _with_sibling_phases(
                exam, parent, originals, f"UCSF series-number rule ({map_series.description!r} = {number})"
            )

    for map_series in maps:
        match = MAP_DESCRIPTION.match(map_series.description)
        parents = [s for s in originals if match and s.description == match.group("parent")]
        if parents:
            return _with_sibling_phases(exam, parents[0], originals, f"description of {map_series.description!r}")

    for map_series in maps:
        sources = {uid for f in map_series.files for uid in f.source_sop_uids}
        parents = [s for s in originals if sources & {f.sop_instance_uid for f in s.files}]
        if parents:
            how = f"SourceImageSequence of {map_series.description!r}"
            found = _with_sibling_phases(exam, parents[0], originals, how)
            if len(parents) > len(found.series):  # phases in series that do not share a description
                return DceAcquisition(series=parents, how_found=how + " (phases in separate series)")
            return found

    multi_phase = [(len(split_phases(DceAcquisition([s], ""), strict=False)), s) for s in originals]
    multi_phase = [(count, s) for count, s in multi_phase if count >= 2]
    if multi_phase:
        count, series = max(multi_phase, key=lambda item: (item[0], len(item[1].files)))
        return DceAcquisition(series=[series], how_found=f"no SER/PE maps; the MR series with most phases ({count})")
    raise DatasetConversionError(
        f"patient {exam.patient_id}, visit {exam.visit}: no DCE series found (no '...: SER'/'...: PE1' map names "
        f"its parent, and no MR series holds several phases); series present: "
        + ", ".join(f"{s.series_number} {s.description!r}" for s in exam.series_list())
    )


def _check_no_stray_series(exam: Exam, parent: DicomSeries, originals: Sequence[DicomSeries]) -> None:
    """Refuse a DCE series whose number is shared by smaller series of other SeriesInstanceUIDs: slices moved out of
    it (by a re-export or an editing tool) would be missing from its phases, and would be taken for another
    series."""
    strays = [s for s in originals if s is not parent and s.series_number == parent.series_number
              and len(s.files) < len(parent.files)]
    if strays:
        files = [f.path for s in strays for f in s.files]
        raise DatasetConversionError(
            f"patient {exam.patient_id}, visit {exam.visit}: the DCE {parent.label} shares its series number with "
            f"{len(strays)} other SeriesInstanceUID(s) holding {len(files)} file(s) ({', '.join(map(str, files[:3]))}"
            f"{', ...' if len(files) > 3 else ''}): give those files the DCE's SeriesInstanceUID "
            f"{parent.series_uid} again, or remove them"
        )


def _with_sibling_phases(exam: Exam, parent: DicomSeries, originals: Sequence[DicomSeries], how: str) -> DceAcquisition:
    """``parent`` alone, or, when it holds one phase only, with the series of the other phases.

    Siblings are original series with the same description and the same slice geometry.
    """
    if len(split_phases(DceAcquisition([parent], how), strict=False)) != 1:
        return DceAcquisition(series=[parent], how_found=how)
    key = _slice_geometry_key(parent)
    siblings = [s for s in originals if s.description == parent.description and _slice_geometry_key(s) == key]
    if len(siblings) > 1:
        return DceAcquisition(series=siblings, how_found=how + " (phases in separate series)")
    return DceAcquisition(series=[parent], how_found=how)


def _slice_geometry_key(series: DicomSeries) -> tuple:
    first = series.files[0]
    locations = distinct_locations([slice_location(f) for f in series.files])
    return (first.rows, first.columns, tuple(np.round(first.image_orientation, 3)), len(locations),
            round(locations[0], 1), round(locations[-1], 1))


# -- splitting into phases ------------------------------------------------------------------------
def split_phases(dce: DceAcquisition, strict: bool = True) -> list[DcePhase]:
    """Split the DCE acquisition into phases in acquisition order (phase 0 = pre-contrast).

    One series: by TemporalPositionIdentifier or TriggerTime when they vary, else by consecutive
    InstanceNumber blocks of N files (N = distinct slice positions), checked against ContentTime.
    Several series: one phase per series, ordered by ContentTime/AcquisitionTime, then series number.

    Args:
        dce: the acquisition from :func:`find_dce_series`.
        strict: check completeness and geometry, raising on problems; ``False`` only counts phases
            (used while searching) and returns ``[]`` where the strict split would fail.

    Raises:
        DatasetConversionError (strict only): missing phases or slices, phases of different
        geometry, or phase order contradicted by ContentTime; the message names the series.
    """
    try:
        if len(dce.series) > 1:
            phases = _phases_from_separate_series(dce.series)
        else:
            phases = _phases_within_series(dce.series[0])
        _check_same_geometry(phases, dce.label)
    except DatasetConversionError:
        if strict:
            raise
        return []
    return phases


def _phases_within_series(series: DicomSeries) -> list[DcePhase]:
    files = series.files
    locations = distinct_locations([slice_location(f) for f in files])
    num_positions = len(locations)
    if len(files) == num_positions:
        return [_make_phase(files, series)]
    for attribute, name in (("temporal_position", "TemporalPositionIdentifier"), ("trigger_time", "TriggerTime")):
        values = [getattr(f, attribute) for f in files]
        if None not in values and len(set(values)) > 1:
            groups = {value: [f for f in files if getattr(f, attribute) == value] for value in sorted(set(values))}
            for value, group in groups.items():
                if len(group) != num_positions:
                    raise DatasetConversionError(
                        f"{series.label}: {name} {value} has {len(group)} files for {num_positions} slice positions "
                        f"(missing slices)"
                    )
            return [_make_phase(group, series) for group in groups.values()]
    return _phases_by_instance_blocks(series, num_positions)


def _phases_by_instance_blocks(series: DicomSeries, num_positions: int) -> list[DcePhase]:
    """Consecutive InstanceNumber blocks of ``num_positions`` files, one per phase, checked against ContentTime."""
    files = series.files
    numbers = [f.instance_number for f in files]
    if None in numbers or len(set(numbers)) != len(numbers):
        raise DatasetConversionError(
            f"{series.label}: {len(files)} files at {num_positions} slice positions, but InstanceNumbers are missing "
            f"or repeated, so the phases cannot be told apart"
        )
    first = min(numbers)
    num_blocks = (max(numbers) - first) // num_positions + 1
    blocks: list[list[DicomFileHeader]] = [[] for _ in range(num_blocks)]
    for header in files:
        blocks[(header.instance_number - first) // num_positions].append(header)
    problems = []
    for index, block in enumerate(blocks):
        low, high = first + index * num_positions, first + (index + 1) * num_positions - 1
        if not block:
            problems.append(f"phase {index + 1} of {num_blocks} missing (no file with InstanceNumber {low}-{high})")
        elif len(block) != num_positions:
            problems.append(
                f"phase {index + 1} of {num_blocks} incomplete ({len(block)} of {num_positions} slices with "
                f"InstanceNumber {low}-{high})"
            )
    if problems:
        raise DatasetConversionError(f"{series.label}: missing phases or slices: " + "; ".join(problems))
    phases = [_make_phase(block, series) for block in blocks]
    _check_content_time_order(phases, series)
    return phases


def _check_content_time_order(phases: Sequence[DcePhase], series: DicomSeries) -> None:
    """Each InstanceNumber block must be acquired after the previous one (ContentTime ranges must not overlap)."""
    ranges = []
    for phase in phases:
        seconds = [_seconds_of_day(f.content_time) for f in phase.files]
        if None in seconds:
            return  # ContentTime absent: nothing to check against
        ranges.append((min(seconds), max(seconds)))
    for index in range(1, len(ranges)):
        if ranges[index][0] < ranges[index - 1][1]:
            raise DatasetConversionError(
                f"{series.label}: InstanceNumber blocks disagree with ContentTime ({phases[index].instance_range} "
                f"starts at {phases[index].content_time}, before {phases[index - 1].instance_range} ends); "
                f"cannot tell the phases apart"
            )


def _phases_from_separate_series(series_list: Sequence[DicomSeries]) -> list[DcePhase]:
    phases = []
    for series in series_list:
        locations = distinct_locations([slice_location(f) for f in series.files])
        if len(locations) != len(series.files):
            raise DatasetConversionError(
                f"{series.label}: expected one phase per series, but {len(series.files)} files share "
                f"{len(locations)} slice positions"
            )
        phases.append((series, _make_phase(series.files, series)))

    def order(item: tuple[DicomSeries, DcePhase]) -> tuple:
        series, phase = item
        times = [_seconds_of_day(f.content_time or f.acquisition_time) for f in phase.files]
        known = [t for t in times if t is not None]
        return (min(known) if known else float("inf"), series.series_number or 0)

    return [phase for _, phase in sorted(phases, key=order)]


def _make_phase(files: Sequence[DicomFileHeader], series: DicomSeries) -> DcePhase:
    ordered = sorted(files, key=slice_location)
    locations = [slice_location(f) for f in ordered]
    if len(distinct_locations(locations)) != len(ordered):
        raise DatasetConversionError(f"{series.label}: a phase holds two slices at the same position")
    if len(ordered) > 2:
        gaps = np.diff(locations)
        if not np.allclose(gaps, gaps[0], rtol=1e-3, atol=POSITION_TOLERANCE_MM):
            raise DatasetConversionError(
                f"{series.label}: slice spacing varies between {gaps.min():.3f} and {gaps.max():.3f} mm "
                f"(missing slices?)"
            )
    times = sorted({f.content_time for f in ordered if f.content_time})
    return DcePhase(files=ordered, content_time=times[0] if times else "")


def _check_same_geometry(phases: Sequence[DcePhase], label: str) -> None:
    """All phases must have the same slice positions, orientation, matrix and pixel spacing."""
    reference = phases[0].files
    for index, phase in enumerate(phases[1:], start=1):
        other = phase.files
        same = (
            len(other) == len(reference)
            and all(a.rows == b.rows and a.columns == b.columns for a, b in zip(reference, other, strict=True))
            and np.allclose([a.image_orientation for a in reference], [b.image_orientation for b in other],
                            atol=ORIENTATION_TOLERANCE)
            and np.allclose([a.pixel_spacing for a in reference], [b.pixel_spacing for b in other], rtol=1e-4)
            and np.allclose([a.image_position for a in reference], [b.image_position for b in other],
                            atol=POSITION_TOLERANCE_MM)
        )
        if not same:
            raise DatasetConversionError(
                f"{label}: phase {index + 1} ({phase.instance_range}, first file {other[0].path}) has a different "
                f"geometry (slice positions, orientation, matrix or pixel spacing) from the pre-contrast phase"
            )


def _seconds_of_day(value: str) -> float | None:
    """DICOM TM ``HHMMSS[.ffffff]`` as seconds since midnight, or None when absent/unparsable."""
    value = (value or "").strip()
    if len(value) < 2 or not value[:2].isdigit():
        return None
    try:
        hours = int(value[:2])
        minutes = int(value[2:4]) if len(value) >= 4 else 0
        seconds = float(value[4:]) if len(value) > 4 else 0.0
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + seconds


# -- reading images and times ---------------------------------------------------------------------
def read_phase_image(phase: DcePhase, what: str) -> sitk.Image:
    """The 3D image (x, y, z = columns, rows, slices) of one phase, stacked along the slice normal.

    Geometry comes from the headers (origin = first slice's ImagePositionPatient, direction from
    ImageOrientationPatient and the normal, spacing from PixelSpacing and the slice positions);
    rescale slope/intercept are applied by SimpleITK.
    """
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f.path) for f in phase.files])
    try:
        return reader.Execute()
    except RuntimeError as error:
        damaged = first_unreadable_slice([f.path for f in phase.files])
        if damaged is not None:
            path, detail = damaged
            raise DatasetConversionError(
                f"{what}: {path} is damaged, SimpleITK cannot read it ({detail}); replace it with an intact copy"
            ) from error
        raise DatasetConversionError(
            f"{what}: SimpleITK cannot read the slices (first file {phase.files[0].path}): {error}"
        ) from error


def first_unreadable_slice(paths: Sequence[Path]) -> tuple[Path, str] | None:
    """The first file SimpleITK cannot read on its own (a truncated or corrupt slice), with the reason; or None."""
    for path in paths:
        try:
            sitk.ReadImage(str(path))
        except RuntimeError as error:
            lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
            return path, lines[-1] if lines else "unreadable"
    return None


def read_phase_times(paths: Sequence[Path], num_phases: int) -> list[float] | None:
    """Acquisition times (s, relative to injection) of the phases from UCSF private tag (0117,1034).

    The tag sits in the SER/PE maps and the SEGs, not in the DCE images. Returns the first
    list of ``num_phases`` values found in ``paths``, or None.
    """
    for path in paths:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # unreadable here means only that it carries no times for us
            continue
        times = as_numbers(private_value(dataset, 0x0117, UCSF_PRIVATE_CREATOR, UCSF_PHASE_TIMES_OFFSET))
        if times is not None and len(times) == num_phases:
            return times
    return None
