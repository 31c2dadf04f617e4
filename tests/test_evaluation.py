"""The benchmark's pieces: metrics, baselines without a network, paired statistics, the oracle dataset, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from conftest import squeeze
from scipy import ndimage
from scipy.stats import wilcoxon

from nnunet_dkm.evaluation.baselines import IntensityWindow, body_mask, label_rule_on_post_contrast, largest_component
from nnunet_dkm.evaluation.metrics import case_metrics, image_diagonal_mm
from nnunet_dkm.evaluation.oracle import OracleDatasetError, copy_split_file, make_oracle_dataset
from nnunet_dkm.evaluation.statistics import paired_comparison, summarise

# -- metrics --------------------------------------------------------------------------------------------------------


def test_identical_masks_score_perfectly() -> None:
    mask = np.zeros((4, 8, 8), dtype=bool)
    mask[1:3, 2:6, 2:6] = True
    metrics = case_metrics(mask, mask, (2.0, 1.0, 1.0))
    assert (metrics.dice, metrics.jaccard, metrics.hd95_mm) == (1.0, 1.0, 0.0)
    assert not metrics.empty_prediction


def test_dice_and_jaccard_of_a_hand_counted_case() -> None:
    reference = np.zeros((1, 1, 8), dtype=bool)
    prediction = np.zeros_like(reference)
    reference[0, 0, 0:4] = True  # 4 voxels
    prediction[0, 0, 2:6] = True  # 2 overlap, 2 false positives, 2 missed
    metrics = case_metrics(reference, prediction, (1.0, 1.0, 1.0))
    assert metrics.dice == pytest.approx(0.5)
    assert metrics.jaccard == pytest.approx(2 / 6)


def test_hd95_is_in_millimetres_along_the_right_axis() -> None:
    reference = np.zeros((3, 5, 9), dtype=bool)
    prediction = np.zeros_like(reference)
    reference[1, 2, 2] = True
    prediction[1, 2, 5] = True  # 3 voxels along x, whose spacing is 0.5 mm
    assert case_metrics(reference, prediction, (2.0, 1.0, 0.5)).hd95_mm == pytest.approx(1.5)


def test_an_empty_prediction_costs_the_image_diagonal() -> None:
    reference = np.zeros((2, 4, 4), dtype=bool)
    reference[0, 1, 1] = True
    metrics = case_metrics(reference, np.zeros_like(reference), (3.0, 1.0, 1.0))
    assert metrics.dice == 0.0 and metrics.empty_prediction
    assert metrics.hd95_mm == pytest.approx(image_diagonal_mm((2, 4, 4), (3.0, 1.0, 1.0))) == pytest.approx(
        math.sqrt(6**2 + 4**2 + 4**2))


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="shape"):
        case_metrics(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool), (1, 1, 1))


# -- baselines ------------------------------------------------------------------------------------------------------


def disk_exam(seed: int, tumour_value: float = 300.0) -> tuple[np.ndarray, np.ndarray]:
    """A (4, 32, 32) exam: a bright disk of tissue (~100) on air (~5), with a small blob at ``tumour_value``."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:4, 0:32, 0:32]
    tissue = (y - 16) ** 2 + (x - 16) ** 2 < 12**2
    tumour = tissue & ((y - 14 - seed % 3) ** 2 + (x - 17) ** 2 < 3**2) & (z > 0)
    pre = np.where(tissue, 100.0, 5.0) + rng.normal(0, 3, tissue.shape)
    pre[tumour] = tumour_value + rng.normal(0, 3, int(tumour.sum()))
    return pre.astype(np.float32), tumour


def test_body_mask_finds_the_tissue_and_ignores_air() -> None:
    pre, _ = disk_exam(0)
    mask = body_mask(pre)
    z, y, x = np.mgrid[0:4, 0:32, 0:32]
    truth = (y - 16) ** 2 + (x - 16) ** 2 < 12**2
    assert (mask == truth).mean() > 0.99


def test_intensity_window_learns_the_tumour_band_from_training_cases() -> None:
    window = IntensityWindow.fit([disk_exam(seed) for seed in range(3)])
    pre, tumour = disk_exam(7)
    assert case_metrics(tumour, window.predict(pre), (1, 1, 1)).dice > 0.9


