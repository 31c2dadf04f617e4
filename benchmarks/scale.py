"""Cost against the number of exams (issue 34, point 3): time, peak memory and disk of every command of the pipeline
on the phantom at several dataset sizes, with a projection to MAMA-MIA and the issue's goal checks.

    taskset -c 1 env OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/scale.py --workdir /work/studies/scale

Design, fixed before any result:
- data: the phantom (``nnUNetv2_dkm_synthesize``, seed 0) at ``--shape`` (default 128x128x24, 3 phases: pre-contrast
  and 2 post-contrast) and ``--sizes`` exams in total (default 32, 128, 512), split by one rule: a quarter labelled
  training cases, an eighth labelled test cases, the rest unlabelled (N // 4, N // 8, N - N // 4 - N // 8); a size
  needs at least 5 labelled training cases (nnU-Net's 5-fold split) and 2 test cases, i.e. N >= 20.
- commands, in this order, each a subprocess under ``/usr/bin/time -v`` (wall time and "Maximum resident set size"),
  configuration ``2d``, on the CPU, one process each (``-np 1``, ``-npfp 1``, ``nnUNet_def_n_proc=1``):
  ``nnUNetv2_dkm_synthesize`` (the data, not a pipeline command: left out of the goal checks);
  ``nnUNetv2_plan_and_preprocess -c 2d``; the DM cache build alone (``build_cache(..., rebuild=True, processes=1)``,
  what ``nnUNetv2_dkm_pretrain`` does on first use); ``nnUNetv2_dkm_pretrain --preset small --steps S`` on that
  cache (its slices per second from the checkpoint's step times, from the end of step 1 to the last step);
  ``nnUNetv2_dkm_probe``, ``nnUNetv2_dkm_dm_quality`` and ``nnUNetv2_dkm_benchmark -f 0 --methods baselines`` (no
  network trained; nnU-Net's default 5-fold split written first, as ``nnUNetv2_train`` would) on the DM just made.
- exams per command: the cases it reads. plan_and_preprocess: the labelled training cases (nnU-Net preprocesses
  ``imagesTr`` only); the DM cache and pretraining: the pretraining exams (labelled training + unlabelled); the probe:
  the labelled training + test cases; dm_quality and the benchmark: the test cases.
- disk per exam: nnU-Net's own data folder (``nnUNet_preprocessed/DatasetXXX/nnUNetPlans_2d``: data, seg and pkl per
  case) and the DM cache (``dkm/2d/cache``, manifest included), each over the exams it holds.
- peak RSS: ``/usr/bin/time``'s figure, the largest single process of the command (a parent or a child it waited
  for), not the sum of its processes.
- goal checks (issue 34): DM cache disk per exam <= 1.5x nnU-Net's preprocessed data per case; cache build time per
  exam <= plan_and_preprocess time per exam; the peak RSS of every pipeline command within 20 % between the two
  largest sizes (by default 128 and 512 exams).
- projection to MAMA-MIA (1,506 exams of about 512x512x160 voxels, 3 phases: as many as the phantom, so the cache's
  channels do not change): the largest size's disk per exam and the seconds per extra exam between the two largest
  sizes (fixed start-up left out), each times the ratio of voxels per exam, times 1,506 exams.

Each size runs in ``<workdir>/n_<N>/`` (its own ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results``);
every finished command writes its measurement there atomically (``steps/<command>.json``) and a finished size its
``results.json``, so a stopped run resumes where it stopped (an unfinished command is run again from the start).
A finished size also writes its study record, ``benchmarks/records/scale/n_<N>.json`` (its measurements and the
machine that made them): a size with a record is not run again, so the study resumes on a fresh clone on another
machine, size by size, and the report rebuilds from the records alone (its notes name each size's machine where
they differ).
Writes ``results_scale.md`` and ``results_scale.png`` into ``--output`` (default ``benchmarks/``). ``--commands``
measures a subset (with the commands it needs before it), e.g. a command again after a change, into its own
``--records`` folder and report ``--name``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from nnunet_dkm.atomic import write_atomically  # noqa: E402
from nnunet_dkm.reporting import ReportHeader, machine_description, markdown_table  # noqa: E402

DATASET_ID = 971
CONFIGURATION = "2d"
PLANS = "nnUNetPlans"
TIME = "/usr/bin/time"
RAM_TOLERANCE = 0.20
CACHE_DISK_LIMIT = 1.5
MAMA_MIA_EXAMS = 1506
MAMA_MIA_SHAPE = (512, 512, 160)
COMMANDS = ("synthesize", "plan_and_preprocess", "dm_cache", "pretrain", "probe", "dm_quality", "benchmark")
PIPELINE = COMMANDS[1:]  # the commands the goal checks cover (synthesize makes the data)
BENCHMARKS = Path(__file__).resolve().parent
RECORDS = BENCHMARKS / "records" / "scale"


@dataclass(frozen=True)
class Split:
    """The phantom's exams of one size: labelled training, labelled test and unlabelled."""

    train: int
    test: int
    unlabelled: int

    @property
    def total(self) -> int:
        return self.train + self.test + self.unlabelled


