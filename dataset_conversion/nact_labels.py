"""The tumour label of a Breast-MRI-NACT-Pilot exam, on the grid of its pre-contrast image.

The collection's tumour label is the functional tumour volume (FTV), distributed as the DICOM SEG
"VOI PE Segmentation thresh=70" (series ``S*10000 + 2100`` for DCE series S). These SEGs carry
no ReferencedSeriesSequence: they share the DCE's FrameOfReferenceUID and each frame has its
ImagePositionPatient, so frames are placed on the image grid by physical position. Where that
SEG is missing, the label is rebuilt with the collection's own rule from the early
percent-enhancement map ("...: PE1", ``S*10000 + 1001``) and the "VOI Breast Tissue
Segmentation" SEG (``S*10000 + 2101``):

    inside the VOI box, voxels of the tissue mask with PE1 >= 70 % that have at least 4 of their
    26 neighbours with PE1 >= 70 % (neighbours counted over the VOI box widened by one voxel at
    its upper ends, in the map's own column/row/InstanceNumber index order).

The threshold and the neighbour count are read from the UCSF private parameters where present
(``PE_threshold``, ``minimum_neighbor_count``), the VOI box from private tags (0117,10A1)/(0117,10A2)
(else the tissue mask's bounding box). On the shared real case this gives exactly the official
voxel count that the SEGs store in private sequence (0117,10B0) ("FTVpe(PEearly>70%)": 41105),
and the official "FTVser(PEearly>70%, SER>0.9)" count (30513) too when SER >= 0.9 is added, while
counting neighbours only inside the box gives 41098 and counting them everywhere 41108.

SEG frames are placed on the pre-contrast grid by :mod:`dataset_conversion.dicom_seg`, which tolerates what
real exporters write (sub-voxel offsets, other grids in the same frame of reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from dataset_conversion.dicom_index import DicomSeries, Exam, as_numbers, private_value
from dataset_conversion.dicom_seg import SegPlacement, seg_on_grid
from dataset_conversion.nact_dce import (
    UCSF_PRIVATE_CREATOR,
    DceAcquisition,
    DcePhase,
    is_parametric_map,
    read_phase_image,
    slice_location,
)
from dataset_conversion.raw_dataset import DatasetConversionError, check_same_geometry
from nnunet_dkm.ftv_rule import MIN_NEIGHBOURS, PE_THRESHOLD_PERCENT, ftv_mask

TUMOUR_SEG_DESCRIPTION = "VOI PE Segmentation thresh=70"
TISSUE_SEG_DESCRIPTION = "VOI Breast Tissue Segmentation"
UCSF_TUMOUR_SEG_OFFSET = 2100
UCSF_TISSUE_SEG_OFFSET = 2101
UCSF_PE1_OFFSET = 1001
UCSF_SER_OFFSET = 1000
SOURCE_TUMOUR_SEG = "TCIA VOI PE Segmentation thresh=70"
SOURCE_REBUILT = (
    "FTV rule rebuilt from PE1 and VOI Breast Tissue Segmentation (PE1 >= {threshold:g} %, "
    ">= {neighbours} of 26 neighbours, {box})"
)
BOX_FROM_TAGS = "UCSF VOI box"
BOX_FROM_MASK = "VOI box = tissue mask bounding box"


@dataclass
class LabelInputs:
    """The series of one exam that a tumour label can come from (any may be None)."""

    tumour_seg: DicomSeries | None
    pe1_map: DicomSeries | None
    tissue_seg: DicomSeries | None
    ser_map: DicomSeries | None = None  # where UCSF stores the FTV rule's parameters


@dataclass
class TumourLabel:
    """A tumour label on the pre-contrast grid and where it came from.

    ``array`` is uint8 (z, y, x) with values {0, 1}; ``official_voxels`` is the FTV voxel count the
    collection stores in its private tags (None when absent); ``source_file`` the file to name in
    messages about this label; ``placement`` how that SEG's frames were put on the image grid.
    """

    array: np.ndarray
    source: str
    source_file: Path
    official_voxels: int | None = None
    placement: SegPlacement | None = None

    @property
    def voxels(self) -> int:
        return int(self.array.sum())


# -- finding the label's series -------------------------------------------------------------------
def find_label_inputs(exam: Exam, dce: DceAcquisition) -> LabelInputs:
    """Locate the tumour SEG, PE1 map, tissue SEG and SER map of ``exam`` by description or UCSF series number."""
    number = dce.series_number
    series = exam.series_list()

    def pick(candidates: list[DicomSeries], offset: int) -> DicomSeries | None:
        if not candidates:
            return None
        matching = [s for s in candidates if number is not None and s.series_number == number * 10000 + offset]
        return (matching or candidates)[0]

    def segs(description: str, offset: int) -> list[DicomSeries]:
        return [
            s for s in series
            if s.files[0].is_segmentation and (
                s.description.strip().lower() == description.lower()
                or (number is not None and s.series_number == number * 10000 + offset)
            )
        ]

    def maps(name: str, offset: int) -> list[DicomSeries]:
        return [
            s for s in series
            if is_parametric_map(s) and not s.files[0].is_segmentation and (
                s.description.strip().upper().endswith(f": {name}")
                or (number is not None and s.series_number == number * 10000 + offset)
            )
        ]

    return LabelInputs(tumour_seg=pick(segs(TUMOUR_SEG_DESCRIPTION, UCSF_TUMOUR_SEG_OFFSET), UCSF_TUMOUR_SEG_OFFSET),
                       pe1_map=pick(maps("PE1", UCSF_PE1_OFFSET), UCSF_PE1_OFFSET),
                       tissue_seg=pick(segs(TISSUE_SEG_DESCRIPTION, UCSF_TISSUE_SEG_OFFSET), UCSF_TISSUE_SEG_OFFSET),
                       ser_map=pick(maps("SER", UCSF_SER_OFFSET), UCSF_SER_OFFSET))


# -- UCSF private tags ----------------------------------------------------------------------------
def read_official_ftv_voxels(path: Path) -> int | None:
    """The official FTV voxel count stored by UCSF: item (0117,10B5) "FTVpe..." of sequence (0117,10B0).

    Returns the item's (0117,10B3) value, or None where the file carries none.
    """
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    for item in private_value(dataset, 0x0117, UCSF_PRIVATE_CREATOR, 0xB0) or []:
        name = str(private_value(item, 0x0117, UCSF_PRIVATE_CREATOR, 0xB5) or "")
        count = as_numbers(private_value(item, 0x0117, UCSF_PRIVATE_CREATOR, 0xB3))
        if name.upper().startswith("FTVPE") and count:
            return int(count[0])
    return None


def read_ftv_parameters(paths: Sequence[Path]) -> tuple[float, int]:
    """PE threshold (%) and minimum neighbour count from the UCSF parameter list (0117,1010), else 70 and 4."""
    threshold, neighbours = PE_THRESHOLD_PERCENT, MIN_NEIGHBOURS
    for path in paths:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        for item in private_value(dataset, 0x0117, UCSF_PRIVATE_CREATOR, 0x10) or []:
            name = str(private_value(item, 0x0117, UCSF_PRIVATE_CREATOR, 0x14) or "")
            value = as_numbers(private_value(item, 0x0117, UCSF_PRIVATE_CREATOR, 0x19))
            if value and name == "PE_threshold":
                threshold = value[0]
            elif value and name == "minimum_neighbor_count":
                neighbours = int(value[0])
    return threshold, neighbours


def read_voi_box(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The VOI box from (0117,10A1)/(0117,10A2): first and last (column, row, slice) index, inclusive.

    Slices count in the map's InstanceNumber order from 0. Returns None where absent.
    """
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    low = as_numbers(private_value(dataset, 0x0117, UCSF_PRIVATE_CREATOR, 0xA1))
    high = as_numbers(private_value(dataset, 0x0117, UCSF_PRIVATE_CREATOR, 0xA2))
    if not low or not high or len(low) != 3 or len(high) != 3:
        return None
    return np.asarray(low, int), np.asarray(high, int)


