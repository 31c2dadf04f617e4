"""DKM vs vanilla nnU-Net speed on the same data, plans and batch: a training iteration and nnUNetv2_predict's
per-case prediction (with and without mirroring), with the `small` and the `paper` DM; peak memory; where the
time goes.

    python benchmarks/segmentation_speed.py --workdir /tmp/segmentation_speed

Every measurement runs in its own subprocess (so that its peak resident memory is its own), on the demo
phantom (`nnUNetv2_dkm_synthesize -d 990`, 128x128 nnU-Net 2d patches). DM weights are random: speed does not
depend on them. Writes `benchmarks/results_segmentation_speed.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASET_ID = 990
TRAIN_STEPS = 5
PREDICTION_RUNS = 4
PREDICTION_ROUNDS = 2
CASES = [  # trainer, DM preset (None: vanilla)
    ("nnUNetTrainer", None),
    ("nnUNetTrainerDKM", "small"),
    ("nnUNetTrainerDKM_merge3x3", "small"),
    ("nnUNetTrainerDKM_bf16", "small"),
    ("nnUNetTrainerDKM", "paper"),
]


def prepare(workdir: Path, phantom_shape: list[int] | None = None) -> None:
    """Demo phantom (``phantom_shape`` z y x, default the synthesiser's), planned; a random-weight DM checkpoint per
    preset for these plans."""
    binaries = Path(sys.executable).parent
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(workdir / name)
    if not list((workdir / "nnUNet_raw").glob(f"Dataset{DATASET_ID}_*")):
        shape = ["--shape", *map(str, phantom_shape)] if phantom_shape else []
        subprocess.run([str(binaries / "nnUNetv2_dkm_synthesize"), "-d", str(DATASET_ID), *shape], check=True)
    if not list((workdir / "nnUNet_preprocessed").glob(f"Dataset{DATASET_ID}_*/nnUNetPlans_2d")):
        subprocess.run([str(binaries / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-npfp",
                        "2", "-np", "2"], check=True)
    from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint, plans_identity, save_checkpoint
    from nnunet_dkm.diffusion.config import InputScaling
    from nnunet_dkm.diffusion.network import build_network
    from nnunet_dkm.diffusion.presets import preset_network

    plans_file = next((workdir / "nnUNet_preprocessed").glob(f"Dataset{DATASET_ID}_*/nnUNetPlans.json"))
    plans = json.loads(plans_file.read_text())
    for preset in ("small", "paper"):
        path = workdir / f"dm_{preset}.pt"
        if not path.is_file():
            config = preset_network(preset, num_post_phases=2)
            save_checkpoint(DiffusionCheckpoint(config, build_network(config).state_dict(), InputScaling(0.5, 0.0),
                                                plans_identity(plans, "2d")), path)


def make_trainer(trainer_name: str, workdir: Path):
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from nnunet_dkm.training import TRAINERS

    if trainer_name == "nnUNetTrainer":
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as trainer_class
    else:
        trainer_class = TRAINERS[trainer_name]
    folder = next((workdir / "nnUNet_preprocessed").glob(f"Dataset{DATASET_ID}_*"))
    plans = load_json(str(folder / "nnUNetPlans.json"))
    plans["continue_training"] = False
    dataset_json = load_json(str(folder / "dataset.json"))
    trainer = trainer_class(plans=plans, configuration="2d", fold=0, dataset_json=dataset_json,
                            device=torch.device("cpu"))
    trainer.initialize()
    return trainer


def best_and_median(call, runs: int) -> tuple[float, float]:
    """Seconds of ``call()``: the best and the median of ``runs`` timed calls."""
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return min(seconds), statistics.median(seconds)


def measure_training(trainer_name: str, workdir: Path) -> dict:
    """Seconds per training iteration (forward, loss, backward, SGD) on one fixed batch, after one warm-up."""
    import torch

    trainer = make_trainer(trainer_name, workdir)
    loader, _ = trainer.get_dataloaders()
    batch = next(loader)
    trainer.network.train()
    trainer.train_step(batch)
    best, median = best_and_median(lambda: trainer.train_step(batch), TRAIN_STEPS)
    result = {"seconds": best, "median_seconds": median, "batch": list(batch["data"].shape)}
    if hasattr(trainer.network, "kinetic"):
        data = batch["data"] if isinstance(batch["data"], torch.Tensor) else torch.from_numpy(batch["data"])
        trainer.network.kinetic(data[:, :1])
        result["dm_seconds"] = best_and_median(lambda: trainer.network.kinetic(data[:, :1]), TRAIN_STEPS)[0]
    return result


def measure_prediction(trainer_name: str, workdir: Path, mirroring: bool) -> dict:
    """Seconds to predict one test case with nnU-Net's predictor (sliding window, Gaussian weighting): the best and
    the median of ``PREDICTION_RUNS`` runs after a warm-up."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    trainer = make_trainer(trainer_name, workdir)
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False,
                                verbose=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager,
                                    [trainer.network.state_dict()],
                                    trainer.dataset_json, trainer_name, (0, 1))
    raw = next((workdir / "nnUNet_raw").glob(f"Dataset{DATASET_ID}_*"))
    image, properties = SimpleITKIO().read_images([str(sorted((raw / "imagesTs").iterdir())[0])])
    predictor.predict_single_npy_array(image, properties, None, None, False)  # warm-up
    best, median = best_and_median(lambda: predictor.predict_single_npy_array(image, properties, None, None, False),
                                   PREDICTION_RUNS)
    return {"seconds": best, "median_seconds": median, "shape": list(image.shape)}


