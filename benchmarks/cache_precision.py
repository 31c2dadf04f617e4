"""Does the DM learn as well from the float16 DM cache as from float32? (issue 34, point 1: the cache's precision
is chosen by the DM quality after a fixed number of steps, which must not change beyond noise.)

    taskset -c 0 env OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/cache_precision.py \
        --workdir /work/studies/cache_precision

Design, fixed before any result:
- data: the demo phantom (``nnUNetv2_dkm_synthesize -d 990 --shape 64 64 12``, seed 0), nnU-Net 2d plans.
- two caches of the same exams: format 2 as ``build_cache`` writes it (float16 blosc2), and the same files with the
  images stored as float32 (the float32 branch format 2 already has for exams beyond float16's range; the reader
  serves both). Each cache sits in its own copy of ``nnUNet_preprocessed``.
- per cache and seed (0 and 1): ``nnUNetv2_dkm_pretrain --preset small --steps 500 --seed S`` (the demo DM's recipe,
  cut to 500 of its 8000 steps, about 20 minutes on one core: at 500 steps that recipe's DM already synthesised
  tumours 35 % closer to the truth than the pre-contrast image, ``results_dm_recipe.md``; the seed draws the DM's
  held-out exams, its initial weights and its patches), then
  ``nnUNetv2_dkm_dm_quality --split selection`` on that DM's held-out training exams (no test case is read).
- measures: the synthetic post-contrast image's MAE and enhancement correlation inside the tumour, mean over the
  post-contrast phases; the training's seconds per step.
- verdict: float16 is within noise if, for both measures and both seeds, |float16 - float32| at the same seed is at
  most the seed-to-seed difference |seed 0 - seed 1| of the float32 DMs.

Every finished run writes its study record, ``benchmarks/records/cache_precision/<precision>_seed<S>.json``; a run
with a record is not run again, so the study resumes on a fresh clone. ``--seeds`` and ``--precisions`` share the
runs between processes (one per core, the same ``--workdir`` and records). Writes ``results_cache_precision.md``
into ``--output`` (default ``benchmarks/``), rebuilt from the records there are (the verdict waits for all four).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import blosc2
import pandas as pd

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.diffusion.checkpoint import load_checkpoint
from nnunet_dkm.evaluation.nnunet_runs import nnunet_command as tool
from nnunet_dkm.reporting import ReportHeader, format_number, machine_description, markdown_table

BENCHMARKS = Path(__file__).resolve().parent
RECORDS = BENCHMARKS / "records" / "cache_precision"
DATASET_ID = 990
PRECISIONS = ("float16", "float32")
SEEDS = (0, 1)
STEPS = 500
MEASURES = {"mae": "tumour MAE (lower is better)", "enhancement_corr": "tumour enhancement correlation"}
# builds the cache in this subprocess (processes=1), with format 2's writer swapped for a float32 one where asked
BUILD_CODE = """
import sys
import blosc2
import numpy as np
from nnunet_dkm.preprocessing import PlannedDataset, build_cache, dm_cache
from nnunet_dkm.preprocessing.cache_storage import COMPRESSION

def write_float32(path, stack):
    values = np.ascontiguousarray(stack, dtype=np.float32)
    blosc2.asarray(values, urlpath=str(path), mode="w", chunks=(stack.shape[0], 1, *stack.shape[2:]),
                   cparams=COMPRESSION)
    return values

if sys.argv[1] == "float32":
    dm_cache.write_images = write_float32