# -- the FTV rule inside the VOI box ----------------------------------------------------------------
def ftv_rule(pe_early: np.ndarray, tissue: np.ndarray, box_low: Sequence[int], box_high: Sequence[int],
             threshold: float = PE_THRESHOLD_PERCENT, min_neighbours: int = MIN_NEIGHBOURS) -> np.ndarray:
    """The UCSF functional tumour volume rule (``nnunet_dkm.ftv_rule``) inside the VOI box.

    Args:
        pe_early: early percent enhancement (z, y, x), in the map's own slice/row/column order.
        tissue: bool tissue mask (z, y, x) on the same grid.
        box_low, box_high: first and last (z, y, x) index of the VOI box, inclusive.
        threshold: PE cut-off in percent (voxels with ``pe_early >= threshold`` enhance).
        min_neighbours: minimum number of the 26 neighbours that must enhance.

    Returns:
        bool array (z, y, x): tissue & enhancing & inside the box & enough enhancing neighbours, the
        neighbours counted over the box widened by one voxel at its upper ends.
    """
    low = np.maximum(np.asarray(box_low, int), 0)
    high = np.minimum(np.asarray(box_high, int), np.asarray(pe_early.shape) - 1)
    in_box = np.zeros(pe_early.shape, bool)
    in_box[tuple(slice(a, b + 1) for a, b in zip(low, high, strict=True))] = True
    counted = np.zeros(pe_early.shape, bool)
    counted[tuple(slice(a, b + 2) for a, b in zip(low, high, strict=True))] = True
    return ftv_mask(pe_early, in_box & np.asarray(tissue, dtype=bool), counted, threshold, min_neighbours)


