"""How the DM cache stores one exam's arrays on disk (cache format 2): blosc2 ``.b2nd`` files, as nnU-Net stores
its own preprocessed data.

- ``{case}.b2nd``: the (1 + K, z, y, x) image stack as float16, blosc2 ZSTD clevel 5 with byte SHUFFLE, one chunk per
  slice along z (chunks (1 + K, 1, y, x)), so that reading one 2D slice decompresses one chunk. An exam whose values
  exceed float16's range (possible only without nnU-Net's z-scoring) is stored as float32 instead.
- ``{case}_seg.b2nd``: the (z, y, x) int8 tumour label, same codec and chunking.

Measured on the demo phantom (64x64x12, K = 2): 221 KB per exam with its label, against 590 + 49 KB for format 1
(float32 ``.npy``) and 162 KB for nnU-Net's own ``nnUNetPlans_2d`` case (``benchmarks/cache_format.py``).

Files are opened read-only and memory-mapped with one decompression thread, as nnU-Net's ``nnUNetDatasetBlosc2``
does. Open files are kept in a small least-recently-used table (at most :data:`OPEN_FILES` per process), so a
sampler drawing from thousands of exams neither reopens a file per slice nor runs out of file descriptors.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import blosc2
import numpy as np

from nnunet_dkm.errors import NnunetDkmError

OPEN_FILES = 256
FLOAT16_MAX = float(np.finfo(np.float16).max)
COMPRESSION = {"codec": blosc2.Codec.ZSTD, "clevel": 5, "filters": [blosc2.Filter.SHUFFLE], "nthreads": 1}
# what the manifest states about the storage (cache format 2)
STORAGE = {
    "images": "float16 (float32 for an exam beyond float16's range), blosc2 ZSTD clevel 5 SHUFFLE, one chunk per slice",
    "seg": "int8, blosc2 ZSTD clevel 5 SHUFFLE, one chunk per slice",
}
# mmap does not work on Windows (nnU-Net issue 2723): there files are read through blosc2's own file access
_MMAP = {} if os.name == "nt" else {"mmap_mode": "r"}


def damaged(path: Path, detail: str) -> NnunetDkmError:
    """The one-line error for an unreadable cache file: which file, why, and how to rebuild the cache."""
    return NnunetDkmError(f"{path}: damaged DM cache file ({detail}); delete the folder {path.parent} and run the "
                          f"command again, which rebuilds the cache (or nnUNetv2_dkm_pretrain builds it)")


def _write(path: Path, array: np.ndarray, chunks: tuple[int, ...]) -> None:
    blosc2.asarray(np.ascontiguousarray(array), urlpath=str(path), mode="w", chunks=chunks,
                   cparams=COMPRESSION)


def write_images(path: Path, stack: np.ndarray) -> np.ndarray:
    """Store a (1 + K, z, y, x) image stack; returns the values as stored, as float32 (the stack rounded to float16,
    or unchanged where it exceeds float16's range)."""
    rounded = stack.astype(np.float16) if np.abs(stack).max(initial=0) <= FLOAT16_MAX else stack.astype(np.float32)
    _write(path, rounded, (stack.shape[0], 1, *stack.shape[2:]))
    return rounded.astype(np.float32)


def write_seg(path: Path, seg: np.ndarray) -> None:
    """Store a (z, y, x) label as int8."""
    _write(path, seg.astype(np.int8), (1, *seg.shape[1:]))


def _stamp(path: Path) -> tuple[str, int, int]:
    """The file's identity: a cache rebuilt in place has new files, which must not be read through old handles."""
    try:
        stat = path.stat()
    except OSError as error:
        raise damaged(path, error.strerror or type(error).__name__) from error
    return str(path), stat.st_ino, stat.st_mtime_ns


@functools.lru_cache(maxsize=OPEN_FILES)
def _open(stamp: tuple[str, int, int]) -> blosc2.NDArray:
    try:
        return blosc2.open(urlpath=stamp[0], mode="r", dparams={"nthreads": 1}, **_MMAP)
    except (RuntimeError, OSError, ValueError) as error:
        raise damaged(Path(stamp[0]), "not a readable blosc2 file: truncated or overwritten?") from error


def opened(path: Path) -> blosc2.NDArray:
    """The blosc2 array stored at ``path``, read-only (one error naming the file if it cannot be opened)."""
    return _open(_stamp(path))


def read_region(path: Path, key: Any) -> np.ndarray:
    """``array[key]`` of the stored array, decompressing only the chunks it touches."""
    try:
        return np.asarray(opened(path)[key])
    except (RuntimeError, ValueError) as error:
        raise damaged(path, "a chunk cannot be decompressed") from error


class CachedArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A stored cache array that reads lazily: ``array[index]`` returns a numpy array of ``dtype`` holding only the
    chunks it touches; ``np.asarray(array)`` and arithmetic read the whole array.

    An index that picks one slice along the chunked axis (``images[:, s]``, ``images[1, s]``, ``seg[s]``)
    decompresses that slice's chunk once and keeps it until another slice is read, so the sampler's several reads
    of one slice (pre, post, label) cost one decompression.

    Args:
        path: the ``.b2nd`` file.
        dtype: what reads return (float32 for images stored as float16, int8 for labels).
        slice_axis: the chunked axis (1 for the (1 + K, z, y, x) images, 0 for the (z, y, x) label).
    """

    def __init__(self, path: Path, dtype: np.dtype | type, slice_axis: int) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.slice_axis = slice_axis
        self.shape = tuple(int(size) for size in opened(self.path).shape)
        self._last: tuple[tuple, int, np.ndarray] | None = None  # (file stamp, slice index, the slice)

    def _slice(self, index: int) -> np.ndarray:
        stamp = _stamp(self.path)
        if self._last is None or self._last[:2] != (stamp, index):
            key = (slice(None),) * self.slice_axis + (index,)
            values = read_region(self.path, key).astype(self.dtype, copy=False)
            values.flags.writeable = False  # shared by the reads of this slice: callers copy before changing it
            self._last = stamp, index, values
        return self._last[2]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        parts = key if isinstance(key, tuple) else (key,)
        axis = self.slice_axis
        if len(parts) > axis and Ellipsis not in parts[:axis + 1] and isinstance(parts[axis], (int, np.integer)):
            index = int(parts[axis])
            index = index + self.shape[axis] if index < 0 else index
            return self._slice(index)[parts[:axis] + parts[axis + 1:]]
        return read_region(self.path, key).astype(self.dtype, copy=False)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        return self[...].astype(dtype or self.dtype, copy=False)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        arrays = [np.asarray(value) if isinstance(value, CachedArray) else value for value in inputs]
        return getattr(ufunc, method)(*arrays, **kwargs)

    def __repr__(self) -> str:
        return f"CachedArray({self.path}, shape={self.shape}, dtype={self.dtype})"
