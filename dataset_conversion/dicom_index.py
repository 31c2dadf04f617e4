"""Index a folder of DICOM files by their headers, never by folder or file names.

TCIA downloads name folders ``<SeriesNumber>.000000-<SeriesDescription>-<5 digits>``, but other
copies (and other tools) use arbitrary names, so everything here comes from the headers:
:func:`index_dicom_folder` reads every file's header once (pixel data is skipped, not read) and
:func:`group_exams` groups the files into exams (one patient, one study = one visit) and series.

Files that are not DICOM at all (a README, a CSV of metadata) are ignored quietly; files that
look like DICOM but cannot be read, and DICOM objects that are not images (a structured report,
a DICOM file without pixel data), are listed in :attr:`DicomIndex.skipped_files` with the
reason, for the caller to warn about.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
MEDIA_STORAGE_DIRECTORY_UID = "1.2.840.10008.1.3.10"  # DICOMDIR: an index of files, not an object
BASELINE_TIME_POINT = "MRI_1"
# values larger than this are not read from disk; only pixel data is that large in these headers
DEFERRED_VALUE_BYTES = 4096


@dataclass(frozen=True)
class DicomFileHeader:
    """The header fields of one DICOM file that the converters use.

    Geometry fields are ``None`` for objects without them (e.g. a SEG keeps its per-frame
    positions in functional groups, read by the label code). ``image_position`` and
    ``image_orientation`` are in patient coordinates (mm), as stored in the file.
    """

    path: Path
    patient_id: str
    study_uid: str
    study_date: str
    study_time: str
    time_point: str  # ClinicalTrialTimePointDescription, e.g. "MRI_1"; "" when absent
    series_uid: str
    series_number: int | None
    series_description: str
    modality: str
    sop_class_uid: str
    sop_instance_uid: str
    image_type: tuple[str, ...]
    instance_number: int | None
    image_position: tuple[float, float, float] | None
    image_orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    rows: int | None
    columns: int | None
    content_time: str
    acquisition_time: str
    temporal_position: int | None
    trigger_time: float | None
    frame_of_reference_uid: str
    source_sop_uids: tuple[str, ...] = ()

    @property
    def is_segmentation(self) -> bool:
        return self.sop_class_uid == SEG_SOP_CLASS_UID

    @property
    def is_derived(self) -> bool:
        return bool(self.image_type) and self.image_type[0].upper() == "DERIVED"

    @property
    def is_slice(self) -> bool:
        """True for a single-frame image that can be placed in 3D (position, orientation and spacing known)."""
        return None not in (self.image_position, self.image_orientation, self.pixel_spacing, self.rows, self.columns)


@dataclass
class DicomSeries:
    """All indexed files of one series (SeriesInstanceUID) of one exam."""

    series_uid: str
    series_number: int | None
    description: str
    modality: str
    files: list[DicomFileHeader] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How to name the series in messages: number, description and one file's folder."""
        folder = self.files[0].path.parent if self.files else "?"
        return f"series {self.series_number} {self.description!r} ({len(self.files)} files in {folder})"


@dataclass
class Exam:
    """One imaging visit of one patient: the files of one study, by series."""

    patient_id: str
    study_uid: str
    study_date: str
    study_time: str
    time_point: str
    series: dict[str, DicomSeries] = field(default_factory=dict)
    is_baseline: bool = False

    @property
    def visit(self) -> str:
        """The visit's name: the trial time point (e.g. ``MRI_2``) when given, else the study date."""
        return self.time_point or self.study_date or self.study_uid[-8:]

    def series_list(self) -> list[DicomSeries]:
        """Series sorted by series number (unnumbered last), then description."""
        return sorted(
            self.series.values(),
            key=lambda s: (s.series_number is None, s.series_number or 0, s.description),
        )


@dataclass
class DicomIndex:
    """What :func:`index_dicom_folder` found: usable headers, skipped files and the files that are not DICOM."""

    headers: list[DicomFileHeader]
    skipped_files: list[tuple[Path, str]]
    non_dicom_paths: list[Path] = field(default_factory=list)


