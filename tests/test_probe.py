"""nnUNetv2_dkm_probe: settings syntax, split, classifier / metric core, determinism, errors and an end-to-end run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PHANTOM_ID, randomised_network, squeeze, tiny_config, use_nnunet_folders

from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint, plans_identity, save_checkpoint
from nnunet_dkm.diffusion.config import InputScaling
from nnunet_dkm.preprocessing import PlannedDataset
from nnunet_dkm.probe.cases import ProbeCase, balanced_sample, split_cases
from nnunet_dkm.probe.cli import main
from nnunet_dkm.probe.features import RowSpec
from nnunet_dkm.probe.run import run_probe
from nnunet_dkm.probe.scoring import ProbeOptions, evaluate_family, fit_family
from nnunet_dkm.probe.settings import (
    ProbeError,
    group_by_forward,
    parse_setting,
    parse_settings,
    setting_of,
    settings_grid,
)
from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM

FAST = ProbeOptions(time_settings=False, progress=False)


# ---------------------------------------------------------------------------------------------------------------------
# settings and split


def test_setting_syntax_grid_and_default() -> None:
    setting = parse_setting("A250:decoder:34")
    assert (setting.mode, setting.number, setting.source, setting.levels) == ("A", 250, "decoder", (3, 4))
    assert parse_setting("B:decoder:1234").code == "B:decoder:1234"
    assert parse_setting("C5:encoder:3").feature_config().ddim_steps == 5
    assert parse_setting("A:encoder:43").code == "A50:encoder:34"  # the default t*
    for bad in ("A250:decoder", "D1:decoder:3", "B7:decoder:3", "A250:middle:3", "A250:decoder:0", "C0:decoder:3"):
        with pytest.raises(ProbeError, match="unknown DM setting"):
            parse_setting(bad)
    grid = settings_grid()
    assert len(grid) == 84 and len(set(grid)) == 84
    assert len(group_by_forward(grid)) == 14  # one DM forward per (mode, t*, source)
    default = parse_settings(["default"])
    assert default == [setting_of(nnUNetTrainerDKM.kinetic_features)]
    assert default[0].code == "B:decoder:1"  # nnUNetTrainerDKM's, chosen by the probe
    assert len(parse_settings(["default", "all"])) == 84


def test_split_is_seeded_nested_and_refuses_impossible_requests() -> None:
    labelled = [f"case{i:02d}" for i in range(12)]
    split = split_cases(labelled, ["t0", "t1"], seed=4)
    assert split == split_cases(labelled, ["t0", "t1"], seed=4)
    assert len(split.selection) == 3 and len(split.fit) == 9 and split.report == ("t0", "t1")
    smaller = split_cases(labelled, ["t0", "t1"], num_labelled=4, seed=4)
    assert smaller.selection == split.selection and smaller.fit == split.fit[:4]
    assert not set(split.fit) & set(split.selection)
    without_test = split_cases(labelled, [], seed=4)
    assert not without_test.report_is_test and len(without_test.report) == 3
    assert not set(without_test.report) & (set(without_test.fit) | set(without_test.selection))
    with pytest.raises(ProbeError, match="no labelled training case"):
        split_cases([], ["t0"])
    with pytest.raises(ProbeError, match="only 9 labelled training case"):
        split_cases(labelled, ["t0"], num_labelled=10)


# ---------------------------------------------------------------------------------------------------------------------
# classifier and metric core on hand-made cases


class HandMadeFeatures:
    """Two rows: ``label`` (the label itself, one channel) and ``noise`` (two channels of noise)."""

    def __init__(self, noise: dict[str, np.ndarray]) -> None:
        self.rows = [RowSpec("label", "filter_bank"), RowSpec("noise", "filter_bank")]
        self.noise = noise
        self.name = "hand-made"

    def extract(self, case: ProbeCase, slices: slice) -> dict[str, np.ndarray]:
        return {"label": case.seg[slices][None].astype(np.float32), "noise": self.noise[case.case_id][:, slices]}


def hand_made_case(index: int) -> ProbeCase:
    rng = np.random.default_rng(index)
    seg = np.zeros((6, 32, 32), bool)
    y, x = rng.integers(4, 14, size=2)
    seg[1:5, y:y + 14, x:x + 12] = True  # about a fifth of the image
    images = rng.normal(size=(1, 6, 32, 32)).astype(np.float32)
    return ProbeCase(f"hand{index}", images, seg, np.ones_like(seg))


def test_probe_core_finds_a_feature_that_is_the_label_and_not_noise() -> None:
    cases = [hand_made_case(i) for i in range(7)]
    noise = {case.case_id: np.random.default_rng(100 + i).normal(size=(2, 6, 32, 32)).astype(np.float32)
             for i, case in enumerate(cases)}
    family = HandMadeFeatures(noise)
    fit, selection, report = cases[:3], cases[3:4], cases[4:]
    samples = [balanced_sample(case, 300, 0, i) for i, case in enumerate(fit)]
    assert all(sample.labels.sum() == len(sample.labels) / 2 == 300 for sample in samples)
    classifiers = fit_family(family, fit, samples, FAST)
    records, _ = evaluate_family(family, classifiers, selection, report, [], FAST)
    table = pd.DataFrame(records)
    label = table[table["row"] == "label"]
    assert np.allclose(label["dice"], 1.0) and np.allclose(label["auc"], 1.0)
    assert np.allclose(label["average_precision"], 1.0)
    noisy = table[table["row"] == "noise"]
    prevalence = np.mean([case.seg.mean() for case in report])
    assert (noisy["dice"] <= 2 * prevalence / (1 + prevalence) + 0.05).all()  # no better than "all tumour"
    assert (abs(noisy["auc"] - 0.5) < 0.05).all()
    assert (abs(noisy["average_precision"] - prevalence) < 0.05).all()


# ---------------------------------------------------------------------------------------------------------------------
# on the planned phantom


@pytest.fixture(scope="module")
def tiny_dm(planned_phantom: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random DM checkpoint for the phantom's 2d plans (outside the dataset's dkm folder)."""
    plans = json.loads(next(planned_phantom["nnUNet_preprocessed"].glob(f"Dataset{PHANTOM_ID}_*/nnUNetPlans.json"))
                       .read_text())
    config = tiny_config(num_post_phases=2)
    path = tmp_path_factory.mktemp("probe_dm") / "dm_checkpoint.pt"
    save_checkpoint(DiffusionCheckpoint(config, randomised_network(config, seed=1).state_dict(),
                                        InputScaling(0.5, 0.0), plans_identity(plans, "2d"), metadata={"steps": 7}),
                    path)
    return path