def test_label_rule_finds_the_enhancing_blob_but_not_the_unenhancing_tissue() -> None:
    pre, tumour = disk_exam(1, tumour_value=100.0)
    post = pre * np.where(tumour, 2.0, 1.1)  # +100 % in the tumour, +10 % elsewhere
    assert case_metrics(tumour, label_rule_on_post_contrast(pre, post), (1, 1, 1)).dice > 0.9


def test_largest_component_keeps_only_the_biggest_blob() -> None:
    mask = np.zeros((1, 10, 10), dtype=bool)
    mask[0, 0:2, 0:2] = True
    mask[0, 5:9, 5:9] = True
    kept = largest_component(mask)
    assert kept.sum() == 16 and kept[0, 6, 6] and not kept[0, 0, 0]
    assert not largest_component(np.zeros((2, 3, 3), bool)).any()


def test_largest_component_is_scipys_26_connected_largest_label() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((6, 20, 20)) > 0.88  # about 50 components touching by faces, edges or corners; ties too
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(labels.ravel())[1:]
        assert np.array_equal(largest_component(mask), labels == int(np.argmax(sizes)) + 1)


# -- statistics -----------------------------------------------------------------------------------------------------


def per_case_table() -> pd.DataFrame:
    rows = []
    for fold in (0, 1):
        for i in range(6):
            base = 0.5 + 0.05 * i
            for method, dice in (("vanilla", base), ("dkm", base + 0.02 * (i + 1)), ("same", base)):
                rows.append({"method": method, "fold": fold, "case": f"c{i}", "dice": dice, "jaccard": dice / 2,
                             "hd95_mm": 10 - 10 * dice, "empty_prediction": False})
    return pd.DataFrame(rows)


def test_paired_comparison_matches_on_fold_and_case() -> None:
    table = per_case_table()
    comparison = paired_comparison(table, "dkm", "vanilla")
    differences = [0.02 * (i + 1) for i in range(6)] * 2
    assert comparison.pairs == 12 and comparison.wins == 12 and comparison.losses == 0
    assert comparison.mean_difference == pytest.approx(np.mean(differences))
    assert comparison.wilcoxon_p == pytest.approx(wilcoxon(differences).pvalue)
    hd = paired_comparison(table, "dkm", "vanilla", "hd95_mm")
    assert hd.mean_difference < 0 and hd.wins == 12  # lower HD95 is better


def test_identical_methods_have_no_p_value() -> None:
    comparison = paired_comparison(per_case_table(), "same", "vanilla")
    assert comparison.mean_difference == 0 and comparison.ties == 12 and math.isnan(comparison.wilcoxon_p)


def test_summary_pools_folds_and_cases() -> None:
    summary = summarise(per_case_table(), ["vanilla", "dkm", "missing"])
    assert list(summary["method"]) == ["vanilla", "dkm"]
    row = summary.iloc[0]
    assert row["n"] == 12 and row["folds"] == 2
    assert row["dice_mean"] == pytest.approx(np.mean([0.5 + 0.05 * i for i in range(6)]))


# -- the oracle dataset ---------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_raw(tmp_path):
    from dataset_conversion.phantom.synthesize import synthesize_dataset

    raw = tmp_path / "nnUNet_raw"
    return synthesize_dataset(994, seed=5, num_train=3, num_test=1, num_unlabelled=0, shape=(32, 32, 3),
                              raw_folder=raw, verbose=False)


def test_oracle_dataset_holds_the_post_contrast_phase_and_the_same_labels(tiny_raw) -> None:
    oracle = make_oracle_dataset(tiny_raw)
    assert oracle.name == "Dataset999_DKMPhantomPostContrastOracle"
    info = json.loads((oracle / "dataset.json").read_text())
    assert info["dkm"]["oracle_of"] == tiny_raw.name and info["numTraining"] == 3
    for split in ("Tr", "Ts"):
        for label in (tiny_raw / f"labels{split}").glob("*.nii.gz"):
            case = label.name[: -len(".nii.gz")]
            image = sitk.GetArrayFromImage(sitk.ReadImage(str(oracle / f"images{split}" / f"{case}_0000.nii.gz")))
            post = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny_raw / f"kinetics{split}" / f"{case}_0001.nii.gz")))
            np.testing.assert_array_equal(image, post)
            assert (oracle / f"labels{split}" / label.name).read_bytes() == label.read_bytes()
    assert make_oracle_dataset(tiny_raw) == oracle  # found again, not made twice
    assert not list(tiny_raw.parent.glob(".tmp_*"))


