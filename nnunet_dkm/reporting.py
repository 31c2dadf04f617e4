"""What every report states besides its numbers, for the benchmark, the probe and the scripts in ``benchmarks/``:
the header (command, date, machine, commit), markdown tables, number formats, the time of a call and the peak
memory of a block of work."""

from __future__ import annotations

import ctypes
import gc
import math
import os
import platform
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (the platform's processor name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: str = "cpu") -> str:
    """Host, CPU model and cores, torch threads, Python / torch / MONAI versions and the device (with the GPU's
    name on CUDA)."""
    import monai
    import torch

    text = (f"{platform.node()} ({platform.system()} {platform.machine()}, {cpu_model()}, {os.cpu_count()} CPU cores, "
            f"{torch.get_num_threads()} torch threads), Python {platform.python_version()}, torch {torch.__version__}, "
            f"MONAI {monai.__version__}, device {device}")
    if str(device).startswith("cuda") and torch.cuda.is_available():
        text += f" ({torch.cuda.get_device_name(0)})"
    return text


def utc_now() -> str:
    """The date and time of a report, e.g. ``2025-01-31 14:05 UTC``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def current_commit() -> str:
    """``git describe --always --dirty`` of the checkout this package runs from; ``unknown`` outside git."""
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=PACKAGE_ROOT, capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


@dataclass(frozen=True)
class ReportHeader:
    """How a report was made, the lines it opens with: its title, the command, date and machine, the commit of
    this checkout, and a bullet per note."""

    title: str
    command: str
    machine: str
    date: str = field(default_factory=utc_now)
    commit: str = field(default_factory=current_commit)
    notes: Sequence[str] = ()

    def lines(self) -> list[str]:
        """The header as markdown lines (``# title``, then one ``- `` bullet each)."""
        return [f"# {self.title}", "", f"- **Command:** `{self.command}`",
                f"- **Date / machine:** {self.date}; {self.machine}", f"- **Commit:** {self.commit}",
                *[f"- {note}" for note in self.notes]]


def markdown_table(rows: pd.DataFrame | Sequence[Mapping[str, object] | Sequence[object]],
                   columns: Sequence[str] | None = None) -> list[str]:
    """``rows`` (a frame, one mapping per line whose keys are the headers, or one sequence per line with the headers
    in ``columns``) as the lines of a markdown pipe table (pandas ``to_markdown``, i.e. tabulate); cells stand as
    given: number parsing is off, so format numbers first. ``columns`` also heads a table without rows."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=columns)
    return frame.to_markdown(index=False, disable_numparse=True).splitlines()


def format_number(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; ``n/a`` for None or NaN."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``mean ± std``; ``n/a`` where the mean is NaN."""
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_p(value: float) -> str:
    """A p-value: two significant digits, scientific notation below 0.001; ``n/a`` for NaN."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


def mean_seconds(call: Callable[[], object], runs: int) -> float:
    """Mean seconds of ``runs`` calls of ``call`` after torch Timer's warm-up calls (CUDA synchronised), at this
    process's torch thread count."""
    import torch
    from torch.utils.benchmark import Timer  # imports torch's C++-extension tooling: only when timing

    return Timer("call()", globals={"call": call}, num_threads=torch.get_num_threads()).timeit(runs).mean


class PeakMemory:
    """Growth of this process's peak resident memory over a block of work (Linux ``VmHWM``, reset through
    ``/proc/self/clear_refs`` after returning freed heap memory with ``malloc_trim``; own code: no library resets
    the high-water mark), or of the CUDA allocator's peak on a CUDA device. ``peak_mib`` is None where neither
    exists."""

    def __init__(self, device: str = "cpu") -> None:
        self.cuda = str(device).startswith("cuda")
        try:
            self._libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
        except OSError:
            self._libc = None
        self._baseline: int | None = None

    @staticmethod
    def _status_bytes(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return 1024 * int(line.split()[1])
        raise OSError(f"{field} not in /proc/self/status")

    def start(self) -> None:
        """Start a block: forget the peak so far."""
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._baseline = torch.cuda.memory_allocated()
            return
        if self._libc is not None:
            self._libc.malloc_trim(0)
        try:
            self._baseline = self._status_bytes("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self._baseline = None

    def peak_mib(self) -> float | None:
        """MiB the peak grew by since ``start``."""
        if self._baseline is None:
            return None
        if self.cuda:
            import torch

            return (torch.cuda.max_memory_allocated() - self._baseline) / 2**20
        return (self._status_bytes("VmHWM") - self._baseline) / 2**20
