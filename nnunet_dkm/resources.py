"""Will a job fit this machine? Memory and disk estimates checked before anything is allocated or written.

A size that cannot fit (``nnUNetv2_dkm_synthesize --shape 100000 100000 1000``) must be refused at once with the
option to change, not after minutes, in a ``MemoryError`` traceback, or by the kernel's out-of-memory killer, which
ends a process without any message.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nnunet_dkm.command_line import nearest_existing_folder
from nnunet_dkm.errors import NnunetDkmError

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def human_bytes(count: float) -> str:
    """``1.6 PB``, ``230 MB``: a byte count in decimal units."""
    unit = 0
    while count >= 1000 and unit < len(_UNITS) - 1:
        count, unit = count / 1000, unit + 1
    return f"{count:.3g} {_UNITS[unit]}"


def available_memory_bytes() -> int | None:
    """Memory a new allocation can get without swapping: psutil's ``available`` where psutil is installed, else
    Linux's ``MemAvailable``, else the physical memory (``os.sysconf``); None where none of these is known."""
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def device_memory_bytes(device: str) -> int | None:
    """Memory a job on ``device`` can use: a CUDA device's total memory, else :func:`available_memory_bytes`."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory) \
            if torch.cuda.is_available() else None
    return available_memory_bytes()


def check_fits_in_memory(needed_bytes: float, what: str, change: str, device: str = "cpu") -> None:
    """Refuse a job whose estimated memory exceeds what this machine (``device`` "cpu") or GPU has.

    ``what`` says what needs it (``one exam of 100000 x 100000 x 1000 voxels``), ``change`` what to change
    (``choose a smaller --shape``).
    """
    available = device_memory_bytes(device)
    if available is not None and needed_bytes > available:
        where = f"this machine has {human_bytes(available)} available" if not device.startswith("cuda") \
            else f"the GPU has {human_bytes(available)}"
        raise NnunetDkmError(f"{what} needs about {human_bytes(needed_bytes)} of memory, {where}: {change}")


def check_fits_on_disk(needed_bytes: float, folder: str | os.PathLike, what: str, change: str) -> None:
    """Refuse a job whose estimated output exceeds the free space of the disk ``folder`` is (or will be) on."""
    free = shutil.disk_usage(nearest_existing_folder(Path(folder))).free
    if needed_bytes > free:
        raise NnunetDkmError(f"{what} needs about {human_bytes(needed_bytes)} of disk space, {folder} has "
                             f"{human_bytes(free)} free: {change}")