def test_oracle_refuses_a_taken_id_and_names_a_missing_phase(tiny_raw) -> None:
    with pytest.raises(OracleDatasetError, match="taken"):
        make_oracle_dataset(tiny_raw, oracle_id=994)
    victim = next((tiny_raw / "kineticsTr").glob("*_0001.nii.gz"))
    victim.unlink()
    with pytest.raises(OracleDatasetError, match=victim.name):
        make_oracle_dataset(tiny_raw, oracle_id=500)
    assert not list(tiny_raw.parent.glob("Dataset500_*")) and not list(tiny_raw.parent.glob(".tmp_*"))


def test_oracle_split_must_match_the_source_split(tmp_path) -> None:
    source, oracle = tmp_path / "source", tmp_path / "oracle"
    source.mkdir()
    oracle.mkdir()
    split = [{"train": ["a", "b"], "val": ["c"]}]
    (source / "splits_final.json").write_text(json.dumps(split))
    copy_split_file(source, oracle)
    assert json.loads((oracle / "splits_final.json").read_text()) == split
    (oracle / "splits_final.json").write_text(json.dumps([{"train": ["a"], "val": ["b", "c"]}]))
    with pytest.raises(OracleDatasetError, match="differs"):
        copy_split_file(source, oracle)
    # folds appended to the source (label subsets) reach an oracle whose folds are the source's first ones
    (oracle / "splits_final.json").write_text(json.dumps(split))
    longer = [*split, {"train": ["a"], "val": ["c"]}]
    (source / "splits_final.json").write_text(json.dumps(longer))
    copy_split_file(source, oracle)
    assert json.loads((oracle / "splits_final.json").read_text()) == longer


# -- label efficiency ------------------------------------------------------------------------------------------------


def test_label_subsets_are_nested_appended_once_and_leave_existing_folds_alone(tmp_path) -> None:
    from nnunet_dkm.evaluation.benchmark.cases import BenchmarkError
    from nnunet_dkm.evaluation.benchmark.label_subsets import label_runs, parse_num_labelled

    cases = [f"case_{i:02d}" for i in range(12)]
    splits = [{"train": cases[:8], "val": cases[8:]}, {"train": cases[4:], "val": cases[:4]}]
    (tmp_path / "splits_final.json").write_text(json.dumps(splits))
    wanted = parse_num_labelled(["8", "2", "all", "4"])
    assert wanted == [2, 4, 8, None]
    runs = label_runs(tmp_path, "unused", [0, 1], wanted)
    written = json.loads((tmp_path / "splits_final.json").read_text())
    assert written[:2] == splits  # existing folds unchanged
    by_fold = {fold: [r for r in runs if r.fold == fold] for fold in (0, 1)}
    for fold, fold_runs in by_fold.items():
        subsets = [set(r.train_cases) for r in fold_runs]
        assert [len(s) for s in subsets] == [2, 4, 8]  # 8 of 8 is "all", the fold itself
        assert subsets[0] < subsets[1] < subsets[2] == set(splits[fold]["train"])
        assert fold_runs[-1].nnunet_fold == fold and fold_runs[-1].label == "all"
        for run in fold_runs[:-1]:
            assert written[run.nnunet_fold] == {"train": sorted(run.train_cases), "val": sorted(splits[fold]["val"])}
    assert len(written) == 2 + 4  # two subsets (2 and 4 cases) per fold
    again = label_runs(tmp_path, "unused", [0, 1], wanted)
    assert again == runs and json.loads((tmp_path / "splits_final.json").read_text()) == written
    with pytest.raises(BenchmarkError, match="only 8 labelled training cases"):
        label_runs(tmp_path, "unused", [0], [9])
    with pytest.raises(ValueError, match="--num-labelled"):
        parse_num_labelled(["0"])


