"""Is an image file complete? One check for every place that reads an image (converters, the DM cache, the probe,
synthesis).

Readers do not always notice damage: SimpleITK reads a ``.nii.gz`` cut to 300 bytes without an error and fills the
missing voxels with zeros (a converter would write a black post-contrast phase, and DM pretraining would learn from
it), and its NIfTI reader turns NaN voxels into 0. :func:`check_image_file` refuses such a file, naming it:

- NIfTI (``.nii``, ``.nii.gz``; NIfTI-1 and -2): the content, decompressed where it is gzipped, must hold the header
  and every voxel byte the header promises (``vox_offset + voxels x bytes per voxel``); a gzip stream must end with
  its end-of-stream marker and a matching checksum; the stored voxel values must be finite (no NaN, no infinity).
- Other formats (``.nrrd``, ``.mha``, ...) are left to their readers, which report truncation themselves;
  :func:`check_finite_voxels` checks the values they return.

:func:`read_checked` reads a file with an nnU-Net reader after the check and checks the voxels it returns;
:func:`read_checked_image` does the same with SimpleITK; :func:`write_checked_image` checks what ITK wrote. Each
check decompresses the file once more, in chunks of 1 MiB (no second copy in memory).
"""

from __future__ import annotations

import io
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from nnunet_dkm.errors import NnunetDkmError

_NIFTI_HEADER_CLASSES = {348: nib.Nifti1Header, 540: nib.Nifti2Header}  # by sizeof_hdr
_LARGEST_NIFTI_HEADER = max(_NIFTI_HEADER_CLASSES)
_CHUNK_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WINDOW_BITS = 16 + zlib.MAX_WBITS  # zlib reads the gzip wrapper and checks its trailer (CRC-32 and size)
DAMAGED_HINT = "replace it with an intact copy (or convert the dataset again) and run the command again"


class DamagedImageError(NnunetDkmError):
    """An image file is incomplete, corrupt or holds non-finite voxels; the message names the file."""


class ImageDimensionError(NnunetDkmError):
    """An intact image with another number of dimensions than the command needs (a 2D slice, a 4D series)."""


class ImageWriteError(NnunetDkmError):
    """An image could not be written whole; the message names the file."""


class _TruncatedStream(Exception):
    """A gzip stream that ends without its end-of-stream marker."""


def _gzip_content(path: Path) -> Iterator[bytes]:
    """The decompressed content of a gzip file, chunk by chunk (every member of a multi-member file).

    Raises :class:`_TruncatedStream` where the stream ends early, :class:`DamagedImageError` for corrupt data or a
    wrong checksum.
    """
    decompressor = zlib.decompressobj(_GZIP_WINDOW_BITS)
    with open(path, "rb") as stream:
        magic = stream.read(len(_GZIP_MAGIC))
        if magic and not _GZIP_MAGIC.startswith(magic):
            raise DamagedImageError(f"{path} cannot be read (not gzip data, although the name ends in .gz); "
                                    f"{DAMAGED_HINT}")
        stream.seek(0)
        while compressed := stream.read(_CHUNK_BYTES):
            while compressed:
                try:
                    yield decompressor.decompress(compressed)
                except zlib.error as error:
                    raise DamagedImageError(f"{path}: corrupt gzip data ({error}); {DAMAGED_HINT}") from error
                if not decompressor.eof:
                    break
                compressed = decompressor.unused_data.lstrip(b"\0")  # a next member, or padding some tools add
                if compressed:
                    decompressor = zlib.decompressobj(_GZIP_WINDOW_BITS)
    if not decompressor.eof:
        raise _TruncatedStream()