@pytest.fixture
def phantom(planned_phantom: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    use_nnunet_folders(planned_phantom, monkeypatch)
    monkeypatch.delenv("nnUNet_dkm_checkpoint", raising=False)
    return planned_phantom


def command_error(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "Traceback" not in message
    return message


def test_probe_is_deterministic_for_a_seed(phantom: dict[str, Path], tiny_dm: Path) -> None:
    dataset = PlannedDataset.load(PHANTOM_ID, "2d")
    settings = parse_settings(["A250:decoder:34"])
    first = run_probe(dataset, {"pretrained": tiny_dm}, settings, options=FAST)
    second = run_probe(dataset, {"pretrained": tiny_dm}, settings, options=FAST)
    pd.testing.assert_frame_equal(first.per_case, second.per_case)
    pd.testing.assert_frame_equal(first.selection, second.selection)
    assert first.sampled_pixels == second.sampled_pixels > 0


def test_cases_are_read_from_disk_and_the_test_cases_store_is_removed(phantom: dict[str, Path], tiny_dm: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    import nnunet_dkm.probe.run as probe_run
    from nnunet_dkm.preprocessing import find_test_exams
    from nnunet_dkm.preprocessing.cache_storage import CachedArray
    from nnunet_dkm.probe.cases import load_raw_case, load_split_cases

    dataset = PlannedDataset.load(PHANTOM_ID, "2d")
    seen: list[ProbeCase] = []

    def remembering(*args) -> dict[str, ProbeCase]:
        cases = load_split_cases(*args)
        seen.extend(cases.values())
        return cases

    monkeypatch.setattr(probe_run, "load_split_cases", remembering)
    run_probe(dataset, {"pretrained": tiny_dm}, parse_settings(["A250:decoder:34"]), options=FAST)
    # memory flat in the cases: images and masks stay on disk
    assert seen and all(isinstance(array, CachedArray) for case in seen for array in (case.images, case.seg, case.body))
    assert not list(dataset.dkm_folder.glob("probe_test_cases_*"))

    exam = find_test_exams(dataset.raw_folder)[0]
    in_memory, on_disk = load_raw_case(exam, dataset), load_raw_case(exam, dataset, tmp_path)
    np.testing.assert_allclose(on_disk.images[:, :], in_memory.images, rtol=1e-3, atol=2e-3)  # float16, as cached
    assert np.array_equal(on_disk.seg, in_memory.seg) and np.array_equal(on_disk.body, in_memory.body)
    masks = zip(on_disk.masks(), in_memory.masks(), strict=True)
    assert all(np.array_equal(stored, kept) and stored.dtype == bool for stored, kept in masks)
    assert np.array_equal(on_disk.pre_slices(slice(1, 3)), np.asarray(on_disk.images[0])[1:3])


def test_command_errors_are_one_line(phantom: dict[str, Path], tiny_dm: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere.pt"
    message = command_error(["-d", str(PHANTOM_ID), "--checkpoint", str(missing)])
    assert str(missing) in message and "nnUNetv2_dkm_pretrain -d 990 -c 2d" in message
    monkeypatch.setenv("nnUNet_dkm_checkpoint", str(missing))
    message = command_error(["-d", str(PHANTOM_ID)])
    assert "no DM checkpoint" in message and "nnUNetv2_dkm_pretrain -d 990 -c 2d" in message
    monkeypatch.delenv("nnUNet_dkm_checkpoint")
    message = command_error(["-d", str(PHANTOM_ID), "--checkpoint", str(tiny_dm), "--num-labelled", "5"])
    assert "--num-labelled 5: only 1 labelled training case(s)" in message and "3 labelled" in message
    message = command_error(["-d", str(PHANTOM_ID), "--checkpoint", str(tiny_dm), "--settings", "A250:decoder"])
    assert "unknown DM setting 'A250:decoder'" in message
    message = command_error(["-d", str(PHANTOM_ID), "--checkpoint", str(tiny_dm), "--settings", "B:decoder:5"])
    assert "level 5" in message

    # a copy of the dataset without its dkm folder: no DM at the default place; then without training labels
    copy = {name: tmp_path / name for name in phantom}
    for name, folder in phantom.items():
        shutil.copytree(folder, copy[name], ignore=shutil.ignore_patterns("dkm"))
    use_nnunet_folders(copy, monkeypatch)
    message = command_error(["-d", str(PHANTOM_ID)])
    default = next(copy["nnUNet_preprocessed"].glob(f"Dataset{PHANTOM_ID}_*")) / "dkm" / "2d" / "dm_checkpoint.pt"
    assert f"no DM checkpoint at {default}" in message and "nnUNetv2_dkm_pretrain -d 990 -c 2d" in message
    for label in (next(copy["nnUNet_raw"].glob(f"Dataset{PHANTOM_ID}_*")) / "labelsTr").iterdir():
        label.unlink()
    message = command_error(["-d", str(PHANTOM_ID), "--checkpoint", str(tiny_dm)])
    assert "no labelled training case" in message


def test_command_end_to_end_writes_every_row(phantom: dict[str, Path], tiny_dm: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "probe"
    main(["-d", str(PHANTOM_ID), "-c", "2d", "--checkpoint", str(tiny_dm), "--settings", "A250:decoder:34",
          "B:decoder:34", "-o", str(output), "--seed", "1"])
    printed = capsys.readouterr().out
    rows = ["intensity", "filter bank", "untrained DM A250:decoder:34", "pretrained DM A250:decoder:34",
            "untrained DM B:decoder:34", "pretrained DM B:decoder:34", "enhancement ceiling"]
    table = pd.read_csv(output / "results.csv")
    assert list(dict.fromkeys(table["row"])) == rows
    assert len(table) == len(rows) * 2 * 1  # rows x classifiers x report cases
    assert table["dice"].between(0, 1).all() and table["auc"].between(0, 1).all()
    assert table.loc[table["setting"].notna(), "forward_ms_per_slice"].gt(0).all()
    ceiling = table[table["row"] == "enhancement ceiling"]
    assert ceiling["auc"].min() > 0.9  # the real enhancement defines the label
    report = squeeze((output / "results.md").read_text())
    for row in rows:
        assert f"| {row} |" in report and row in printed
    for text in ("nnUNetv2_dkm_probe -d 990", "7 training steps", "fit 1 labelled", "selection 2",
                 "report 1 (test split)", "## Paired comparisons", "## Setting chosen on the selection split"):
        assert text in report
    assert (output / "probe.png").stat().st_size > 10_000


def test_case_interval_is_the_t_interval_of_the_paired_differences() -> None:
    from scipy import stats

    from nnunet_dkm.evaluation.statistics import paired_comparison
    from nnunet_dkm.probe.report import case_interval

    differences = np.array([0.10, 0.25, -0.05, 0.30, 0.15])
    per_case = pd.DataFrame({"case": [*range(5), *range(5)], "method": ["a"] * 5 + ["b"] * 5,
                             "dice": [*(0.5 + differences), *([0.5] * 5)]})
    expected = stats.t.interval(0.95, 4, loc=differences.mean(), scale=stats.sem(differences))
    assert np.allclose(case_interval(paired_comparison(per_case, "a", "b")), expected)
    assert all(np.isnan(case_interval(paired_comparison(per_case[per_case["case"] == 0], "a", "b"))))