def rebuild_ftv_label(pe1_map: DicomSeries, tissue_seg: DicomSeries, reference: sitk.Image,
                      frame_of_reference_uid: str = "", parameter_files: Sequence[Path] = ()) -> TumourLabel:
    """Rebuild the tumour label from the PE1 map and the tissue SEG on ``reference``'s grid (see module doc).

    Args:
        pe1_map: the early percent-enhancement map series (on the DCE grid).
        tissue_seg: the "VOI Breast Tissue Segmentation" SEG series.
        reference: the pre-contrast image.
        frame_of_reference_uid: the DCE's, checked against the SEG's.
        parameter_files: more files that may hold the UCSF rule parameters (e.g. one SER map file).

    Raises:
        DatasetConversionError: the map or the SEG does not match ``reference``, or the tissue mask is empty.
    """
    pe1_phase = DcePhase(files=sorted(pe1_map.files, key=slice_location), content_time="")
    pe1_image = read_phase_image(pe1_phase, pe1_map.label)
    check_same_geometry(reference, pe1_image, f"PE1 map {pe1_map.label}")
    tissue_path = tissue_seg.files[0].path
    tissue_on_grid = seg_on_grid(tissue_path, reference, frame_of_reference_uid)
    tissue = tissue_on_grid.mask
    pe_early = sitk.GetArrayFromImage(pe1_image).astype(np.float32)

    # the VOI box counts slices in InstanceNumber order; the arrays are stacked along the slice normal
    numbers = [f.instance_number or 0 for f in pe1_phase.files]
    reversed_order = len(numbers) > 1 and numbers[0] > numbers[-1]
    if reversed_order:
        pe_early, tissue = pe_early[::-1], tissue[::-1]

    private_sources = [tissue_path, pe1_phase.files[0].path]
    box = next((b for b in (read_voi_box(p) for p in private_sources) if b is not None), None)
    if box is not None:
        low, high = box[0][::-1], box[1][::-1]  # (column, row, slice) -> (z, y, x)
        if tissue.any() and not _inside(np.argwhere(tissue), low, high):
            box = None  # tags disagree with the mask: do not trust them
    box_origin = BOX_FROM_TAGS
    if box is None:
        box_origin = BOX_FROM_MASK
        if not tissue.any():
            raise DatasetConversionError(f"{tissue_path}: the breast tissue mask is empty; cannot rebuild the label")
        where = np.argwhere(tissue)
        low, high = where.min(axis=0), where.max(axis=0)
    threshold, neighbours = read_ftv_parameters([*private_sources, *parameter_files])
    label = ftv_rule(pe_early, tissue, low, high, threshold, neighbours)
    if reversed_order:
        label = label[::-1]
    official = next((c for c in (read_official_ftv_voxels(p) for p in private_sources) if c is not None), None)
    return TumourLabel(array=np.ascontiguousarray(label, dtype=np.uint8),
                       source=SOURCE_REBUILT.format(threshold=threshold, neighbours=neighbours, box=box_origin),
                       source_file=tissue_path, official_voxels=official, placement=tissue_on_grid.placement)


def _inside(points: np.ndarray, low: np.ndarray, high: np.ndarray) -> bool:
    return bool((points >= low).all() and (points <= high).all())


def tumour_label(inputs: LabelInputs, reference: sitk.Image, frame_of_reference_uid: str = "") -> TumourLabel | None:
    """The tumour label on ``reference``'s grid: the tumour SEG if present, else rebuilt, else None.

    Args:
        inputs: from :func:`find_label_inputs`.
        reference: the pre-contrast image.
        frame_of_reference_uid: the DCE's, to check the SEGs against.

    Raises:
        DatasetConversionError: a label input does not match the image or cannot be read.
    """
    if inputs.tumour_seg is not None:
        path = inputs.tumour_seg.files[0].path
        on_grid = seg_on_grid(path, reference, frame_of_reference_uid)
        return TumourLabel(array=on_grid.mask.astype(np.uint8), source=SOURCE_TUMOUR_SEG, source_file=path,
                           official_voxels=read_official_ftv_voxels(path), placement=on_grid.placement)
    if inputs.pe1_map is not None and inputs.tissue_seg is not None:
        parameter_files = [inputs.ser_map.files[0].path] if inputs.ser_map is not None else []
        return rebuild_ftv_label(inputs.pe1_map, inputs.tissue_seg, reference, frame_of_reference_uid, parameter_files)
    return None
