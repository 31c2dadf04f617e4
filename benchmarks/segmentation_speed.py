"""DKM vs vanilla nnU-Net speed on the same data, plans and batch: a training iteration and nnUNetv2_predict's
per-case prediction (with and without mirroring), with the `small` and the `paper` DM; peak memory; where the
time goes. In nnU-Net's 2d configuration and, with ``--configurations 3d_fullres`` (or ``2d 3d_fullres``), in its
3d_fullres configuration, where the 2D DM runs slice by slice inside the 3D patch.

    python benchmarks/segmentation_speed.py --workdir /tmp/segmentation_speed
    python benchmarks/segmentation_speed.py --phantom-shape 64 64 12 --configurations 2d 3d_fullres \
        --workdir /tmp/segmentation_speed_demo --output benchmarks/results_segmentation_speed_demo_phantom.md

Every measurement runs in its own subprocess (so that its peak resident memory is its own), on the demo
phantom (`nnUNetv2_dkm_synthesize -d 990`, 128x128 nnU-Net 2d patches by default). DM weights are random: speed does
not depend on them. For 3d_fullres it also measures the DM's features of one training batch alone, with the default
chunking (``KineticFeatureConfig.slice_chunk_pixels``) and with every slice in one call: seconds and the growth of
the process's peak resident memory (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``). Writes
`benchmarks/results_segmentation_speed.md` (or ``--output``). ``--train-steps 1 --prediction-runs 1
--prediction-rounds 1`` with a small ``--phantom-shape`` checks the script in a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from nnunet_dkm.reporting import PeakMemory, ReportHeader, machine_description, markdown_table, mean_seconds

REPO = Path(__file__).resolve().parents[1]
DATASET_ID = 990
TRAIN_STEPS = 5
PREDICTION_RUNS = 4
PREDICTION_ROUNDS = 2
CASES = {  # configuration: [(trainer, DM preset (None: vanilla))]
    "2d": [
        ("nnUNetTrainer", None),
        ("nnUNetTrainerDKM", "small"),
        ("nnUNetTrainerDKM_merge3x3", "small"),
        ("nnUNetTrainerDKM_bf16", "small"),
        ("nnUNetTrainerDKM", "paper"),
    ],
    "3d_fullres": [
        ("nnUNetTrainer", None),
        ("nnUNetTrainerDKM", "small"),
        ("nnUNetTrainerDKM", "paper"),
    ],
}
PRESETS = ("small", "paper")


def checkpoint_path(workdir: Path, preset: str, configuration: str) -> Path:
    """The random-weight DM checkpoint of a preset made for a configuration's plans."""
    return workdir / (f"dm_{preset}.pt" if configuration == "2d" else f"dm_{preset}_{configuration}.pt")


