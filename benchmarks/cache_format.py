"""The DM cache's storage formats compared on one preprocessed dataset: disk per exam, build time per exam and the
pretraining sampler's slices per second, beside nnU-Net's own preprocessed data of the same configuration.

    python benchmarks/cache_format.py nnUNet_preprocessed/Dataset990_DKMPhantom -c 2d [--max-exams 40]

Formats: format 1 (float32 ``.npy``), float32 blosc2 and format 2 (float16 blosc2, what ``build_cache`` writes);
blosc2 with ZSTD clevel 5 SHUFFLE, one chunk per slice (``nnunet_dkm.preprocessing.cache_storage``). Beside them,
format 2's float16 values under other blosc2 settings (ZSTD clevel 9; BITSHUFFLE; SHUFFLE + BYTEDELTA) and, lossy,
with the lowest 3 of float16's 10 mantissa bits zeroed (relative precision 2^-7 instead of 2^-10): what each would
save on disk, not what the DM learns from it. Every exam is
preprocessed once (single process) and written in every format into a temporary folder (``--work``); the dataset
itself is only read (``nnUNet_raw`` must point at its raw folder). Build time per exam = preprocessing + writing.
The sampler (``pretrain_dm.slices.PatchSampler``, the configuration's in-plane patch) runs pinned to one core.
Prints a markdown table with the command and the machine (``--output`` also writes it to a file).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blosc2
import numpy as np

from nnunet_dkm.preprocessing import CachedExam, PlannedDataset, find_pretraining_exams, read_exam
from nnunet_dkm.preprocessing.cache_storage import COMPRESSION, write_images, write_seg
from nnunet_dkm.preprocessing.dm_cache import slice_facts
from nnunet_dkm.preprocessing.transforms import mask_to_preprocessed_space, preprocess_like_precontrast
from nnunet_dkm.reporting import machine_description, utc_now
from pretrain_dm.slices import PatchSampler


@dataclass(frozen=True)
class NpyExam(CachedExam):
    """A format-1 exam (float32 ``.npy``), memory-mapped as format 1 read it."""

    def load(self, mmap: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        mode = "r" if mmap else None
        seg = np.load(self.seg_file, mmap_mode=mode) if self.seg_file is not None else None
        return np.load(self.images_file, mmap_mode=mode), seg


def _write_npy(folder: Path, case: str, stack: np.ndarray, seg: np.ndarray | None) -> tuple[Path, Path | None]:
    np.save(folder / f"{case}.npy", stack.astype(np.float32))
    if seg is not None:
        np.save(folder / f"{case}_seg.npy", seg.astype(np.int8))
    return folder / f"{case}.npy", None if seg is None else folder / f"{case}_seg.npy"


def _write_b2nd_float32(folder: Path, case: str, stack: np.ndarray,
                        seg: np.ndarray | None) -> tuple[Path, Path | None]:
    blosc2.asarray(np.ascontiguousarray(stack, dtype=np.float32), urlpath=str(folder / f"{case}.b2nd"), mode="w",
                   chunks=(stack.shape[0], 1, *stack.shape[2:]), cparams=COMPRESSION)
    if seg is not None:
        write_seg(folder / f"{case}_seg.b2nd", seg)
    return folder / f"{case}.b2nd", None if seg is None else folder / f"{case}_seg.b2nd"


def _write_b2nd_float16(folder: Path, case: str, stack: np.ndarray,
                        seg: np.ndarray | None) -> tuple[Path, Path | None]:
    write_images(folder / f"{case}.b2nd", stack)
    if seg is not None:
        write_seg(folder / f"{case}_seg.b2nd", seg)
    return folder / f"{case}.b2nd", None if seg is None else folder / f"{case}_seg.b2nd"


def _b2nd_float16_writer(cparams: dict, zeroed_mantissa_bits: int = 0) -> Callable:
    """A writer of format 2's float16 values under other blosc2 ``cparams``, optionally with the lowest mantissa
    bits zeroed (lossy)."""
    keep = np.uint16(0xFFFF ^ ((1 << zeroed_mantissa_bits) - 1))

    def write(folder: Path, case: str, stack: np.ndarray, seg: np.ndarray | None) -> tuple[Path, Path | None]:
        values = np.ascontiguousarray(stack, dtype=np.float16)
        values = (values.view(np.uint16) & keep).view(np.float16)
        blosc2.asarray(values, urlpath=str(folder / f"{case}.b2nd"), mode="w",
                       chunks=(stack.shape[0], 1, *stack.shape[2:]), cparams={**COMPRESSION, **cparams})
        if seg is not None:
            write_seg(folder / f"{case}_seg.b2nd", seg)
        return folder / f"{case}.b2nd", None if seg is None else folder / f"{case}_seg.b2nd"

    return write


# name: (writer, exam class that reads it)
FORMATS: dict[str, tuple[Callable, type[CachedExam]]] = {
    "npy float32 (format 1)": (_write_npy, NpyExam),
    "b2nd float32": (_write_b2nd_float32, CachedExam),
    "b2nd float16 (format 2)": (_write_b2nd_float16, CachedExam),
    "b2nd float16, ZSTD clevel 9": (_b2nd_float16_writer({"clevel": 9}), CachedExam),
    "b2nd float16, BITSHUFFLE": (_b2nd_float16_writer({"filters": [blosc2.Filter.BITSHUFFLE]}), CachedExam),
    "b2nd float16, SHUFFLE + BYTEDELTA": (
        _b2nd_float16_writer({"filters": [blosc2.Filter.SHUFFLE, blosc2.Filter.BYTEDELTA]}), CachedExam),
    "b2nd float16, 3 mantissa bits zeroed (lossy)": (_b2nd_float16_writer({}, zeroed_mantissa_bits=3), CachedExam),
}


def preprocess(dataset: PlannedDataset, exam) -> tuple[np.ndarray, np.ndarray | None]:
    """(images (1 + K, z, y, x) float32, seg (z, y, x) or None) of one exam, as ``build_cache`` computes them."""
    plans, configuration = dataset.plans_manager, dataset.configuration_manager
    images, properties = read_exam(exam, plans)
    stack, _, preprocessing = preprocess_like_precontrast(images, properties["spacing"], plans, configuration)
    if exam.label_file is None:
        return stack, None
    label, _ = plans.image_reader_writer_class().read_seg([str(exam.label_file)])
    return stack, mask_to_preprocessed_space(label, preprocessing, plans, configuration, list(stack.shape[1:]))


def nnunet_bytes_per_case(dataset: PlannedDataset) -> tuple[float, int]:
    """(mean bytes of nnU-Net's own preprocessed case: data, seg and properties files; number of cases)."""
    folder = dataset.preprocessed_folder / dataset.configuration_manager.data_identifier
    cases = sorted(path.name[:-len(".pkl")] for path in folder.glob("*.pkl"))
    sizes = [sum(path.stat().st_size for name in (f"{case}.b2nd", f"{case}_seg.b2nd", f"{case}.pkl")
                 if (path := folder / name).is_file()) for case in cases]
    return float(np.mean(sizes)) if sizes else float("nan"), len(cases)


def sampler_speed(exams: list[CachedExam], patch_size: tuple[int, int], seconds: float) -> float:
    """Slices per second of ``PatchSampler.sample`` (one third foreground patches) over ``seconds``."""
    sampler = PatchSampler(exams, patch_size, 1 / 3, np.random.default_rng(0))
    for _ in range(20):  # warm-up: files opened, pages touched
        sampler.sample()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sampler.sample()
        count += 1
    return count / (time.perf_counter() - start)


def run(folder: Path, configuration: str, max_exams: int | None, seconds: float, work: Path) -> list[dict]:
    """Per format: {format, disk per exam (bytes), build seconds per exam, slices per second}."""
    os.environ["nnUNet_preprocessed"] = str(folder.parent)
    dataset = PlannedDataset.load(folder.name, configuration)
    exams = find_pretraining_exams(dataset.raw_folder)[:max_exams]
    patch_size = tuple(dataset.configuration_manager.patch_size[-2:])
    outputs = {name: work / f"format{index}" for index, name in enumerate(FORMATS)}
    for out in outputs.values():
        out.mkdir(parents=True)
    preprocessing, writing = [], {name: [] for name in FORMATS}
    cached: dict[str, list[CachedExam]] = {name: [] for name in FORMATS}
    for exam in exams:
        start = time.perf_counter()
        stack, seg = preprocess(dataset, exam)
        tumour, enhancement = slice_facts(stack, seg)
        preprocessing.append(time.perf_counter() - start)
        for name, (write, exam_class) in FORMATS.items():
            start = time.perf_counter()
            images_file, seg_file = write(outputs[name], exam.case_id, stack, seg)
            writing[name].append(time.perf_counter() - start)
            cached[name].append(exam_class(exam.case_id, exam.source, images_file, seg_file, tuple(stack.shape),
                                           tuple(tumour), tuple(enhancement)))
    rows = []
    for name in FORMATS:
        disk = sum(path.stat().st_size for path in outputs[name].iterdir()) / len(exams)
        rows.append({"format": name, "disk": disk, "build": float(np.mean(preprocessing) + np.mean(writing[name])),
                     "write": float(np.mean(writing[name])),
                     "speed": sampler_speed(cached[name], patch_size, seconds)})
    return rows


def report(rows: list[dict], nnunet: tuple[float, int], folder: Path, configuration: str, exams: int,
           core: int) -> str:
    """The markdown table, with the command, the machine and nnU-Net's own size per case."""
    nnunet_bytes, nnunet_cases = nnunet
    lines = [f"# DM cache formats on {folder.name} {configuration} ({exams} exams)", "",
             f"`{' '.join(['python', *sys.argv])}`, {utc_now()}", "",
             f"Machine: {machine_description()}; sampler pinned to core {core}.", "",
             "| format | disk per exam | vs nnU-Net's own | build per exam (write) | sampler slices/s |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['format']} | {row['disk'] / 1e3:.0f} KB | {row['disk'] / nnunet_bytes:.2f}x | "
                     f"{row['build']:.3f} s ({row['write']:.3f} s) | {row['speed']:.0f} |")
    lines += ["", f"nnU-Net's own `{configuration}` data: {nnunet_bytes / 1e3:.0f} KB per case (b2nd data + seg + "
              f"pkl, mean of {nnunet_cases} labelled cases; the DM cache also holds the unlabelled exams and the K "
              f"post-contrast phases)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="nnUNet_preprocessed/DatasetXXX_Name (read only)")
    parser.add_argument("-c", "--configuration", default="2d")
    parser.add_argument("--max-exams", type=int, help="the first N pretraining exams only (default all)")
    parser.add_argument("--seconds", type=float, default=5.0, help="sampler timing per format (default 5)")
    parser.add_argument("--work", type=Path, help="where the caches are written (default a temporary folder)")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    blosc2.set_nthreads(1)
    work = Path(tempfile.mkdtemp(prefix="cache_format_", dir=args.work))
    try:
        rows = run(args.folder.resolve(), args.configuration, args.max_exams, args.seconds, work)
        dataset = PlannedDataset.load(args.folder.resolve().name, args.configuration)
        exams = len(find_pretraining_exams(dataset.raw_folder)[:args.max_exams])
        text = report(rows, nnunet_bytes_per_case(dataset), args.folder, args.configuration, exams, core)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