def test_label_efficiency_overview_states_the_goal_per_n(tmp_path) -> None:
    from nnunet_dkm.evaluation.benchmark.label_efficiency import dkm_against, write_label_efficiency
    from nnunet_dkm.evaluation.benchmark.methods import MethodInfo

    rng = np.random.default_rng(0)
    rows = []
    for label, gain in (("4", 0.08), ("8", 0.0), ("all", 0.01)):
        for fold in (0, 1, 2):
            for case in range(10):
                base = rng.uniform(0.3, 0.6)
                for method, dice in (("vanilla", base - 0.02), ("untrained_dm_control", base),
                                     ("dkm", base + gain + rng.normal(0, 0.005))):
                    rows.append({"method": method, "fold": fold, "case": f"c{case}", "num_labelled": label,
                                 "labelled_cases": {"4": 4, "8": 8, "all": 20}[label], "dice": dice})
    per_case = pd.DataFrame(rows)
    against = dkm_against(per_case, "untrained_dm_control").set_index("num_labelled")
    assert bool(against.loc["4", "goal_met"]) and against.loc["4", "verdict"] == "better"
    assert not against.loc["8", "goal_met"] and against.loc["8", "verdict"].startswith("no detectable difference")
    assert against.loc["all", "verdict"] == "better" and not against.loc["all", "goal_met"]  # below +0.03
    methods = [MethodInfo(k, k, "pre-contrast network", "pre-contrast", k)
               for k in ("vanilla", "dkm", "untrained_dm_control")]
    text = squeeze(write_label_efficiency(tmp_path, per_case, methods, ["# header"], "title"))
    control_section = text.split("## DKM − untrained-DM control")[1].split("## DKM − vanilla")[0]
    row_of_4 = next(line for line in control_section.splitlines() if line.startswith("| 4 |"))
    assert row_of_4.startswith("| 4 | 3 | +0.08") and row_of_4.endswith("| better | yes |")
    assert (tmp_path / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    assert "goal met" in text and "| 4 | 4 | dkm |" in text


# -- command-line errors --------------------------------------------------------------------------------------------


def test_benchmark_of_an_unplanned_dataset_names_the_planning_command(tiny_raw, monkeypatch, tmp_path) -> None:
    from nnunet_dkm.evaluation.benchmark.cli import main

    monkeypatch.setenv("nnUNet_raw", str(tiny_raw.parent))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    (tmp_path / "pre").mkdir()
    with pytest.raises(SystemExit, match="nnUNetv2_plan_and_preprocess -d 994 -c 2d"):
        main(["-d", "994", "-device", "cpu"])


def test_benchmark_without_a_dm_names_the_pretraining_command(planned_phantom, monkeypatch, tmp_path) -> None:
    from conftest import PHANTOM_ID, use_nnunet_folders

    from nnunet_dkm.evaluation.benchmark.cli import main

    use_nnunet_folders(planned_phantom, monkeypatch)
    monkeypatch.setenv("nnUNet_dkm_checkpoint", str(tmp_path / "absent.pt"))
    with pytest.raises(SystemExit, match=f"nnUNetv2_dkm_pretrain -d {PHANTOM_ID} -c 2d"):
        main(["-d", str(PHANTOM_ID), "-device", "cpu", "-o", str(tmp_path / "out")])


def test_ablation_levels_are_checked() -> None:
    from nnunet_dkm.evaluation.benchmark.cli import parse_args

    assert parse_args(["-d", "1", "--ablation", "-device", "cpu"]).ablation == ["1", "2", "3", "4", "1234"]
    with pytest.raises(SystemExit):
        parse_args(["-d", "1", "--ablation", "15", "-device", "cpu"])


def test_benchmark_help_says_what_each_method_row_answers(capsys) -> None:
    from nnunet_dkm.evaluation.benchmark.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["-h"])
    epilog = capsys.readouterr().out.split("what each --methods row answers:")[1]
    for method in ("vanilla", "dkm", "untrained-dm", "pre-only-dm", "regression-dm", "virtual-contrast", "oracle",
                   "baselines"):
        assert f"\n  {method} " in epilog
    assert "kinetics without diffusion" in epilog and "diffusion without kinetics" in epilog


