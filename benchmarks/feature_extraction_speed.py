"""Speed and peak memory of kinetic feature extraction from a frozen DM, per 2D patch batch.

Times ``KineticFeatureExtractor`` on random 128x128 patches (random DM weights: speed does not depend on them)
for the extraction modes (A, B, C with K DDIM steps), decoder vs encoder features, f3+f4 vs f1..f4, fp32 vs
bfloat16 autocast vs channels-last, and the truncated walk vs the full forward (the same extractor with truncation
disabled). The "small" preset runs at batch 4 and 12, the "paper" preset at batch 1 with fewer rows and repeats.
The whole run takes about 2 minutes on an idle 2-core CPU and under 5 minutes on a busy one.

Peak memory is the growth of the process's peak resident set size (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` after returning freed heap memory with ``malloc_trim``) while a configuration runs; on
CUDA it is ``torch.cuda.max_memory_allocated``.

Usage::

    python benchmarks/feature_extraction_speed.py                      # writes the results markdown next to it
    python benchmarks/feature_extraction_speed.py --repeats 5 --device cuda --output /tmp/gpu.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from unittest import mock

import torch

from nnunet_dkm.diffusion import features as features_module
from nnunet_dkm.diffusion.config import InputScaling, KineticFeatureConfig
from nnunet_dkm.diffusion.features import KineticFeatureExtractor
from nnunet_dkm.diffusion.presets import preset_network
from nnunet_dkm.reporting import PeakMemory, ReportHeader, machine_description, markdown_table

DEFAULT_OUTPUT = Path(__file__).with_name("results_feature_extraction_speed.md")
PATCH_SIZE = 128


@dataclass(frozen=True)
class Case:
    """One benchmarked configuration."""

    preset: str
    batch: int
    mode: str = "A"
    source: str = "decoder"
    levels: tuple[int, ...] = (3, 4)
    precision: str = "fp32"  # fp32 | bf16 | channels_last | bf16+channels_last
    truncated: bool = True

    @property
    def feature_config(self) -> KineticFeatureConfig:
        return KineticFeatureConfig(mode=self.mode, source=self.source, levels=self.levels, ddim_steps=5,
                                    autocast="bf16" in self.precision, channels_last="channels_last" in self.precision)

    def describe(self) -> list[str]:
        mode = "C (K=5)" if self.mode == "C" else self.mode
        levels = "f" + "+f".join(str(level) for level in self.levels)
        return [self.preset, str(self.batch), mode, self.source, levels, self.precision,
                "truncated" if self.truncated else "full"]


@dataclass
class Measurement:
    """Timed calls (seconds) and the peak memory growth of one case."""

    case: Case
    seconds: list[float]
    peak_mib: float | None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)


def cases_for(preset: str, batch: int) -> list[Case]:
    """One-factor-at-a-time variations around the default (A, decoder, f3+f4, fp32, truncated).

    The larger settings leave out the rows that cost most and add least (a 5-step mode C per precision, f1..f4
    which is a full forward minus the output head), to keep the whole run within minutes on a 2-core CPU.
    """
    every, small, small_batch4 = "every setting", "small preset", "small preset, batch 4"
    rows = [
        (Case(preset, batch), every),
        (Case(preset, batch, truncated=False), every),
        (Case(preset, batch, levels=(1, 2, 3, 4)), small),
        (Case(preset, batch, source="encoder"), every),
        (Case(preset, batch, source="encoder", levels=(1, 2, 3, 4)), small_batch4),
        (Case(preset, batch, precision="bf16"), every),
        (Case(preset, batch, precision="bf16", truncated=False), small_batch4),
        (Case(preset, batch, precision="channels_last"), small),
        (Case(preset, batch, precision="bf16+channels_last"), small),
        (Case(preset, batch, mode="B"), small),
        (Case(preset, batch, mode="C"), every),
        (Case(preset, batch, mode="C", precision="bf16"), small_batch4),
    ]
    included = {every}
    if preset == "small":
        included |= {small, small_batch4} if batch <= 4 else {small}
    return [case for case, setting in rows if setting in included]


class PreparedCase:
    """An extractor and its input, ready to be called repeatedly."""

    def __init__(self, case: Case, device: torch.device) -> None:
        self.case, self.device = case, device
        config = preset_network(case.preset)
        torch.manual_seed(0)
        self.extractor = KineticFeatureExtractor(config, InputScaling(scale=0.5, offset=0.0), case.feature_config)
        self.extractor.to(device)
        patches = torch.randn(case.batch, 1, PATCH_SIZE, PATCH_SIZE, generator=torch.Generator().manual_seed(0))
        self.patches = patches.to(device)

    def __call__(self) -> float:
        """Seconds for one feature extraction of the batch (the full forward where truncation is off)."""
        walk = features_module.walk_unet
        if not self.case.truncated:
            walk = partial(features_module.walk_unet, run_output_head=True)
        with mock.patch.object(features_module, "walk_unet", walk):
            start = time.perf_counter()
            self.extractor(self.patches)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return time.perf_counter() - start


def measure_all(
    cases: list[tuple[Case, int]], device: torch.device, time_budget_s: float, log: Callable[[str], None]
) -> list[Measurement]:
    """Warm up every case once (measuring its peak memory), then time them in interleaved rounds (own loop, not
    torch.utils.benchmark.Timer, which times one statement at a time: interleaving spread other jobs' load over every
    row, median / best <= 1.28 in ``results_feature_extraction_speed.md``).

    Rounds interleave the cases so that load from other jobs on a shared machine spreads over all of them instead
    of biasing whichever case ran while it peaked. A case takes part in as many rounds as its repeat count; no new
    round starts once ``time_budget_s`` has passed (every case gets at least one timed call).
    """
    memory = PeakMemory(str(device))
    prepared, peaks = [], []
    for index, (case, _) in enumerate(cases, start=1):
        runner = PreparedCase(case, device)
        memory.start()
        runner()  # warm-up: one-off kernel selection and allocations
        peaks.append(memory.peak_mib())
        prepared.append(runner)
        log(f"warm-up [{index}/{len(cases)}] {' / '.join(case.describe())}")
    started = time.perf_counter()
    seconds: list[list[float]] = [[] for _ in cases]
    for round_index in range(max(repeats for _, repeats in cases)):
        if round_index > 0 and time.perf_counter() - started > time_budget_s:
            log(f"time budget reached after {round_index} rounds")
            break
        for position, runner in enumerate(prepared):
            if round_index < cases[position][1]:
                seconds[position].append(runner())
        log(f"round {round_index + 1} done, {time.perf_counter() - started:.0f} s")
    return [Measurement(case, times, peak) for (case, _), times, peak in zip(cases, seconds, peaks, strict=True)]


class OtherJobsMeter:
    """CPU time used by other processes while the benchmark runs, from ``/proc/stat`` minus this process's time."""

    def __init__(self) -> None:
        self.available = Path("/proc/stat").is_file()
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        """(machine busy CPU seconds, this process's CPU seconds, wall seconds)."""
        own = os.times()
        busy = 0.0
        if self.available:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(value) for value in stat.readline().split()[1:]]
            # user, nice, system, idle, iowait, irq, softirq, steal: everything but idle and iowait is busy
            busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        return busy, own.user + own.system, time.perf_counter()

    def share_of_machine(self) -> float | None:
        """Fraction of all cores' time that other processes used since construction."""
        if not self.available:
            return None
        busy, own, wall = (end - start for end, start in zip(self._sample(), self._start, strict=True))
        return max(0.0, busy - own) / (wall * (os.cpu_count() or 1))