def run_case(kind: str, trainer_name: str, preset: str, mirroring: bool, workdir: Path) -> dict:
    env = {**os.environ, "nnUNet_n_proc_DA": "0"}
    if preset != "none":
        env["nnUNet_dkm_checkpoint"] = str(workdir / f"dm_{preset}.pt")
    command = [sys.executable, __file__, "--workdir", str(workdir), "--case", kind, trainer_name, preset,
               str(int(mirroring))]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/segmentation_speed"))
    parser.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--phantom-shape", type=int, nargs=3, metavar=("X", "Y", "Z"),
                        help="phantom grid passed to nnUNetv2_dkm_synthesize --shape (the demo uses 64 64 12)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_segmentation_speed.md")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(workdir / name)
    if args.case:
        kind, trainer_name, _, mirroring = args.case
        measured = (measure_training(trainer_name, workdir) if kind == "train"
                    else measure_prediction(trainer_name, workdir, bool(int(mirroring))))
        measured["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(measured))
        return
    import torch

    prepare(workdir, args.phantom_shape)
    rows = {}
    labels = {case: "vanilla nnUNetTrainer" if case[1] is None else f"{case[0]}, {case[1]} DM" for case in CASES}
    for (trainer_name, preset), label in labels.items():
        rows[label] = {"train": run_case("train", trainer_name, preset or "none", False, workdir)}
        print(label, rows[label], flush=True)
    for _ in range(PREDICTION_ROUNDS):  # rounds over all trainers, so that a slow spell of the VM hits them alike
        for (trainer_name, preset), label in labels.items():
            for key, mirroring in (("predict_mirroring", True), ("predict_plain", False)):
                measured = run_case("predict", trainer_name, preset or "none", mirroring, workdir)
                if key not in rows[label] or measured["seconds"] < rows[label][key]["seconds"]:
                    rows[label][key] = measured
            print(label, rows[label], flush=True)
    vanilla = rows["vanilla nnUNetTrainer"]
    batch = vanilla["train"]["batch"]
    lines = [
        "# Segmentation speed: DKM vs vanilla nnU-Net",
        "",
        "- command: `python benchmarks/segmentation_speed.py"
        + (f" --phantom-shape {' '.join(map(str, args.phantom_shape))}" if args.phantom_shape else "") + "`",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} CPU cores), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU, fp32",
        f"- data: demo phantom, nnU-Net 2d plans, training batch {batch} (same batch for every trainer), "
        f"prediction of one test case of shape {vanilla['predict_plain']['shape']} with nnU-Net's predictor",
        f"- training: best of {TRAIN_STEPS} iterations after one warm-up; prediction: best of {PREDICTION_RUNS} runs "
        f"after a warm-up, in each of {PREDICTION_ROUNDS} rounds over all trainers (medians of the best round in "
        "parentheses). This VM's CPU is shared, so single runs slow down at random; the "
        "best time estimates the cost and the ratios compare bests. Peak RSS of the measuring process; DM weights "
        "random (speed does not depend on them)",
        "- `nnUNetTrainerDKM`: fusions merge with a 1x1 convolution, DM in channels-last memory format (the "
        "defaults); `nnUNetTrainerDKM_merge3x3`: the stage's own 3x3 merge kernel (the default before 1x1); "
        "`nnUNetTrainerDKM_bf16`: the DM under bfloat16 autocast (this CPU has AVX512-BF16)",
        "",
        "| trainer | train s/iter | vs vanilla | of which DM features | predict s/case (mirroring) | vs vanilla "
        "| predict s/case (no mirroring) | vs vanilla | peak RSS train / predict (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        dm = row["train"].get("dm_seconds")
        dm_share = "-" if dm is None else f"{dm:.2f} s ({dm / row['train']['seconds']:.0%})"
        lines.append(
            f"| {label} | {row['train']['seconds']:.2f} ({row['train']['median_seconds']:.2f}) "
            f"| {row['train']['seconds'] / vanilla['train']['seconds']:.2f}x "
            f"| {dm_share} "
            f"| {row['predict_mirroring']['seconds']:.2f} ({row['predict_mirroring']['median_seconds']:.2f}) "
            f"| {row['predict_mirroring']['seconds'] / vanilla['predict_mirroring']['seconds']:.2f}x "
            f"| {row['predict_plain']['seconds']:.2f} ({row['predict_plain']['median_seconds']:.2f}) "
            f"| {row['predict_plain']['seconds'] / vanilla['predict_plain']['seconds']:.2f}x "
            f"| {row['train']['peak_rss_mib']:.0f} / {row['predict_mirroring']['peak_rss_mib']:.0f} |"
        )
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