build_cache(PlannedDataset.load({dataset}, "2d"), rebuild=True, progress=False, processes=1)
"""


def run_machine() -> str:
    return (f"{machine_description()}; pinned to cores {sorted(os.sched_getaffinity(0))}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


class Study:
    """The phantom, one preprocessed copy per precision, and the runs (precision, seed) in ``workdir``."""

    def __init__(self, workdir: Path, steps: int, records: Path = RECORDS) -> None:
        self.workdir, self.steps, self.records = workdir, steps, records
        self.raw, self.preprocessed = workdir / "nnUNet_raw", workdir / "nnUNet_preprocessed"

    def env(self, precision: str | None = None) -> dict[str, str]:
        preprocessed = self.preprocessed if precision is None else self.workdir / precision / "nnUNet_preprocessed"
        environment = {**os.environ, "nnUNet_raw": str(self.raw), "nnUNet_preprocessed": str(preprocessed),
                       "nnUNet_results": str(self.workdir / "nnUNet_results"), "nnUNet_def_n_proc": "1",
                       "MPLBACKEND": "Agg"}
        environment.pop("nnUNet_dkm_checkpoint", None)
        return environment

    def stored_precisions(self, precision: str) -> set[str]:
        """The dtypes of the image files in ``precision``'s DM cache (a rebuilt cache would be float16 again)."""
        cache = self.workdir / precision / "nnUNet_preprocessed"
        return {str(blosc2.open(str(path), mode="r").dtype) for path in cache.glob("Dataset*/dkm/2d/cache/*.b2nd")
                if not path.name.endswith("_seg.b2nd")}

    def prepare(self) -> None:
        """The phantom, its 2d plans and one preprocessed copy with its cache per precision (each step skipped
        where its output is there)."""
        if not any(self.raw.glob(f"Dataset{DATASET_ID}_*")):
            subprocess.run([tool("nnUNetv2_dkm_synthesize"), "-d", str(DATASET_ID), "--shape", "64", "64", "12"],
                           env=self.env(), check=True)
        if not any(self.preprocessed.glob(f"Dataset{DATASET_ID}_*/nnUNetPlans.json")):
            subprocess.run([tool("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1",
                            "-npfp", "1"], env=self.env(), check=True)
        for precision in PRECISIONS:
            copy = self.workdir / precision / "nnUNet_preprocessed"
            if (copy / "built").is_file():
                continue
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(self.preprocessed, copy)
            subprocess.run([sys.executable, "-c", BUILD_CODE.format(dataset=DATASET_ID), precision],
                           env=self.env(precision), check=True)
            stored = self.stored_precisions(precision)
            if stored != {precision}:
                raise RuntimeError(f"{copy}: the cache holds {stored}, not {precision}")
            (copy / "built").touch()

    def run(self, precision: str, seed: int) -> dict:
        """The record of one (precision, seed): read where it exists, else pretrain, score and write it."""
        record_path = self.records / f"{precision}_seed{seed}.json"
        settings = {"precision": precision, "seed": seed, "steps": self.steps, "dataset_id": DATASET_ID,
                    "configuration": "2d", "phantom_shape": [64, 64, 12], "preset": "small", "split": "selection"}
        if record_path.is_file():
            record = json.loads(record_path.read_text())
            if record["settings"] != settings:
                raise RuntimeError(f"{record_path} was made with other settings; move it away to run these")
            return record
        folder = self.workdir / precision / f"seed{seed}"
        checkpoint = folder / "dm_checkpoint.pt"
        pretrain = [tool("nnUNetv2_dkm_pretrain"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-device", "cpu",
                    "--preset", "small", "--steps", str(self.steps), "--seed", str(seed), "--overwrite"]
        subprocess.run(pretrain, env={**self.env(precision), "nnUNet_dkm_checkpoint": str(checkpoint)}, check=True)
        stored = self.stored_precisions(precision)
        if stored != {precision}:
            raise RuntimeError(f"pretraining rebuilt the {precision} cache ({stored})")
        quality = folder / "quality"
        shutil.rmtree(quality, ignore_errors=True)
        subprocess.run([tool("nnUNetv2_dkm_dm_quality"), "-d", str(DATASET_ID), "-c", "2d", "--split", "selection",
                        "-chk", str(checkpoint), "-device", "cpu", "-o", str(quality)],
                       env=self.env(precision), check=True)
        metadata = load_checkpoint(checkpoint).metadata
        table = pd.read_csv(quality / "results.csv")
        record = {"settings": settings, "machine": run_machine(),
                  "training_seconds": metadata.get("training_seconds"),
                  "validation_exams": metadata.get("validation_exams"),
                  "rows": table.to_dict(orient="records")}
        write_atomically(record_path, lambda path: path.write_text(json.dumps(record, indent=2) + "\n"))
        return record


def measures_of(record: dict) -> dict[str, float]:
    """The synthetic image's tumour measures of one run, mean over the post-contrast phases."""
    rows = pd.DataFrame(record["rows"])
    tumour = rows[(rows["estimate"] == "synthetic") & (rows["region"] == "tumour")]
    return {name: float(tumour[name].mean()) for name in MEASURES}


def verdict(frame: pd.DataFrame) -> list[str]:
    """The fixed rule: per measure, |float16 - float32| at each seed against |seed 0 - seed 1| of float32."""
    lines = []
    for name, label in MEASURES.items():
        values = frame.pivot(index="seed", columns="precision", values=name)
        if values.shape != (len(SEEDS), len(PRECISIONS)) or values.isna().any().any():
            lines.append(f"{label}: not every run is recorded yet")
            continue
        noise = abs(values.loc[SEEDS[0], "float32"] - values.loc[SEEDS[1], "float32"])
        gaps = (values["float16"] - values["float32"]).abs()
        within = bool((gaps <= noise).all())
        lines.append(f"{label}: |float16 - float32| = {', '.join(format_number(g, 4) for g in gaps)} at seeds "
                     f"{', '.join(map(str, gaps.index))}; seed-to-seed (float32) {format_number(noise, 4)}: "
                     f"{'within noise' if within else 'beyond noise'}")
    return lines


def report(records: list[dict], command: str) -> str:
    frame = pd.DataFrame([{**record["settings"], **measures_of(record),
                           "s_per_step": (record["training_seconds"] or float("nan")) / record["settings"]["steps"]}
                          for record in records])
    table = [[row.precision, str(row.seed), format_number(row.mae, 4), format_number(row.enhancement_corr, 4),
              format_number(row.s_per_step, 2)] for row in frame.sort_values(["seed", "precision"]).itertuples()]
    machines = sorted({record["machine"] for record in records})
    header = ReportHeader(
        "Cache precision: the DM after a fixed number of steps, from a float16 and from a float32 cache",
        command, machines[0] if len(machines) == 1 else "several: " + " | ".join(machines),
        notes=[f"Demo phantom 64x64x12, 2d; `nnUNetv2_dkm_pretrain --preset small --steps "
               f"{records[0]['settings']['steps']}` per cache and seed, "
               "scored by `nnUNetv2_dkm_dm_quality --split selection` (the DM's held-out training exams). Design and "
               "verdict rule fixed in the script's docstring before any run.",
               "Seconds per step depend on the load beside each run (see the machine line); compare them loosely."])
    lines = [*header.lines(), "", "## Synthetic post-contrast inside the tumour (mean over phases)", "",
             *markdown_table(table, ["cache", "seed", "MAE", "enhancement corr", "s per step"]),
             "", "## Verdict", "", *[f"- {line}" for line in verdict(frame)]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="phantom, caches and runs (reused)")
    parser.add_argument("--steps", type=int, default=STEPS,
                        help=f"pretraining steps (default {STEPS}, the study's; fewer only with --records elsewhere)")
    parser.add_argument("--records", type=Path, default=RECORDS, help="study records folder")
    parser.add_argument("--seeds", type=int, nargs="+", choices=SEEDS, default=list(SEEDS),
                        help="run only these seeds' runs (e.g. one per core; the report needs every run's record)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="run only these precisions' runs")
    parser.add_argument("--output", type=Path, default=BENCHMARKS, help="where results_cache_precision.md goes")
    args = parser.parse_args()
    study = Study(args.workdir.resolve(), args.steps, args.records)
    study.workdir.mkdir(parents=True, exist_ok=True)
    chosen = [(precision, seed) for seed in args.seeds for precision in args.precisions]
    if any(not (args.records / f"{p}_seed{s}.json").is_file() for p, s in chosen):
        study.prepare()
    for precision, seed in chosen:
        study.run(precision, seed)
    records = [json.loads(path.read_text()) for path in sorted(args.records.glob("*_seed*.json"))]
    command = shlex.join(["python", "benchmarks/cache_precision.py", *sys.argv[1:]])
    output = args.output / "results_cache_precision.md"
    write_atomically(output, lambda path: path.write_text(report(records, command)))
    print(output.read_text())


if __name__ == "__main__":
    main()
