"""Benchmark of the synthetic phantom: generation time and calibration against the real case.

Synthesizes the ``demo`` preset (all splits) into a temporary nnU-Net raw folder on one CPU
thread, times it, times exams of the ``nact`` preset, measures the statistics of every
labelled demo exam (and of eight nact exams) beside the targets from the real Breast-MRI-NACT-Pilot case, and writes
``results_phantom.md`` and ``phantom_montage.png`` next to this script (or to ``--output-dir``)::

    python benchmarks/phantom_statistics.py [--seed 0] [--output-dir benchmarks]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, set before numpy
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

from dataset_conversion.phantom.case import generate_case  # noqa: E402
from dataset_conversion.phantom.parameters import PRESETS, preset_parameters  # noqa: E402
from dataset_conversion.phantom.stats import format_table, measure_dataset, summarise, write_montage  # noqa: E402
from dataset_conversion.phantom.synthesize import synthesize_dataset  # noqa: E402
from nnunet_dkm.reporting import ReportHeader, machine_description, markdown_table  # noqa: E402

DEMO_ID, NACT_ID = 990, 991
NACT_EXAMS = 8  # enough for a median; the full nact preset (160 exams) takes about 15 minutes


def run(seed: int, output_dir: Path) -> str:
    """Do the benchmark in a temporary raw folder; returns the Markdown report (also written to disk)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    demo = PRESETS["demo"]
    with tempfile.TemporaryDirectory(prefix="phantom_benchmark_") as raw:
        start = time.perf_counter()
        synthesize_dataset(DEMO_ID, preset="demo", raw_folder=raw, seed=seed)
        demo_seconds = time.perf_counter() - start

        start = time.perf_counter()
        generate_case(preset_parameters("nact"), seed, "Tr", 0)
        nact_generate_seconds = time.perf_counter() - start
        start = time.perf_counter()
        synthesize_dataset(NACT_ID, preset="nact", raw_folder=raw, seed=seed, num_train=NACT_EXAMS, num_test=0,
                           num_unlabelled=0)
        nact_write_seconds = time.perf_counter() - start

        demo_rows = summarise(measure_dataset(DEMO_ID, raw))
        nact_rows = summarise(measure_dataset(NACT_ID, raw))
        montage = write_montage(DEMO_ID, output_dir / "phantom_montage.png", raw, num_cases=4)

    num_demo_exams = demo.num_train + demo.num_test + demo.num_unlabelled
    x, y, z = demo.phantom.shape_xyz
    report = "\n".join([
        *ReportHeader("Synthetic phantom: generation time and calibration",
                      f"python benchmarks/phantom_statistics.py --seed {seed}",
                      f"{machine_description()}, {os.environ['OMP_NUM_THREADS']} thread; "
                      + ", ".join(f"{name} {version(name)}" for name in ("numpy", "scipy", "dcmri", "SimpleITK"))
                      ).lines(),
        "",
        "## Generation time (one CPU thread, including writing compressed NIfTI)",
        "",
        *markdown_table([
            (f"demo preset, all splits: {demo.num_train} train + {demo.num_test} test + {demo.num_unlabelled} "
             f"unlabelled exams of {x}x{y}x{z} voxels, 3 phases",
             f"{demo_seconds:.1f} s ({demo_seconds / num_demo_exams:.2f} s per exam)"),
            ("one nact exam (256x256x60), generation only", f"{nact_generate_seconds:.1f} s"),
            (f"{NACT_EXAMS} nact exams, generated and written as a dataset",
             f"{nact_write_seconds:.1f} s ({nact_write_seconds / NACT_EXAMS:.1f} s per exam)")], ["what", "time"]),
        "",
        f"## Demo preset: statistics of the {demo.num_train + demo.num_test} labelled exams (seed {seed})",
        "",
        "Median and interquartile range over exams; targets are the figures measured on the real",
        "Breast-MRI-NACT-Pilot case. Definitions: `dataset_conversion/phantom/stats.py`.",
        "",
        format_table(demo_rows, markdown=True),
        "",
        f"## nact preset: the same statistics on its first {NACT_EXAMS} training exams",
        "",
        format_table(nact_rows, markdown=True),
        "",
        f"## Montage: [{montage.name}]({montage.name})",
        "",
        "Four demo training exams at the slice with the most tumour: pre-contrast, both post-contrast",
        "phases (one grey window per row), early percent enhancement and the label on the pre-contrast image.",
        "",
    ])
    (output_dir / "results_phantom.md").write_text(report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    print(run(args.seed, args.output_dir))


if __name__ == "__main__":
    main()
