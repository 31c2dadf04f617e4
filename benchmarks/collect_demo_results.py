"""Turn a finished ``make demo`` into ``benchmarks/results_demo.md`` (+ its two figures), without retyping numbers.

    git clone <repo> /tmp/clone && cd /tmp/clone && /usr/bin/time -v make demo > demo.log 2> demo_time.log
    python benchmarks/collect_demo_results.py --demo-output /tmp/clone/demo_output --time-log /tmp/clone/demo_time.log

(or ``--wall-seconds S`` for a run timed by other means, e.g. ``date +%s`` before and after ``make demo``; with
neither, the header says the run was not timed.)

The table is the benchmark's own ``results.md``; this script adds how it was made (clean clone, wall time of the
whole ``make demo`` including the install, commit, machine) and copies ``dice_bars.png`` and ``overlays.png``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path

from nnunet_dkm.reporting import cpu_model

HERE = Path(__file__).resolve().parent


def wall_time(time_log: Path) -> str:
    """The "Elapsed (wall clock) time" of GNU time's ``-v`` output, e.g. ``25:31.07``."""
    match = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", time_log.read_text())
    if not match:
        raise SystemExit(f"{time_log} holds no GNU time -v output")
    return match.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-output", type=Path, required=True, help="the demo_output/ folder of the run")
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--time-log", type=Path, help="stderr of `/usr/bin/time -v make demo`")
    timing.add_argument("--wall-seconds", type=int, help="wall time of the whole `make demo`, measured otherwise")
    parser.add_argument("--benchmark", type=Path, default=None, help="benchmark folder (default demo_output/benchmark)")
    parser.add_argument("--out", type=Path, default=HERE / "results_demo.md")
    parser.add_argument("--note", action="append", default=[], help="a line to add to the header (repeatable)")
    parser.add_argument("--figure-prefix", default="demo_", help="file name prefix of the copied figures")
    parser.add_argument("--title", default="`make demo` results", help="the page's title")
    parser.add_argument("--made-by", help="how the run was made, where it was not a clean clone + `make demo` (then "
                                          "the wall-time line is left out: say it in --note)")
    args = parser.parse_args()

    benchmark = args.benchmark or args.demo_output / "benchmark"
    table = (benchmark / "results.md").read_text()
    for figure in ("dice_bars.png", "overlays.png"):
        shutil.copyfile(benchmark / figure, args.out.parent / f"{args.figure_prefix}{figure}")
        table = table.replace(f"]({figure})", f"]({args.figure_prefix}{figure})")
    table = table.replace("# DKM benchmark:", "## DKM benchmark:", 1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=args.demo_output.parent).stdout.strip() or "unknown"
    if args.time_log is not None:
        timed = f"{wall_time(args.time_log)} (h:mm:ss or m:ss, GNU time)"
    elif args.wall_seconds is not None:
        timed = f"{args.wall_seconds // 60}:{args.wall_seconds % 60:02d} (m:ss, `date +%s` before and after)"
    else:
        timed = "not measured for this run"
    made_by = [f"- **Made by:** {args.made_by}"] if args.made_by else [
        f"- **Made by:** `git clone` of this repository into a fresh folder (now at commit {commit}), then `make demo` "
        f"(creates `.venv`, installs torch and nnU-Net from the local wheel store, then runs `scripts/demo.sh`)",
        f"- **Wall time of the whole `make demo`, install included:** {timed}"]
    header = "\n".join([
        f"# {args.title}",
        "",
        *made_by,
        *[f"- {note}" for note in args.note],
        f"- **Machine:** {cpu_model()}, {os.cpu_count()} cores visible, no GPU",
        f"- **Collected by:** `python benchmarks/collect_demo_results.py --demo-output {args.demo_output}"
        + (f" --time-log {args.time_log}" if args.time_log else "")
        + (f" --wall-seconds {args.wall_seconds}" if args.wall_seconds is not None else "")
        + (" --made-by ..." if args.made_by else "")
        + "` (+ the notes above)",
        "",
    ])
    args.out.write_text(header + "\n" + table)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
