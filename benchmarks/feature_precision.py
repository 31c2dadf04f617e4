"""Is bfloat16 autocast of the frozen DM accurate enough for prediction, and how much faster is it?

Uses trained models (e.g. those of ``make demo``): predicts the test split with nnU-Net's predictor (mirroring on,
as ``nnUNetv2_predict``) for vanilla nnU-Net, and for one DKM model twice, with its DM in fp32 and under bf16
autocast (the same weights; only ``KineticFeatureConfig.autocast`` differs). Reports seconds per case, Dice
against the labels, and the agreement between the fp32 and bf16 DKM predictions.

    python benchmarks/feature_precision.py --results demo_output/nnUNet_results/Dataset990_DKMPhantom \\
        --raw demo_output/nnUNet_raw/Dataset990_DKMPhantom --vanilla nnUNetTrainer_demo --dkm nnUNetTrainerDKM_demo
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_dkm.evaluation.metrics import case_metrics
from nnunet_dkm.reporting import ReportHeader, machine_description, markdown_table, mean_seconds

HERE = Path(__file__).resolve().parent


def load_predictor(model_folder: Path, fold: int):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_dkm.evaluation.nnunet_runs import child_environment

    os.environ["nnUNet_extTrainer"] = child_environment()["nnUNet_extTrainer"]  # how nnU-Net finds the trainers
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=(fold,),
                                                   checkpoint_name="checkpoint_final.pth")
    return predictor


def predict_all(predictor, images: list[Path], repeats: int) -> tuple[list[np.ndarray], float]:
    """Segmentations (z, y, x) of every image and the mean seconds per case over ``repeats`` passes after warm-up."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    reader = SimpleITKIO()
    loaded = [reader.read_images([str(p)]) for p in images]

    def predict() -> list[np.ndarray]:
        return [predictor.predict_single_npy_array(data, properties, None, None, False) for data, properties in loaded]

    return predict(), mean_seconds(predict, repeats) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="nnUNet_results/DatasetXXX_Name")
    parser.add_argument("--raw", type=Path, required=True, help="nnUNet_raw/DatasetXXX_Name (imagesTs, labelsTs)")
    parser.add_argument("--vanilla", default="nnUNetTrainer_demo")
    parser.add_argument("--dkm", default="nnUNetTrainerDKM_demo")
    parser.add_argument("--plans", default="nnUNetPlans")
    parser.add_argument("--configuration", default="2d")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=HERE / "results_feature_precision.md")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    images = sorted((args.raw / "imagesTs").glob("*_0000.nii.gz"))
    labels = [args.raw / "labelsTs" / p.name.replace("_0000", "") for p in images]
    references = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0 for p in labels]
    spacing = tuple(reversed(sitk.ReadImage(str(labels[0])).GetSpacing()))

    def folder(trainer: str) -> Path:
        return args.results / f"{trainer}__{args.plans}__{args.configuration}"

    rows = {}
    vanilla = load_predictor(folder(args.vanilla), args.fold)
    rows["vanilla nnU-Net"] = predict_all(vanilla, images, args.repeats)
    dkm = load_predictor(folder(args.dkm), args.fold)
    extractor = dkm.network.kinetic
    for name, autocast in (("DKM, DM fp32", False), ("DKM, DM bf16 autocast", True)):
        extractor.feature_config = replace(extractor.feature_config, autocast=autocast)
        rows[name] = predict_all(dkm, images, args.repeats)

    base_time = rows["vanilla nnU-Net"][1]
    dice = {name: [case_metrics(r, p > 0, spacing).dice for r, p in zip(references, predictions, strict=True)]
            for name, (predictions, _) in rows.items()}
    lines = [
        *ReportHeader("bf16 autocast of the frozen DM at prediction time: speed and accuracy",
                      f"python benchmarks/feature_precision.py --results {args.results} --raw {args.raw} --vanilla "
                      f"{args.vanilla} --dkm {args.dkm} --fold {args.fold}", machine_description(), notes=[
                          f"**Data:** {len(images)} test cases of {args.raw.name}; fold {args.fold} models; nnU-Net "
                          f"predictor with mirroring (as `nnUNetv2_predict`), mean of {args.repeats} passes after "
                          "warm-up"]).lines(),
        "",
        *markdown_table([{"model": name, "s / case": f"{seconds:.3f}", "vs vanilla": f"{seconds / base_time:.2f}x",
                          "Dice vs labels (mean ± std)": f"{np.mean(dice[name]):.4f} ± {np.std(dice[name]):.4f}"}
                         for name, (_, seconds) in rows.items()]),
    ]
    fp32, bf16 = rows["DKM, DM fp32"][0], rows["DKM, DM bf16 autocast"][0]
    agreement = [case_metrics(a > 0, b > 0, spacing).dice for a, b in zip(fp32, bf16, strict=True)]
    changed = sum(int((a != b).sum()) for a, b in zip(fp32, bf16, strict=True))
    total = sum(a.size for a in fp32)
    lines += [
        "",
        f"Agreement of the DKM fp32 and bf16 predictions: Dice {np.mean(agreement):.4f} (min {np.min(agreement):.4f}); "
        f"{changed} of {total} voxels ({100 * changed / total:.3f} %) change label.",
    ]
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