def split_rule(exams: int) -> Split:
    """A quarter labelled training cases, an eighth test cases, the rest unlabelled; refuses a size too small for
    nnU-Net's 5-fold split (5 labelled training cases) or the probe's test split (2)."""
    train, test = exams // 4, exams // 8
    if train < 5 or test < 2:
        raise ValueError(f"{exams} exams give {train} labelled training and {test} test cases; at least 5 and 2 "
                         f"are needed (20 exams or more)")
    return Split(train, test, exams - train - test)


def parse_elapsed(text: str) -> float:
    """Seconds of GNU time's elapsed field, ``h:mm:ss`` or ``m:ss.ss``."""
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = 60 * seconds + float(part)
    return seconds


def parse_time_v(text: str) -> dict[str, float | int]:
    """{wall_s, peak_rss_mib, exit_status} from the report of ``/usr/bin/time -v``."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.strip().rpartition(": ")
        if sep:
            fields[key] = value
    try:
        wall = parse_elapsed(fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"])
        rss_kib = int(fields["Maximum resident set size (kbytes)"])
    except KeyError as error:
        raise ValueError(f"no {error} line in this /usr/bin/time -v report:\n{text}") from None
    status = int(fields.get("Exit status", 0))
    return {"wall_s": wall, "peak_rss_mib": rss_kib / 1024, "exit_status": status}


def ram_growth(small_mib: float, large_mib: float) -> float:
    """Relative change of a peak RSS from the smaller to the larger dataset (0.25: 25 % more)."""
    return large_mib / small_mib - 1


def within_tolerance(growth: float, tolerance: float = RAM_TOLERANCE) -> bool:
    """Whether a relative change lies within +-``tolerance``."""
    return abs(growth) <= tolerance


def voxel_ratio(shape: Sequence[int], target: Sequence[int] = MAMA_MIA_SHAPE) -> float:
    """Voxels per exam of ``target`` over those of ``shape``."""
    ratio = 1.0
    for own, other in zip(shape, target, strict=True):
        ratio *= other / own
    return ratio


def project(per_exam: float, shape: Sequence[int], exams: int = MAMA_MIA_EXAMS,
            target: Sequence[int] = MAMA_MIA_SHAPE) -> float:
    """A per-exam figure measured at ``shape`` scaled by the voxel ratio to ``target`` and summed over ``exams``."""
    return per_exam * voxel_ratio(shape, target) * exams


def marginal_seconds(exams: Sequence[int], wall: Sequence[float]) -> float:
    """Seconds per extra exam between the two largest sizes (their wall-time difference over their exam difference,
    which leaves out a command's fixed start-up); with one size, its wall time per exam."""
    points = sorted(zip(exams, wall, strict=True))
    if len(points) == 1:
        return points[0][1] / points[0][0]
    (small, small_wall), (large, large_wall) = points[-2:]
    return (large_wall - small_wall) / (large - small)


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


class SizeRun:
    """One dataset size in its own folder: the commands, their measurements and their resumption."""

    def __init__(self, workdir: Path, exams: int, shape: Sequence[int], steps: int, max_minutes: float,
                 records: Path = RECORDS, commands: Sequence[str] = COMMANDS) -> None:
        self.exams, self.shape, self.steps, self.max_minutes = exams, tuple(shape), steps, max_minutes
        self.commands = tuple(name for name in COMMANDS if name in commands)  # pipeline order
        self.split = split_rule(exams)
        self.folder = workdir / f"n_{exams}"
        self.record_path = records / f"n_{exams}.json"
        self.raw, self.preprocessed, self.results = (self.folder / name for name in
                                                     ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))
        self.outputs = self.folder / "outputs"
        self.settings = {"exams": exams, "split": asdict(self.split), "shape": list(self.shape), "steps": steps,
                         "dataset_id": DATASET_ID, "configuration": CONFIGURATION,
                         **({} if self.commands == COMMANDS else {"commands": list(self.commands)})}

    def env(self) -> dict[str, str]:
        environment = {**os.environ, "nnUNet_raw": str(self.raw), "nnUNet_preprocessed": str(self.preprocessed),
                       "nnUNet_results": str(self.results), "nnUNet_def_n_proc": "1", "MPLBACKEND": "Agg"}
        environment.pop("nnUNet_dkm_checkpoint", None)
        return environment

    def dataset_folder(self, root: Path) -> Path:
        matches = sorted(root.glob(f"Dataset{DATASET_ID:03d}_*"))
        if len(matches) != 1:
            raise RuntimeError(f"expected one Dataset{DATASET_ID:03d}_* in {root}, found {len(matches)}")
        return matches[0]

    def data_identifier(self) -> str:
        plans = json.loads((self.dataset_folder(self.preprocessed) / f"{PLANS}.json").read_text())
        return plans["configurations"][CONFIGURATION]["data_identifier"]

    def command(self, name: str) -> list[str]:
        """The command line of one step."""
        d = str(DATASET_ID)
        split, out = self.split, self.outputs
        cache_code = ("from nnunet_dkm.preprocessing import PlannedDataset, build_cache; "
                      f"build_cache(PlannedDataset.load({DATASET_ID}, {CONFIGURATION!r}), rebuild=True, "
                      "progress=False, processes=1)")
        return {
            "synthesize": [tool("nnUNetv2_dkm_synthesize"), "-d", d, "--shape", *map(str, self.shape),
                           "--num-train", str(split.train), "--num-test", str(split.test),
                           "--num-unlabelled", str(split.unlabelled), "--seed", "0", "--overwrite"],
            "plan_and_preprocess": [tool("nnUNetv2_plan_and_preprocess"), "-d", d, "-c", CONFIGURATION, "-np", "1",
                                    "-npfp", "1"],
            "dm_cache": [sys.executable, "-c", cache_code],
            "pretrain": [tool("nnUNetv2_dkm_pretrain"), "-d", d, "-c", CONFIGURATION, "-np", "1", "-device", "cpu",
                         "--preset", "small", "--steps", str(self.steps), "--max-minutes", f"{self.max_minutes:g}",
                         "--overwrite"],
            "probe": [tool("nnUNetv2_dkm_probe"), "-d", d, "-c", CONFIGURATION, "-device", "cpu",
                      "-o", str(out / "probe")],
            "dm_quality": [tool("nnUNetv2_dkm_dm_quality"), "-d", d, "-c", CONFIGURATION, "-device", "cpu",
                           "-o", str(out / "dm_quality")],
            "benchmark": [tool("nnUNetv2_dkm_benchmark"), "-d", d, "-c", CONFIGURATION, "-f", "0",
                          "--methods", "baselines", "--allow-unfinished-dm", "-device", "cpu",
                          "-o", str(out / "benchmark")],
        }[name]

    def prepare(self, name: str) -> None:
        """Remove what an interrupted try of ``name`` left, and write what it reads that no earlier command makes."""
        if name in ("probe", "dm_quality", "benchmark"):
            shutil.rmtree(self.outputs / name, ignore_errors=True)
        if name == "benchmark":
            preprocessed = self.dataset_folder(self.preprocessed)
            if not (preprocessed / "splits_final.json").is_file():
                from nnunet_dkm.evaluation.benchmark.label_subsets import nnunet_default_split

                splits = nnunet_default_split(preprocessed, self.data_identifier())
                write_atomically(preprocessed / "splits_final.json",
                                 lambda path: path.write_text(json.dumps(splits, indent=2)))

    def facts(self, name: str) -> dict[str, float | int | None]:
        """The exams ``name`` reads, its disk per exam and, for pretraining, its slices per second."""
        split = self.split
        exams = {"synthesize": split.total, "plan_and_preprocess": split.train, "dm_cache": split.train +
                 split.unlabelled, "pretrain": split.train + split.unlabelled, "probe": split.train + split.test,
                 "dm_quality": split.test, "benchmark": split.test}[name]
        facts: dict[str, float | int | None] = {"command_exams": exams, "disk_bytes_per_exam": None,
                                                "slices_per_s": None}
        if name == "plan_and_preprocess":
            folder = self.dataset_folder(self.preprocessed) / self.data_identifier()
            facts["disk_bytes_per_exam"] = folder_bytes(folder) / len(list(folder.glob("*.pkl")))
        elif name == "dm_cache":
            folder = self.dataset_folder(self.preprocessed) / "dkm" / CONFIGURATION / "cache"
            cached = len(json.loads((folder / "manifest.json").read_text())["exams"])
            facts["disk_bytes_per_exam"] = folder_bytes(folder) / cached
        elif name == "pretrain":
            facts["slices_per_s"] = self.slices_per_second()
        return facts

    def slices_per_second(self) -> float:
        """Training slices per second from the checkpoint's step times, end of step 1 to the last step (the first
        step's warm-up and the final validation left out)."""
        from nnunet_dkm.diffusion.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(self.dataset_folder(self.preprocessed) / "dkm" / CONFIGURATION /
                                     "dm_checkpoint.pt")
        history = checkpoint.training_state["history"]
        steps, seconds = history["step"], history["seconds"]
        if len(steps) < 2:
            raise RuntimeError("pretraining stopped after fewer than 2 steps: no rate (raise --max-minutes)")
        batch = checkpoint.metadata["recipe"]["batch_size"]
        return batch * (steps[-1] - steps[0]) / (seconds[-1] - seconds[0])

    def measure(self, name: str) -> dict:
        """Run one command under ``/usr/bin/time -v``; its record (reused when the command finished before)."""
        record_path = self.folder / "steps" / f"{name}.json"
        if record_path.is_file():
            return json.loads(record_path.read_text())
        self.prepare(name)
        logs = self.folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        command = self.command(name)
        time_file = logs / f"{name}.time"
        print(f"[{self.exams} exams] {name}: {shlex.join(command)}", flush=True)
        with open(logs / f"{name}.log", "w") as log:
            result = subprocess.run([TIME, "-v", "-o", str(time_file), *command], stdout=log,
                                    stderr=subprocess.STDOUT, env=self.env(), cwd=self.folder)
        if result.returncode != 0:
            tail = "\n".join((logs / f"{name}.log").read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{name} failed (exit {result.returncode}); log {logs / f'{name}.log'}:\n{tail}")
        record = {"command": name, "exams": self.exams, "argv": command,
                  **parse_time_v(time_file.read_text()), **self.facts(name)}
        write_atomically(record_path, lambda path: path.write_text(json.dumps(record, indent=2)))
        print(f"[{self.exams} exams] {name}: {record['wall_s']:.1f} s, {record['peak_rss_mib']:.0f} MiB", flush=True)
        return record

    def run(self) -> dict:
        """The size's study record ({settings, machine, records}): read where it exists, else every command of this
        size run in order (``results.json`` once all are done) and the record written."""
        if self.record_path.is_file():
            record = json.loads(self.record_path.read_text())
            if record["settings"] != self.settings:
                raise RuntimeError(f"{self.record_path} was made with other settings; move it away to measure "
                                   f"this size with these")
            return record
        record = {"settings": self.settings, "machine": run_machine(), "records": self.measure_all()}
        write_atomically(self.record_path, lambda path: path.write_text(json.dumps(record, indent=2) + "\n"))
        return record

    def measure_all(self) -> list[dict]:
        """Every command of this size, in order; its measurements (``results.json`` once all are done)."""
        results_path = self.folder / "results.json"
        settings_path = self.folder / "settings.json"
        self.folder.mkdir(parents=True, exist_ok=True)
        if settings_path.is_file() and json.loads(settings_path.read_text()) != self.settings:
            raise RuntimeError(f"{self.folder} was made with other settings ({settings_path}); use another --workdir")
        write_atomically(settings_path, lambda path: path.write_text(json.dumps(self.settings, indent=2)))
        if results_path.is_file():
            return json.loads(results_path.read_text())["records"]
        records = [self.measure(name) for name in self.commands]
        write_atomically(results_path, lambda path: path.write_text(
            json.dumps({"settings": self.settings, "records": records}, indent=2)))
        return records


def run_machine() -> str:
    """This machine and how this process is pinned, as the report states it."""
    return (f"{machine_description()}; pinned to cores {sorted(os.sched_getaffinity(0))}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


def tool(name: str) -> str:
    """A console command: beside this Python interpreter (its virtualenv) where it is there, else on the PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is neither beside {sys.executable} nor on the PATH")
    return found


def frame_of(records: Sequence[Mapping]) -> pd.DataFrame:
    """One row per size and command, with seconds per exam."""
    frame = pd.DataFrame(list(records))
    frame["s_per_exam"] = frame["wall_s"] / frame["command_exams"]
    return frame


def goal_checks(frame: pd.DataFrame) -> list[str]:
    """The issue's three goals, one line each (per size for the first two, between the two largest sizes for RAM)."""
    lines = []
    rows = frame.set_index(["exams", "command"])
    sizes = sorted(frame["exams"].unique())
    for size in sizes if {"plan_and_preprocess", "dm_cache"} <= set(frame["command"]) else ():
        nnunet, cache = rows.loc[(size, "plan_and_preprocess")], rows.loc[(size, "dm_cache")]
        ratio = cache["disk_bytes_per_exam"] / nnunet["disk_bytes_per_exam"]
        lines.append(f"{'PASS' if ratio <= CACHE_DISK_LIMIT else 'FAIL'} {size} exams: DM cache disk per exam "
                     f"{cache['disk_bytes_per_exam'] / 2**20:.3f} MiB = {ratio:.2f}x nnU-Net's "
                     f"{nnunet['disk_bytes_per_exam'] / 2**20:.3f} MiB per case (goal <= {CACHE_DISK_LIMIT}x)")
        lines.append(f"{'PASS' if cache['s_per_exam'] <= nnunet['s_per_exam'] else 'FAIL'} {size} exams: DM cache "
                     f"build {cache['s_per_exam']:.2f} s per exam, nnU-Net's plan_and_preprocess "
                     f"{nnunet['s_per_exam']:.2f} s per exam (goal: cache <= nnU-Net)")
    if len(sizes) < 2:
        return [*lines, "n/a peak RAM: one size only, no growth to check"]
    small, large = sizes[-2], sizes[-1]
    for name in (name for name in PIPELINE if name in set(frame["command"])):
        growth = ram_growth(rows.loc[(small, name), "peak_rss_mib"], rows.loc[(large, name), "peak_rss_mib"])
        lines.append(f"{'PASS' if within_tolerance(growth) else 'FAIL'} peak RAM of {name}: "
                     f"{rows.loc[(small, name), 'peak_rss_mib']:.0f} MiB at {small} exams, "
                     f"{rows.loc[(large, name), 'peak_rss_mib']:.0f} MiB at {large} ({growth:+.0%}; goal within "
                     f"{RAM_TOLERANCE:.0%})")
    return lines


def projection(frame: pd.DataFrame, shape: Sequence[int]) -> list[list[str]]:
    """Disk and one-core build time of nnU-Net's data and the DM cache for MAMA-MIA: disk per exam of the largest
    size, seconds per extra exam between the two largest sizes (:func:`marginal_seconds`)."""
    rows = []
    for name, what in (("plan_and_preprocess", "nnU-Net's own 2d data (plan_and_preprocess)"),
                       ("dm_cache", "DM cache")):
        of_command = frame[frame["command"] == name].sort_values("exams")
        disk_per_exam = of_command["disk_bytes_per_exam"].iloc[-1]
        seconds_per_exam = marginal_seconds(list(of_command["command_exams"]), list(of_command["wall_s"]))
        build = (f"{project(seconds_per_exam, shape) / 3600:.1f} h" if seconds_per_exam > 0
                 else "n/a (the larger size was not slower: noise above the per-exam cost)")
        rows.append([what, f"{disk_per_exam / 2**20:.3f} MiB, {seconds_per_exam:.3f} s",
                     f"{project(disk_per_exam, shape) / 2**30:.1f} GiB", build])
    return rows


def report(frame: pd.DataFrame, header: ReportHeader, shape: Sequence[int], checks: Sequence[str]) -> str:
    """The markdown report: header, the table, the projection and the goal checks."""
    table = [[str(row.exams), row.command, str(row.command_exams), f"{row.wall_s:.1f}", f"{row.s_per_exam:.2f}",
              f"{row.peak_rss_mib:.0f}",
              "" if pd.isna(row.disk_bytes_per_exam) else f"{row.disk_bytes_per_exam / 2**20:.3f}",
              "" if pd.isna(row.slices_per_s) else f"{row.slices_per_s:.1f}"]
             for row in frame.itertuples()]
    sizes = sorted(int(n) for n in frame["exams"].unique())
    basis = (f"seconds per extra exam between the {sizes[-2]}- and {sizes[-1]}-exam runs (fixed start-up left out)"
             if len(sizes) > 1 else f"the {sizes[-1]}-exam run's seconds per exam (start-up included: an overestimate)")
    ratio = voxel_ratio(shape)
    target = "x".join(map(str, MAMA_MIA_SHAPE))
    lines = [*header.lines(), "", "## Cost per size and command", "",
             *markdown_table(table, ["exams", "command", "exams it reads", "wall s", "s per exam", "peak RSS MiB",
                                     "disk MiB per exam", "slices/s"]),
             "", f"## Projection to MAMA-MIA ({MAMA_MIA_EXAMS:,} exams of about {target} voxels, 3 phases)", "",
             f"Basis: disk per exam of the {sizes[-1]}-exam run and {basis}, each times the ratio of voxels per "
             f"exam ({target} / {'x'.join(map(str, shape))} = {ratio:.0f}x; the phantom has 3 phases too, so the "
             f"cache's channels stay), times {MAMA_MIA_EXAMS:,} exams in each folder; build time on one core. Disk "
             f"assumes the phantom's compression ratio, which real images need not reach; time assumes cost linear "
             f"in voxels.", "",
             *markdown_table(projection(frame, shape), ["what", "disk, seconds per exam (measured)", "disk",
                                                         "build, one core"]),
             "", "## Goal checks (issue 34)", "", *[f"- {line}" for line in checks]]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path: Path) -> None:
    """Peak RSS and seconds per exam of every command against the dataset's exams, log x."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rows in frame.groupby("command", sort=False):
        rows = rows.sort_values("exams")
        axes[0].plot(rows["exams"], rows["peak_rss_mib"], marker="o", label=name)
        axes[1].plot(rows["exams"], rows["s_per_exam"], marker="o", label=name)
    for axis, label in zip(axes, ("peak RSS (MiB)", "wall seconds per exam it reads"), strict=True):
        axis.set_xscale("log")
        axis.set_xlabel("exams in the dataset")
        axis.set_ylabel(label)
        axis.set_xticks(sorted(frame["exams"].unique()), labels=[str(n) for n in sorted(frame["exams"].unique())])
        axis.minorticks_off()
        axis.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="one subfolder per size (n_<N>), reused")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128, 512], help="exams in total per size")
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 128, 24], metavar=("X", "Y", "Z"),
                        help="phantom grid (default 128 128 24); the small preset's 64x64 patch needs 2d slices of at "
                             "least 64 pixels in one axis, e.g. 64 64 8 for a quick check (32 32 8 is refused)")
    parser.add_argument("--steps", type=int, default=50, help="pretraining steps (small preset, CPU)")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="pretraining cap only (default 30)")
    parser.add_argument("--output", type=Path, default=BENCHMARKS,
                        help="where results_scale.md and .png go (default benchmarks/)")
    parser.add_argument("--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS),
                        help="measure only these commands (run in pipeline order; a command needs those before it, "
                             "e.g. the probe needs synthesize, plan_and_preprocess, dm_cache and pretrain)")
    parser.add_argument("--records", type=Path, default=RECORDS, help="study records folder (default "
                        "benchmarks/records/scale)")
    parser.add_argument("--name", default="results_scale", help="report file name without suffix (.md and .png)")
    args = parser.parse_args()
    for size in args.sizes:
        split_rule(size)  # refuse a bad size before anything runs
    if not Path(TIME).is_file():
        raise SystemExit(f"{TIME} is missing (GNU time; apt-get install time)")
    sizes = {size: SizeRun(args.workdir.resolve(), size, args.shape, args.steps, args.max_minutes, args.records,
                           args.commands).run()
             for size in sorted(args.sizes)}
    frame = frame_of([record for size in sizes.values() for record in size["records"]])
    machines = {size["machine"] for size in sizes.values()}
    machine_notes = ([] if len(machines) == 1 else
                     ["Sizes measured on different machines (times compare only within a size): " +
                      "; ".join(f"{n} exams: {size['machine']}" for n, size in sizes.items())])
    checks = goal_checks(frame)
    splits = "; ".join(f"{n}: {split.train} + {split.test} + {split.unlabelled}"
                       for n, split in ((n, split_rule(n)) for n in sorted(args.sizes)))
    header = ReportHeader(
        f"Cost against the number of exams: phantom {'x'.join(map(str, args.shape))}, configuration {CONFIGURATION}",
        shlex.join(["python", "benchmarks/scale.py", *sys.argv[1:]]),
        machines.pop() if len(machines) == 1 else "several, see the notes",
        notes=[*machine_notes,
               f"Split rule: a quarter labelled training, an eighth test, the rest unlabelled (labelled training + "
               f"test + unlabelled exams: {splits}); seed 0; design and definitions in the script's docstring.",
               f"Pretraining: `--preset small --steps {args.steps}` on the CPU, slices/s between the end of step 1 "
               f"and the last step.",
               "Peak RSS: GNU time's maximum resident set size, the largest single process of the command.",
               "Exams it reads: plan_and_preprocess the labelled training cases; dm_cache and pretrain the labelled "
               "training + unlabelled exams; probe the labelled training + test cases; dm_quality and benchmark "
               "the test cases."])
    args.output.mkdir(parents=True, exist_ok=True)
    text = report(frame, header, args.shape, checks)
    (args.output / f"{args.name}.md").write_text(text + "\n")
    plot(frame, args.output / f"{args.name}.png")
    print(text)
    print("\n".join(["", "Goal checks:", *checks]))


if __name__ == "__main__":
    main()