def _file_content(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            yield chunk


def _nifti_header(first_bytes: bytes, path: Path) -> nib.Nifti1Header:
    """The NIfTI-1 or -2 header at the start of the (decompressed) content."""
    for byte_order in ("little", "big"):
        size = int.from_bytes(first_bytes[:4], byte_order) if len(first_bytes) >= 4 else 0
        if size in _NIFTI_HEADER_CLASSES and len(first_bytes) >= size:
            try:
                return _NIFTI_HEADER_CLASSES[size].from_fileobj(io.BytesIO(first_bytes[:size]))
            except Exception as error:  # nibabel raises HeaderDataError, ValueError, ...
                raise DamagedImageError(f"{path}: unreadable NIfTI header ({error}); {DAMAGED_HINT}") from error
    raise DamagedImageError(f"{path}: no complete NIfTI header in its first {len(first_bytes)} bytes (cut short, or "
                            f"not a NIfTI file); {DAMAGED_HINT}")


@dataclass
class _NiftiScan:
    """One pass over a NIfTI file's content: the bytes seen, the header's promise, the non-finite voxel values."""

    path: Path
    header: nib.Nifti1Header | None = None
    content_bytes: int = 0
    promised_bytes: int = 0
    voxels: int = 0
    nonfinite_voxels: int = 0
    stream_truncated: bool = False
    _start: bytes = b""  # content held until the header can be parsed
    _carry: bytes = b""  # voxel bytes short of a whole voxel

    def read_header(self) -> None:
        self.header = _nifti_header(self._start, self.path)
        self.voxels = math.prod(int(n) for n in self.header.get_data_shape())
        self.promised_bytes = self.voxel_offset + self.voxels * self.header.get_data_dtype().itemsize

    @property
    def voxel_offset(self) -> int:
        return int(self.header["vox_offset"]) if self.header is not None else 0

    def add(self, chunk: bytes) -> None:
        """Take the next chunk of content."""
        position = self.content_bytes  # content offset of chunk[0]
        self.content_bytes += len(chunk)
        if self.header is None:
            self._start += chunk
            if len(self._start) < _LARGEST_NIFTI_HEADER:
                return
            self.read_header()
            chunk, position, self._start = self._start, 0, b""
        self._count_nonfinite(chunk[max(0, self.voxel_offset - position): max(0, self.promised_bytes - position)])

    def finish(self) -> None:
        """The content has ended (whole, or cut short)."""
        if self.header is None:
            start = self._start
            self.read_header()
            self._count_nonfinite(start[self.voxel_offset: self.promised_bytes])

    def _count_nonfinite(self, voxel_bytes: bytes) -> None:
        dtype = self.header.get_data_dtype()
        if dtype.kind not in "fc" or not voxel_bytes:
            return
        voxel_bytes = self._carry + voxel_bytes
        whole = len(voxel_bytes) - len(voxel_bytes) % dtype.itemsize
        values = np.frombuffer(voxel_bytes[:whole], dtype=dtype)
        self.nonfinite_voxels += int(values.size - np.count_nonzero(np.isfinite(values)))
        self._carry = voxel_bytes[whole:]


def check_image_file(path: str | os.PathLike) -> None:
    """Refuse a damaged NIfTI file: fewer bytes than its header promises, a corrupt or truncated gzip stream, or
    NaN / infinite voxel values. Other formats pass (see the module docstring).

    Raises:
        DamagedImageError: naming the file and what is wrong with it.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii.gz", ".nii")) and path.stat().st_size == 0:
        raise DamagedImageError(f"{path}: empty file (0 bytes); {DAMAGED_HINT}")
    if name.endswith(".nii.gz"):
        content = _gzip_content(path)
    elif name.endswith(".nii"):
        content = _file_content(path)
    else:
        return
    scan = _NiftiScan(path)
    try:
        for chunk in content:
            scan.add(chunk)
    except _TruncatedStream:
        scan.stream_truncated = True
    try:
        scan.finish()
    except DamagedImageError:
        if not scan.stream_truncated:
            raise
        raise DamagedImageError(f"{path}: truncated: its gzip stream ends early, after {scan.content_bytes} bytes, "
                                f"inside its NIfTI header; {DAMAGED_HINT}") from None
    if scan.stream_truncated or scan.content_bytes < scan.promised_bytes:
        how = "its gzip stream ends early" if scan.stream_truncated else "its content ends early"
        raise DamagedImageError(f"{path}: truncated: {how}, after {scan.content_bytes} of the {scan.promised_bytes} "
                                f"bytes its NIfTI header promises; {DAMAGED_HINT}")
    if scan.nonfinite_voxels:
        raise DamagedImageError(f"{path}: {scan.nonfinite_voxels} of {scan.voxels} voxels are NaN or infinite; "
                                f"{DAMAGED_HINT}")


def nifti_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The voxel grid a NIfTI file's header declares (nibabel reads the header only), or None for another format or a
    header nibabel cannot read (:func:`check_image_file` names that damage)."""
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        return None
    try:
        return tuple(int(size) for size in nib.load(str(path)).shape)
    except Exception:  # nibabel raises several types on a damaged header
        return None


def check_image_dimension(path: str | os.PathLike, allowed: tuple[int, ...] = (3,), fix: str = "") -> None:
    """Refuse a NIfTI file whose header declares another number of dimensions than ``allowed`` (trailing axes of
    size 1 do not count beyond the third), before a reader sees it: ITK reads a 2D slice of an oblique volume as
    "cannot be read", and a 4D series fails deep in later code.

    Raises:
        ImageDimensionError: naming the file, its dimensions and ``fix``.
    """
    shape = nifti_shape(path)
    if shape is None:
        return
    dimension = len(shape)
    while dimension > 3 and shape[dimension - 1] == 1:
        dimension -= 1
    if dimension not in allowed:
        needed = " or ".join(f"{d}D" for d in allowed)
        raise ImageDimensionError(f"{path} is {dimension}D ({' x '.join(map(str, shape[:dimension]))} voxels); "
                                  f"{needed} is needed{': ' + fix if fix else ''}")


def check_finite_voxels(voxels: np.ndarray, path: str | os.PathLike) -> None:
    """Refuse voxel values that are NaN or infinite (read from ``path``); integer images always pass."""
    voxels = np.asarray(voxels)
    if not np.issubdtype(voxels.dtype, np.inexact):
        return
    finite = np.isfinite(voxels)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise DamagedImageError(f"{path}: {bad} of {finite.size} voxels are NaN or infinite; {DAMAGED_HINT}")


def _unreadable(path: Path, error: Exception) -> DamagedImageError:
    detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return DamagedImageError(f"{path} cannot be read ({detail}); {DAMAGED_HINT}")


def read_checked(path: str | os.PathLike,
                 read: Callable[[str], tuple[np.ndarray, dict]]) -> tuple[np.ndarray, dict]:
    """``read(str(path))`` of a complete file, then its voxels checked to be finite.

    ``read`` is a reader returning (voxels, properties): an nnU-Net reader's ``read_seg``, or
    ``lambda file: reader.read_images([file])``. Raises :class:`DamagedImageError` naming the file where it is
    damaged or the reader cannot read it (ITK's readers raise ``RuntimeError``).
    """
    path = Path(path)
    check_image_file(path)
    try:
        voxels, properties = read(str(path))
    except RuntimeError as error:
        raise _unreadable(path, error) from error
    check_finite_voxels(voxels, path)
    return voxels, properties


def read_checked_image(path: str | os.PathLike) -> sitk.Image:
    """``sitk.ReadImage`` of a complete file with finite voxels.

    Raises:
        DamagedImageError: naming the file, where it is damaged or SimpleITK cannot read it.
    """
    path = Path(path)
    check_image_file(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise _unreadable(path, error) from error
    check_finite_voxels(sitk.GetArrayViewFromImage(image), path)
    return image


def write_checked_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True,
                        shown_as: str | os.PathLike | None = None) -> None:
    """``sitk.WriteImage``, then :func:`check_image_file` on what was written.

    ITK does not always raise when a write fails: on a full disk it prints an error and leaves a truncated file.
    Raises :class:`ImageWriteError` naming the file (``shown_as`` where ``path`` is a temporary name for it).
    """
    path = Path(path)
    shown = shown_as if shown_as is not None else path
    try:
        sitk.WriteImage(image, str(path), useCompression=compress)
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise ImageWriteError(f"{shown}: cannot be written ({detail}): check that its folder is writable and its "
                              f"disk has space") from error
    try:
        check_image_file(path)
    except DamagedImageError as error:
        raise ImageWriteError(f"{shown}: written incompletely (is its disk full?): free some space or choose a folder "
                              f"on another disk") from error