def results_table(measurements: list[Measurement]) -> list[str]:
    full_reference = {
        (m.case.preset, m.case.batch, m.case.precision): m.best
        for m in measurements
        if not m.case.truncated and m.case.mode == "A"
    }
    header = ["preset", "batch", "mode", "features", "levels", "precision", "forward", "s / batch best",
              "s / batch median", "ms / slice (best)", "% of full fp32 forward (best)", "peak memory MiB", "runs"]
    rows = []
    for m in measurements:
        reference = full_reference.get((m.case.preset, m.case.batch, "fp32"))
        share = f"{100 * m.best / reference:.0f} %" if reference else "-"
        peak = f"{m.peak_mib:.0f}" if m.peak_mib is not None else "n/a"
        rows.append(dict(zip(header, m.case.describe() + [f"{m.best:.3f}", f"{m.median:.3f}",
                                                          f"{1000 * m.best / m.case.batch:.0f}", share, peak,
                                                          str(len(m.seconds))], strict=True)))
    return markdown_table(rows)


def summary(measurements: list[Measurement]) -> list[str]:
    """Ratios of best times computed from the table, for the default's alternatives."""
    by_case = {m.case: m.best for m in measurements}
    lines = []
    for preset, batch in sorted({(m.case.preset, m.case.batch) for m in measurements}):
        base = by_case.get(Case(preset, batch))
        if base is None:
            continue

        def ratio(other: Case, base: float = base) -> str:
            value = by_case.get(other)
            return f"{value / base:.2f}x" if value is not None else "not run"

        lines.append(
            f"- {preset}, batch {batch}: default (A, decoder f3+f4, fp32, truncated) {base:.3f} s; relative to it: "
            f"full forward {ratio(Case(preset, batch, truncated=False))}, "
            f"f1..f4 {ratio(Case(preset, batch, levels=(1, 2, 3, 4)))}, "
            f"encoder {ratio(Case(preset, batch, source='encoder'))}, "
            f"bf16 {ratio(Case(preset, batch, precision='bf16'))}, "
            f"channels_last {ratio(Case(preset, batch, precision='channels_last'))}, "
            f"mode C (K=5) {ratio(Case(preset, batch, mode='C'))}"
        )
    return lines


