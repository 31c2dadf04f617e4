"""Is an image file complete? One check for every place that reads an image (converters, the DM cache, the probe,
synthesis).

Readers do not always notice damage: SimpleITK reads a ``.nii.gz`` cut to 300 bytes without an error and fills the
missing voxels with zeros (a converter would write a black post-contrast phase, and DM pretraining would learn from
it), and its NIfTI reader turns NaN voxels into 0. :func:`check_image_file` refuses such a file, naming it:

- NIfTI (``.nii``, ``.nii.gz``; NIfTI-1 and -2): the file is read whole with ``gzip`` and nibabel, so a gzip stream
  must end with its end-of-stream marker and a matching checksum, the content must hold every voxel byte the header
  promises, and the voxel values must be finite (no NaN, no infinity).
- Other formats (``.nrrd``, ``.mha``, ...) are left to their readers, which report truncation themselves;
  :func:`check_finite_voxels` checks the values they return.

:func:`read_checked` reads a file with an nnU-Net reader after the check and checks the voxels it returns;
:func:`read_checked_image` does the same with SimpleITK; :func:`write_checked_image` checks what ITK wrote. Each
check decompresses the file once more and holds its content and voxels in memory while it checks them (for a
512x512x160 float32 volume about 340 MB).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from nnunet_dkm.errors import NnunetDkmError

_NIFTI_IMAGE_CLASSES = {348: nib.Nifti1Image, 540: nib.Nifti2Image}  # by sizeof_hdr, the header's first 4 bytes
DAMAGED_HINT = "replace it with an intact copy (or convert the dataset again) and run the command again"


class DamagedImageError(NnunetDkmError):
    """An image file is incomplete, corrupt or holds non-finite voxels; the message names the file."""


class ImageDimensionError(NnunetDkmError):
    """An intact image with another number of dimensions than the command needs (a 2D slice, a 4D series)."""


def _nifti_content(path: Path) -> bytes:
    """The file's bytes, decompressed whole where it is gzipped: ``gzip`` raises on a stream cut short and checks
    the trailer's CRC-32 (nibabel's own reader stops after the voxels and never sees a wrong checksum)."""
    data = path.read_bytes()
    if not path.name.lower().endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        raise DamagedImageError(f"{path}: truncated: its gzip stream ends early; {DAMAGED_HINT}") from None
    except gzip.BadGzipFile as error:
        if str(error).startswith("Not a gzipped file"):
            raise DamagedImageError(f"{path} cannot be read (not gzip data, although the name ends in .gz); "
                                    f"{DAMAGED_HINT}") from None
        raise DamagedImageError(f"{path}: corrupt gzip data ({error}); {DAMAGED_HINT}") from None
    except zlib.error as error:
        raise DamagedImageError(f"{path}: corrupt gzip data ({error}); {DAMAGED_HINT}") from None


def check_image_file(path: str | os.PathLike) -> None:
    """Refuse a damaged NIfTI file (``.nii``, ``.nii.gz``; NIfTI-1 and -2): a corrupt or truncated gzip stream,
    content shorter than its header promises, or NaN / infinite voxel values. Other formats pass (see the module
    docstring).

    Raises:
        DamagedImageError: naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii.gz", ".nii")):
        return
    if path.stat().st_size == 0:
        raise DamagedImageError(f"{path}: empty file (0 bytes); {DAMAGED_HINT}")
    content = _nifti_content(path)
    sizes = {int.from_bytes(content[:4], order) for order in ("little", "big")} & set(_NIFTI_IMAGE_CLASSES)
    if len(content) < 4 or not sizes:
        raise DamagedImageError(f"{path}: no NIfTI header at its start (cut short, or not a NIfTI file); "
                                f"{DAMAGED_HINT}")
    try:
        voxels = np.asanyarray(_NIFTI_IMAGE_CLASSES[sizes.pop()].from_bytes(content).dataobj)
    except OSError as error:  # nibabel: "Expected N bytes, got M bytes"
        raise DamagedImageError(f"{path}: truncated: its content ends early ({str(error).splitlines()[0]}); "
                                f"{DAMAGED_HINT}") from None
    except Exception as error:  # nibabel raises WrapStructError, HeaderDataError, ... on a damaged header
        raise DamagedImageError(f"{path}: unreadable NIfTI header ({error}); {DAMAGED_HINT}") from None
    check_finite_voxels(voxels, path)


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
    Raises :class:`NnunetDkmError` naming the file (``shown_as`` where ``path`` is a temporary name for it).
    """
    path = Path(path)
    shown = shown_as if shown_as is not None else path
    try:
        sitk.WriteImage(image, str(path), useCompression=compress)
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise NnunetDkmError(f"{shown}: cannot be written ({detail}): check that its folder is writable and its "
                             f"disk has space") from error
    try:
        check_image_file(path)
    except DamagedImageError as error:
        raise NnunetDkmError(f"{shown}: written incompletely (is its disk full?): free some space or choose a folder "
                             f"on another disk") from error
