"""Does a shipped DM keep its quality in float16? The DM-quality table and the feature probe of the float16 copy
against the float32 DM it was exported from.

    python benchmarks/shipped_dm_precision.py --workdir /work/studies/demo -d 990 \\
        --float32 /work/studies/demo/nnUNet_preprocessed/Dataset990_DKMPhantom/dkm/2d/dm_checkpoint.pt \\
        --float16 benchmarks/dms/demo_phantom_2d.pt

``--workdir`` holds the dataset's nnU-Net folders (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``).
For each checkpoint it runs ``nnUNetv2_dkm_dm_quality --split selection`` (the DM's held-out TRAINING exams, DDIM 5
steps, seed 0) and ``nnUNetv2_dkm_probe`` (the trainer's feature setting, seed 0) into ``<workdir>/precision/``,
reusing finished outputs, then writes ``benchmarks/results_shipped_dm_precision.md``.

The rule, fixed before any result: the float16 copy matches "within noise" where every DM-quality MAE (relative to
the pre-contrast image's) lies within 1 percentage point of the float32 DM's, and every probe row's test Dice
within 0.01 of it (the probe's case-level intervals of learned - untrained span about 0.08, its rows' case std
about 0.15).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from nnunet_dkm.evaluation.nnunet_runs import run_command
from nnunet_dkm.fingerprints import file_sha256
from nnunet_dkm.reporting import ReportHeader, machine_description, markdown_table

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MAE_TOLERANCE = 0.01  # of the pre-contrast image's MAE (1 percentage point)
DICE_TOLERANCE = 0.01


def run(command: list[str], workdir: Path) -> None:
    """``command`` with the work folder's nnU-Net variables (``-chk`` names the DM, not ``nnUNet_dkm_checkpoint``)."""
    run_command(command, unset=("nnUNet_dkm_checkpoint",),
                extra={name: str(workdir / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})


def measure(workdir: Path, dataset: int, name: str, checkpoint: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(DM-quality table, probe summary) of one checkpoint, made where missing."""
    quality, probe = workdir / "precision" / f"quality_{name}", workdir / "precision" / f"probe_{name}"
    if not (quality / "results.csv").is_file():
        run([str(BIN / "nnUNetv2_dkm_dm_quality"), "-d", str(dataset), "-c", "2d", "--split", "selection",
             "-chk", str(checkpoint), "-o", str(quality), "-device", "cpu"], workdir)
    if not (probe / "results_summary.csv").is_file():
        run([str(BIN / "nnUNetv2_dkm_probe"), "-d", str(dataset), "-c", "2d", "-chk", str(checkpoint), "-o",
             str(probe), "-device", "cpu"], workdir)
    return pd.read_csv(quality / "results.csv"), pd.read_csv(probe / "results_summary.csv")


def compare(float32: pd.DataFrame, float16: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """The two tables' ``value`` side by side on ``keys``, with their difference."""
    merged = float32[[*keys, value]].merge(float16[[*keys, value]], on=keys, suffixes=("_float32", "_float16"))
    merged["difference"] = merged[f"{value}_float16"] - merged[f"{value}_float32"]
    return merged


def markdown(frame: pd.DataFrame) -> list[str]:
    """A plain markdown table of ``frame`` (4 decimals, differences signed)."""
    formats = {c: "{:+.4f}" if c == "difference" else "{:.4f}" for c in frame.select_dtypes("float")}
    return markdown_table(frame.assign(**{c: frame[c].map(f.format) for c, f in formats.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("-d", "--dataset", type=int, default=990)
    parser.add_argument("--float32", type=Path, required=True, help="the DM as pretrained")
    parser.add_argument("--float16", type=Path, required=True, help="its float16 export")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "benchmarks" / "results_shipped_dm_precision.md")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    quality32, probe32 = measure(workdir, args.dataset, "float32", args.float32.resolve())
    quality16, probe16 = measure(workdir, args.dataset, "float16", args.float16.resolve())
    quality = compare(quality32, quality16, ["phase", "region", "estimate"], "mae_vs_identity")
    quality = quality[quality["estimate"] == "synthetic"]
    probe = compare(probe32[probe32["model"].notna()], probe16, ["row", "classifier"], "dice_mean")
    worst_mae, worst_dice = quality["difference"].abs().max(), probe["difference"].abs().max()
    matches = worst_mae <= MAE_TOLERANCE and worst_dice <= DICE_TOLERANCE
    lines = [
        *ReportHeader("The shipped demo DM in float16 against the float32 DM it was exported from",
                      f"python benchmarks/shipped_dm_precision.py --workdir {args.workdir} -d {args.dataset} "
                      f"--float32 {args.float32} --float16 {args.float16}", machine_description("cpu"), notes=[
            f"float32: `{args.float32}` (sha256 {file_sha256(args.float32)[:12]}...); float16: `{args.float16}` "
            f"(sha256 {file_sha256(args.float16)[:12]}...)",
            "DM quality: `nnUNetv2_dkm_dm_quality --split selection` (the DM's held-out training exams, DDIM 5 steps, "
            "seed 0): MAE of the synthetic post-contrast phase relative to the pre-contrast image's MAE",
            "probe: `nnUNetv2_dkm_probe` (the trainer's feature setting, seed 0): test Dice of each DM row",
            f"rule (fixed before the results): every MAE within {MAE_TOLERANCE:g} and every probe Dice within "
            f"{DICE_TOLERANCE:g} of the float32 DM's"]).lines(), "",
        f"**Verdict: {'the float16 copy matches the float32 DM within noise' if matches else 'NOT within the rule'}** "
        f"(largest MAE difference {worst_mae:.4f}, largest probe Dice difference {worst_dice:.4f}).", "",
        "## DM quality (selection split)", "", *markdown(quality), "",
        "## Probe (test Dice)", "", *markdown(probe), "",
    ]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