def run_benchmark(output: Path, repeats: int, paper_repeats: int, device: torch.device, time_budget_s: float,
                  log: Callable[[str], None]) -> Path:
    """Measure every case and write the markdown report to ``output``."""
    notes = ["load average (1, 5, 15 min) at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())]
    other_jobs = OtherJobsMeter()
    plan = [(case, repeats) for batch in (4, 12) for case in cases_for("small", batch)]
    plan += [(case, paper_repeats) for case in cases_for("paper", 1)]
    started = time.perf_counter()
    measurements = measure_all(plan, device, time_budget_s, log)
    total = time.perf_counter() - started

    notes.append("load average at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    share = other_jobs.share_of_machine()
    if share is not None:
        notes.append(f"CPU time used by other processes during the run: {100 * share:.0f} % of all cores")
    spread = max(m.median / m.best for m in measurements)
    notes += [f"largest median / best time ratio over the rows: {spread:.2f} (1.00: no run-to-run variation)",
              f"total benchmark time: {total:.0f} s"]
    lines = [
        *ReportHeader("Kinetic feature extraction speed", "python " + shlex.join(sys.argv),
                      machine_description(str(device)), notes=notes).lines(),
        "",
        f"Patches: random {PATCH_SIZE}x{PATCH_SIZE}, one channel; DM weights random (speed does not depend on "
        f"them). One warm-up call per row, then up to {repeats} timed calls per small-preset row and "
        f"{paper_repeats} per paper-preset row, in rounds that interleave all rows (at most {time_budget_s:.0f} s of "
        "rounds); 'runs' counts them. The best time estimates the cost without interference from other jobs, the "
        "median shows the spread. 'full' runs the same extractor with truncation disabled (the whole UNet including "
        "its output head). Peak memory: growth of the process's peak resident set size during the warm-up call on "
        "CPU (allocator caches make it approximate), or of the CUDA allocator's peak.",
        "",
        "The machine may be shared with other jobs (the CPU share they used is listed above); on a busy machine "
        "single calls slow down several-fold, so read the best times and the ratios between rows as the cost of "
        "each option.",
        "",
        *results_table(measurements),
        "",
        "## Summary (computed from the table)",
        "",
        *summary(measurements),
        "",
    ]
    output.write_text("\n".join(lines), encoding="utf-8")
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file to write")
    parser.add_argument("--repeats", type=int, default=4, help="timed calls per small-preset row")
    parser.add_argument("--paper-repeats", type=int, default=2, help="timed calls per paper-preset row")
    parser.add_argument("--time-budget", type=float, default=100.0,
                        help="seconds after which no new timing round starts (warm-ups come on top)")
    parser.add_argument("-device", "--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    output = run_benchmark(args.output, args.repeats, args.paper_repeats, torch.device(args.device), args.time_budget,
                           lambda message: print(message, file=sys.stderr, flush=True))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