# -- reading one header ---------------------------------------------------------------------------
def _text(dataset: pydicom.Dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    return "" if value is None else str(value).strip()


def _number(dataset: pydicom.Dataset, keyword: str, kind: type[int] | type[float]) -> int | float | None:
    """The element as ``kind`` (int or float), or None where it is absent, empty or not a number."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _floats(dataset: pydicom.Dataset, keyword: str, count: int) -> tuple[float, ...] | None:
    value = dataset.get(keyword)
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _source_sop_uids(dataset: pydicom.Dataset) -> tuple[str, ...]:
    """SOP instance UIDs listed in SourceImageSequence (derived maps name the images they come from)."""
    sequence = dataset.get("SourceImageSequence") or []
    return tuple(str(item.ReferencedSOPInstanceUID) for item in sequence if "ReferencedSOPInstanceUID" in item)


def looks_like_dicom(path: Path) -> bool:
    """True when ``path`` claims to be DICOM: a DICOM suffix or the ``DICM`` marker after the preamble."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_header(path: Path) -> DicomFileHeader:
    """Read the header of one DICOM file (pixel data is skipped on disk, not read).

    Raises:
        InvalidDicomError: ``path`` is not a DICOM file.
        ValueError: it is DICOM but not an image usable here (no pixel data, no patient or series id).
        Exception: anything pydicom raises on a damaged file.
    """
    dataset = pydicom.dcmread(path, defer_size=DEFERRED_VALUE_BYTES)
    sop_class = _text(dataset, "SOPClassUID") or _text(dataset.file_meta, "MediaStorageSOPClassUID")
    if sop_class == MEDIA_STORAGE_DIRECTORY_UID:
        raise InvalidDicomError("DICOMDIR")
    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        modality = _text(dataset, "Modality") or "?"
        raise ValueError(f"not an image (no pixel data; modality {modality}, SOP class {sop_class or '?'})")
    for required in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not _text(dataset, required):
            raise ValueError(f"no {required} in the header")
    image_type = dataset.get("ImageType") or ()
    if isinstance(image_type, str):
        image_type = (image_type,)
    return DicomFileHeader(
        path=path,
        patient_id=_text(dataset, "PatientID"),
        study_uid=_text(dataset, "StudyInstanceUID"),
        study_date=_text(dataset, "StudyDate"),
        study_time=_text(dataset, "StudyTime"),
        time_point=_text(dataset, "ClinicalTrialTimePointDescription"),
        series_uid=_text(dataset, "SeriesInstanceUID"),
        series_number=_number(dataset, "SeriesNumber", int),
        series_description=_text(dataset, "SeriesDescription"),
        modality=_text(dataset, "Modality"),
        sop_class_uid=sop_class,
        sop_instance_uid=_text(dataset, "SOPInstanceUID"),
        image_type=tuple(str(v).strip() for v in image_type),
        instance_number=_number(dataset, "InstanceNumber", int),
        image_position=_floats(dataset, "ImagePositionPatient", 3),
        image_orientation=_floats(dataset, "ImageOrientationPatient", 6),
        pixel_spacing=_floats(dataset, "PixelSpacing", 2),
        rows=_number(dataset, "Rows", int),
        columns=_number(dataset, "Columns", int),
        content_time=_text(dataset, "ContentTime"),
        acquisition_time=_text(dataset, "AcquisitionTime"),
        temporal_position=_number(dataset, "TemporalPositionIdentifier", int),
        trigger_time=_number(dataset, "TriggerTime", float),
        frame_of_reference_uid=_text(dataset, "FrameOfReferenceUID"),
        source_sop_uids=_source_sop_uids(dataset),
    )


# -- indexing a folder ----------------------------------------------------------------------------
def candidate_files(folder: Path) -> list[Path]:
    """Every regular, non-hidden file below ``folder``, sorted (so that runs are reproducible)."""
    files = []
    for root, directories, names in os.walk(folder):
        directories[:] = [d for d in directories if not d.startswith(".")]
        files += [Path(root) / name for name in names if not name.startswith(".")]
    return sorted(files)


def index_dicom_folder(folder: str | os.PathLike, progress: bool = True) -> DicomIndex:
    """Read the header of every file below ``folder``.

    Args:
        folder: any folder tree; folder and file names are not interpreted.
        progress: show a tqdm progress bar (on stderr).

    Returns:
        A :class:`DicomIndex`. Files that claim to be DICOM (suffix ``.dcm``/``.dicom``/``.ima`` or
        the ``DICM`` marker) but cannot be read, and DICOM objects that are not images, are in
        ``skipped_files`` with the reason; other non-DICOM files (not DICOMDIR indexes) are listed in
        ``non_dicom_paths``, for the caller to warn about.
    """
    headers: list[DicomFileHeader] = []
    skipped: list[tuple[Path, str]] = []
    non_dicom: list[Path] = []
    for path in tqdm(candidate_files(Path(folder)), desc="reading DICOM headers", unit="file", disable=not progress):
        try:
            headers.append(read_header(path))
        except InvalidDicomError as error:
            if str(error) == "DICOMDIR":
                continue  # an index of the files, read by header like the others
            if looks_like_dicom(path):
                skipped.append((path, f"unreadable DICOM file ({error})"))
            else:
                non_dicom.append(path)
        except ValueError as error:
            skipped.append((path, str(error)))
        except Exception as error:  # pydicom raises many kinds of errors on damaged files
            skipped.append((path, f"unreadable DICOM file ({type(error).__name__}: {error})"))
    return DicomIndex(headers=headers, skipped_files=skipped, non_dicom_paths=non_dicom)


def group_exams(headers: Iterable[DicomFileHeader]) -> dict[str, list[Exam]]:
    """Group headers by patient, then by study (one study = one visit), then by series.

    Returns:
        ``{patient_id: [exam, ...]}`` with each patient's exams sorted by study date and time and
        exactly one exam per patient marked ``is_baseline`` (see :func:`choose_baseline`).
    """
    exams: dict[tuple[str, str], Exam] = {}
    for header in headers:
        key = (header.patient_id, header.study_uid)
        exam = exams.get(key)
        if exam is None:
            exam = exams[key] = Exam(
                patient_id=header.patient_id,
                study_uid=header.study_uid,
                study_date=header.study_date,
                study_time=header.study_time,
                time_point=header.time_point,
            )
        elif not exam.time_point and header.time_point:
            exam.time_point = header.time_point
        series = exam.series.get(header.series_uid)
        if series is None:
            series = exam.series[header.series_uid] = DicomSeries(
                series_uid=header.series_uid,
                series_number=header.series_number,
                description=header.series_description,
                modality=header.modality,
            )
        series.files.append(header)
    by_patient: dict[str, list[Exam]] = {}
    for exam in exams.values():
        by_patient.setdefault(exam.patient_id, []).append(exam)
    for patient_exams in by_patient.values():
        patient_exams.sort(key=lambda e: (e.study_date, e.study_time, e.study_uid))
        choose_baseline(patient_exams).is_baseline = True
    return dict(sorted(by_patient.items()))


def choose_baseline(exams: Sequence[Exam]) -> Exam:
    """The baseline visit: the exam whose trial time point is ``MRI_1``, else the earliest study.

    ``exams`` must be sorted by study date and time (as :func:`group_exams` sorts them).
    """
    for exam in exams:
        if exam.time_point.upper() == BASELINE_TIME_POINT:
            return exam
    return exams[0]


# -- private tags ---------------------------------------------------------------------------------
def private_value(dataset: pydicom.Dataset, group: int, creator: str, element_offset: int) -> object | None:
    """The value of a private element by its creator and offset (e.g. 0x34 for ``(0117,xx34)``), or None.

    Works on sequence items too. Looks the block up by its private creator, so it does not
    matter which block (``10xx``, ``11xx``, ...) the creator was given in a particular file.
    """
    try:
        block = dataset.private_block(group, creator)
        return block[element_offset].value
    except KeyError:
        return None


def as_numbers(value: object) -> list[float] | None:
    """A DS/IS value (single, multi-valued, or raw bytes ``b"-230\\\\177"`` from implicit VR) as floats."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace").strip("\x00 ").split("\\")
    if isinstance(value, str):
        value = value.split("\\")
    if not isinstance(value, Sequence):
        value = [value]
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None