def test_without_a_test_split_each_fold_is_scored_on_its_validation_cases(tiny_raw) -> None:
    import shutil

    from nnunet_dkm.evaluation.benchmark.cases import evaluation_cases

    ids = sorted(p.name[: -len(".nii.gz")] for p in (tiny_raw / "labelsTr").glob("*.nii.gz"))
    splits = [{"train": ids[1:], "val": ids[:1]}, {"train": ids[:1] + ids[2:], "val": ids[1:2]}]
    text, cases = evaluation_cases(tiny_raw, splits, [0, 1], ".nii.gz", 1)
    assert "test split" in text and [c.case_id for c in cases[0]] == [c.case_id for c in cases[1]]
    for folder in ("labelsTs", "imagesTs", "kineticsTs"):
        shutil.rmtree(tiny_raw / folder)
    text, cases = evaluation_cases(tiny_raw, splits, [0, 1], ".nii.gz", 1)
    assert "validation" in text
    assert [c.case_id for c in cases[0]] == ids[:1] and [c.case_id for c in cases[1]] == ids[1:2]
    case = cases[1][0]
    assert case.pre.parent.name == "imagesTr" and case.post.name == f"{case.case_id}_0001.nii.gz"


def test_benchmark_report_states_how_it_was_made_and_its_tables(tmp_path) -> None:
    from nnunet_dkm.evaluation.benchmark.methods import MethodInfo
    from nnunet_dkm.evaluation.benchmark.outputs import write_outputs
    from nnunet_dkm.evaluation.benchmark.report import BenchmarkContext

    rng = np.random.default_rng(0)
    rows = [{"method": method, "fold": fold, "repeat": repeat, "case": f"c{case}", "dice": dice,
             "jaccard": dice / (2 - dice), "hd95_mm": 5.0, "empty_prediction": False}
            for fold in (0, 1) for repeat in (0, 1) for case in range(4)
            for method, dice in (("vanilla", rng.uniform(0.4, 0.5)), ("dkm", rng.uniform(0.5, 0.6)))]
    methods = [MethodInfo(k, k.upper(), "pre-contrast network", "pre-contrast", f"nnUNetTrainer_{k}")
               for k in ("vanilla", "dkm")]
    context = BenchmarkContext("Dataset9_X", "synthetic", "2d", "nnUNetPlans", "5-fold", [0, 1], "bench -d 9",
                               "2026-01-01 10:00", "host", notes=["a note"], repeats=2, dms=["kinetic DM (x.pt)"])
    text = squeeze(write_outputs(tmp_path, context, methods, pd.DataFrame(rows), {0: []}, {}, ".nii.gz"))
    assert text.startswith("# DKM benchmark: Dataset9_X, 2d\n\n- **Command:** `bench -d 9`\n"
                           "- **Date / machine:** 2026-01-01 10:00; host\n- **Commit:** ")
    assert ("- **Split:** 5-fold; folds 0, 1, 2 training run(s) per fold and method; plans nnUNetPlans\n"
            "- **Trainers:** VANILLA: `nnUNetTrainer_vanilla`; DKM: `nnUNetTrainer_dkm`\n"
            "- kinetic DM (x.pt)\n- a note\n") in text
    assert "| method | role | input | made by | n | Dice | Jaccard | HD95 (mm) | empty predictions |" in text
    assert "| DKM | pre-contrast network | pre-contrast | `nnUNetTrainer_dkm` | 16 | 0.5" in text
    assert "| method | fold 0 / r 0 | fold 0 / r 1 | fold 1 / r 0 | fold 1 / r 1 |" in text
    assert "| DKM − VANILLA | 4 | +0.083 | [+0.052, +0.114] | [+0.059, +0.101] | better |" in text
    assert "| DKM − VANILLA | hd95_mm | 16 | +0.000 | 0.000 | 0 / 16 / 0 | n/a |" in text