def prepare(workdir: Path, configurations: list[str], phantom_shape: list[int] | None = None) -> None:
    """Demo phantom (``phantom_shape`` x y z, default the synthesiser's), planned for ``configurations``; a
    random-weight DM checkpoint per preset and configuration for these plans."""
    binaries = Path(sys.executable).parent
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(workdir / name)
    if not list((workdir / "nnUNet_raw").glob(f"Dataset{DATASET_ID}_*")):
        shape = ["--shape", *map(str, phantom_shape)] if phantom_shape else []
        subprocess.run([str(binaries / "nnUNetv2_dkm_synthesize"), "-d", str(DATASET_ID), *shape], check=True)
    missing = [c for c in configurations
               if not list((workdir / "nnUNet_preprocessed").glob(f"Dataset{DATASET_ID}_*/nnUNetPlans_{c}"))]
    if missing:
        subprocess.run([str(binaries / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", *missing,
                        "-npfp", "2", "-np", "2"], check=True)
    from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint, plans_identity, save_checkpoint
    from nnunet_dkm.diffusion.config import InputScaling
    from nnunet_dkm.diffusion.network import build_network
    from nnunet_dkm.diffusion.presets import preset_network

    plans_file = next((workdir / "nnUNet_preprocessed").glob(f"Dataset{DATASET_ID}_*/nnUNetPlans.json"))
    plans = json.loads(plans_file.read_text())
    for configuration in configurations:
        for preset in PRESETS:
            path = checkpoint_path(workdir, preset, configuration)
            if not path.is_file():
                config = preset_network(preset, num_post_phases=2)
                save_checkpoint(DiffusionCheckpoint(config, build_network(config).state_dict(),
                                                    InputScaling(0.5, 0.0), plans_identity(plans, configuration)),
                                path)


def make_trainer(trainer_name: str, workdir: Path, configuration: str):
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
    trainer = trainer_class(plans=plans, configuration=configuration, fold=0, dataset_json=dataset_json,
                            device=torch.device("cpu"))
    trainer.initialize()
    return trainer


def dm_features_call(network, data):
    """A call that computes the network's DM features of a batch, as its forward does (2D or slice-wise 3D)."""
    per_slice = getattr(network, "kinetic_features", None)  # KineticUNet3D: the 2D DM slice by slice
    if per_slice is not None:
        return lambda: per_slice(data[:, :1])
    return lambda: network.kinetic(data[:, :1])


def training_batch(trainer):
    import torch

    loader, _ = trainer.get_dataloaders()
    batch = next(loader)
    data = batch["data"] if isinstance(batch["data"], torch.Tensor) else torch.from_numpy(batch["data"])
    return batch, data


def measure_training(trainer_name: str, workdir: Path, configuration: str, steps: int) -> dict:
    """Mean seconds per training iteration (forward, loss, backward, SGD) on one fixed batch, after warm-up."""
    trainer = make_trainer(trainer_name, workdir, configuration)
    batch, data = training_batch(trainer)
    trainer.network.train()
    result = {"seconds": mean_seconds(lambda: trainer.train_step(batch), steps), "batch": list(batch["data"].shape)}
    if hasattr(trainer.network, "kinetic"):
        result["dm_seconds"] = mean_seconds(dm_features_call(trainer.network, data), steps)
    return result


def measure_dm_memory(trainer_name: str, workdir: Path, configuration: str, steps: int) -> dict:
    """The DM's features of one training batch alone (3D: slice-wise) with the default chunking, with every slice in
    one call and with 4 slices per call: mean seconds and the growth of the peak resident memory (MiB) during one
    call, per setting."""
    import torch

    from nnunet_dkm.diffusion.features import slices_per_chunk, slicewise_kinetic_features

    trainer = make_trainer(trainer_name, workdir, configuration)
    _, data = training_batch(trainer)
    network = trainer.network
    kinetic = network.kinetic
    axis = network.slice_axis
    plane = tuple(size for index, size in enumerate(data.shape[2:]) if index != axis)
    num_slices = data.shape[0] * data.shape[2 + axis]
    settings = {"default": kinetic.feature_config.slice_chunk_pixels, "one call": 0,
                "4 slices per call": 4 * plane[0] * plane[1]}
    result = {"slices": num_slices, "in_plane": list(plane), "settings": []}
    memory = PeakMemory()
    for name, pixels in settings.items():
        def call(pixels: int = pixels) -> None:
            with torch.no_grad():
                slicewise_kinetic_features(kinetic, data[:, :1], axis, pixels)
        call()  # warm-up
        memory.start()
        call()
        result["settings"].append({"name": name, "chunk_pixels": pixels, "peak_mib": memory.peak_mib(),
                                   "slices_per_call": slices_per_chunk(plane, pixels, num_slices),
                                   "seconds": mean_seconds(call, steps)})
    return result


def measure_prediction(trainer_name: str, workdir: Path, configuration: str, mirroring: bool, runs: int) -> dict:
    """Mean seconds to predict one test case with nnU-Net's predictor (sliding window, Gaussian weighting) over
    ``runs`` runs after warm-up."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    trainer = make_trainer(trainer_name, workdir, configuration)
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False,
                                verbose=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager,
                                    [trainer.network.state_dict()],
                                    trainer.dataset_json, trainer_name,
                                    tuple(range(len(trainer.configuration_manager.patch_size))))  # nnU-Net's axes
    raw = next((workdir / "nnUNet_raw").glob(f"Dataset{DATASET_ID}_*"))
    image, properties = SimpleITKIO().read_images([str(sorted((raw / "imagesTs").iterdir())[0])])
    seconds = mean_seconds(lambda: predictor.predict_single_npy_array(image, properties, None, None, False), runs)
    return {"seconds": seconds, "shape": list(image.shape)}


def run_case(spec: dict, workdir: Path) -> dict:
    """One measurement (``spec``: kind, trainer, preset, configuration, mirroring, repetitions) in a subprocess."""
    env = {**os.environ, "nnUNet_n_proc_DA": "0"}
    if spec["preset"] is not None:
        env["nnUNet_dkm_checkpoint"] = str(checkpoint_path(workdir, spec["preset"], spec["configuration"]))
    command = [sys.executable, __file__, "--workdir", str(workdir), "--case", json.dumps(spec)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_case(spec: dict, workdir: Path) -> dict:
    """The measurement a subprocess was started for (see ``run_case``)."""
    kind, trainer, configuration = spec["kind"], spec["trainer"], spec["configuration"]
    if kind == "train":
        measured = measure_training(trainer, workdir, configuration, spec["repetitions"])
    elif kind == "dm_memory":
        measured = measure_dm_memory(trainer, workdir, configuration, spec["repetitions"])
    else:
        measured = measure_prediction(trainer, workdir, configuration, spec["mirroring"], spec["repetitions"])
    measured["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return measured


def label_of(trainer_name: str, preset: str | None, configuration: str) -> str:
    name = "vanilla nnUNetTrainer" if preset is None else f"{trainer_name}, {preset} DM"
    return name if configuration == "2d" else f"{name}, {configuration}"


def measure_configuration(configuration: str, workdir: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Every row of one configuration: training, then prediction in rounds over all trainers (so that a slow spell
    of the VM hits them alike); for 3D also the DM's features alone with and without chunking."""
    rows: dict[str, dict] = {}
    cases = {label_of(trainer, preset, configuration): (trainer, preset) for trainer, preset in CASES[configuration]}
    for label, (trainer, preset) in cases.items():
        spec = {"kind": "train", "trainer": trainer, "preset": preset, "configuration": configuration,
                "mirroring": False, "repetitions": args.train_steps}
        rows[label] = {"train": run_case(spec, workdir)}
        if preset is not None and configuration != "2d":
            rows[label]["dm_memory"] = run_case({**spec, "kind": "dm_memory"}, workdir)
        print(label, rows[label], flush=True)
    for _ in range(args.prediction_rounds):
        for label, (trainer, preset) in cases.items():
            for key, mirroring in (("predict_mirroring", True), ("predict_plain", False)):
                spec = {"kind": "predict", "trainer": trainer, "preset": preset, "configuration": configuration,
                        "mirroring": mirroring, "repetitions": args.prediction_runs}
                measured = run_case(spec, workdir)
                if key not in rows[label] or measured["seconds"] < rows[label][key]["seconds"]:
                    rows[label][key] = measured
            print(label, rows[label], flush=True)
    return rows


def speed_table(rows: dict[str, dict]) -> list[str]:
    vanilla = next(row for label, row in rows.items() if label.startswith("vanilla"))
    lines = []
    for label, row in rows.items():
        dm = row["train"].get("dm_seconds")
        seconds = {key: (f"{row[key]['seconds']:.2f}", f"{row[key]['seconds'] / vanilla[key]['seconds']:.2f}x")
                   for key in ("train", "predict_mirroring", "predict_plain")}
        dm_share = "-" if dm is None else f"{dm:.2f} s ({dm / row['train']['seconds']:.0%})"
        lines.append([label, *seconds["train"], dm_share,
                      *seconds["predict_mirroring"], *seconds["predict_plain"],
                      f"{row['train']['peak_rss_mib']:.0f} / {row['predict_mirroring']['peak_rss_mib']:.0f}"])
    return markdown_table(lines, ["trainer", "train s/iter", "vs vanilla", "of which DM features",
                                  "predict s/case (mirroring)", "vs vanilla", "predict s/case (no mirroring)",
                                  "vs vanilla", "peak RSS train / predict (MiB)"])


def memory_table(rows: dict[str, dict]) -> list[str]:
    lines = []
    for label, row in rows.items():
        dm = row.get("dm_memory")
        for setting in dm["settings"] if dm else ():
            chunking = setting["name"]
            if chunking == "default":
                chunking = f"default (slice_chunk_pixels {setting['chunk_pixels']})"
            peak = "-" if setting["peak_mib"] is None else f"{setting['peak_mib']:.0f}"
            lines.append([label, f"{dm['slices']} ({'x'.join(map(str, dm['in_plane']))})", chunking,
                          setting["slices_per_call"], f"{setting['seconds']:.2f}", peak])
    return markdown_table(lines, ["trainer", "slices per batch (in-plane)", "chunking", "slices per DM call",
                                  "DM features s", "peak memory growth MiB"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/segmentation_speed"))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--phantom-shape", type=int, nargs=3, metavar=("X", "Y", "Z"),
                        help="phantom grid passed to nnUNetv2_dkm_synthesize --shape (the demo uses 64 64 12)")
    parser.add_argument("--configurations", nargs="+", default=["2d"], choices=sorted(CASES),
                        help="nnU-Net configurations to measure (default 2d)")
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS, help="timed training iterations per trainer")
    parser.add_argument("--prediction-runs", type=int, default=PREDICTION_RUNS, help="timed predictions per round")
    parser.add_argument("--prediction-rounds", type=int, default=PREDICTION_ROUNDS, help="rounds over all trainers")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_segmentation_speed.md")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(workdir / name)
    if args.case:
        print(json.dumps(measure_case(json.loads(args.case), workdir)))
        return
    prepare(workdir, args.configurations, args.phantom_shape)
    results = {configuration: measure_configuration(configuration, workdir, args)
               for configuration in args.configurations}
    command = "python benchmarks/segmentation_speed.py"
    if args.phantom_shape:
        command += f" --phantom-shape {' '.join(map(str, args.phantom_shape))}"
    if args.configurations != ["2d"]:
        command += f" --configurations {' '.join(args.configurations)}"
    for flag, value, default in (("--train-steps", args.train_steps, TRAIN_STEPS),
                                 ("--prediction-runs", args.prediction_runs, PREDICTION_RUNS),
                                 ("--prediction-rounds", args.prediction_rounds, PREDICTION_ROUNDS)):
        if value != default:
            command += f" {flag} {value}"
    import torch  # after the nnU-Net variables are set

    from nnunet_dkm.training.variants.precision import native_bf16

    title = "Segmentation speed: DKM vs vanilla nnU-Net"
    lines = ReportHeader(title, command, f"{machine_description()}, fp32", notes=[
        f"training: mean of {args.train_steps} iterations after warm-up; prediction: mean of "
        f"{args.prediction_runs} runs after warm-up, the best of {args.prediction_rounds} rounds over all trainers "
        "(torch.utils.benchmark.Timer). This VM's CPU is shared, so single runs slow down at random; the ratios "
        "compare the best rounds. Peak RSS of the measuring process; DM weights random (speed does not depend on "
        "them)",
        "`nnUNetTrainerDKM`: fusions merge with a 1x1 convolution, DM in channels-last memory format (the "
        "defaults); `nnUNetTrainerDKM_merge3x3`: the stage's own 3x3 merge kernel (the default before 1x1); "
        "`nnUNetTrainerDKM_bf16`: the DM under bfloat16 autocast (this CPU "
        f"{'runs bf16 natively' if native_bf16(torch.device('cpu')) else 'has no native bf16: emulated'})"]).lines()
    for configuration, rows in results.items():
        vanilla = next(row for label, row in rows.items() if label.startswith("vanilla"))
        lines += [
            "",
            f"## {configuration}",
            "",
            f"- data: demo phantom, nnU-Net {configuration} plans, training batch {vanilla['train']['batch']} (same "
            f"batch for every trainer), prediction of one test case of shape {vanilla['predict_plain']['shape']} with "
            "nnU-Net's predictor"
            + (" (mirroring along all three axes: 8 network calls per window, each running the DM on every slice)"
               if configuration != "2d" else ""),
            "",
            *speed_table(rows),
        ]
        if configuration != "2d":
            lines += [
                "",
                "The 2D DM runs on every slice of the 3D training batch; its features of one batch alone, per "
                "chunking (mean seconds; growth of the process's peak resident memory during one call, which "
                "bounds the DM's activation memory):",
                "",
                *memory_table(rows),
            ]
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
