"""The probe itself: do a DM's frozen features know where tumours are?

For every row (pre-contrast intensity, filter bank, untrained DM and each given DM at each setting, enhancement
ceiling) the same balanced body pixels of the fit cases train the same classifiers; each row's probability
threshold is chosen on the selection cases; Dice, ROC-AUC and average precision are measured on the report cases.
Nothing is tuned on the report cases.

Features are computed one family (one DM forward, or the baselines) at a time and slice chunk by chunk, and each
family's probability maps are scored and dropped before the next, so memory stays bounded on large grids.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nnunet_dkm.diffusion.checkpoint import DiffusionCheckpoint, check_plans_identity, load_checkpoint
from nnunet_dkm.diffusion.config import DiffusionConfig
from nnunet_dkm.diffusion.network import build_network
from nnunet_dkm.preprocessing import PlannedDataset, find_pretraining_exams, find_test_exams
from nnunet_dkm.probe.cases import CaseSplit, balanced_sample, load_split_cases, split_cases, total_pixels
from nnunet_dkm.probe.features import BaselineFeatures, DmFeatures, FeatureFamily, RowSpec, forward_ms_per_slice
from nnunet_dkm.probe.scoring import Preview, ProbeOptions, evaluate_family, fit_family, preview_slices
from nnunet_dkm.probe.settings import DmSetting, ProbeError, group_by_forward

UNTRAINED = "untrained"
PER_CASE_COLUMNS = ("row", "kind", "model", "setting", "classifier", "case", "dice", "auc", "average_precision",
                    "threshold", "selection_dice")


@dataclass(frozen=True)
class CheckpointInfo:
    """A probed DM checkpoint: its file and training steps (``metadata['steps']``, None where not recorded)."""

    name: str
    path: Path
    steps: int | None


@dataclass
class ProbeResult:
    """Everything the probe measured.

    Attributes:
        per_case: one row per (row, classifier, report case), columns ``PER_CASE_COLUMNS``.
        selection: one row per (row, classifier): threshold and mean selection Dice.
        costs: one row per setting: ``setting``, ``forward_ms_per_slice`` (empty where not timed).
        rows: the probe's rows in table order.
        split: the case split.
        checkpoints: the probed DMs.
        settings: the probed settings.
        sampled_pixels: training pixels (both classes) over all fit cases.
        previews: report slices with probability maps, for the figure.
        notes: sentences the report must show (e.g. a missing test split).
    """

    per_case: pd.DataFrame
    selection: pd.DataFrame
    costs: pd.DataFrame
    rows: list[RowSpec]
    split: CaseSplit
    checkpoints: list[CheckpointInfo]
    settings: list[DmSetting]
    sampled_pixels: int
    previews: list[Preview]
    notes: list[str]


def load_probed_checkpoints(dataset: PlannedDataset, checkpoints: Mapping[str, Path],
                            settings: Sequence[DmSetting]) -> list[tuple[CheckpointInfo, DiffusionCheckpoint]]:
    """Read every checkpoint, check it against the plans, the others' architecture and the settings."""
    if not checkpoints:
        raise ProbeError("no DM checkpoint to probe")
    if UNTRAINED in checkpoints:
        raise ProbeError(f"the name {UNTRAINED!r} is reserved for the untrained-DM control; rename that checkpoint")
    loaded = []
    for name, path in checkpoints.items():
        checkpoint = load_checkpoint(path)
        check_plans_identity(checkpoint.plans_identity, dataset.plans_manager.plans, dataset.configuration, path)
        if loaded and architecture(checkpoint.config) != architecture(loaded[0][1].config):
            raise ProbeError(f"{path}: its DM architecture differs from {loaded[0][0].path}'s; probe checkpoints of "
                             "one architecture together (the untrained control is built from it)")
        steps = checkpoint.metadata.get("steps")
        loaded.append((CheckpointInfo(name, Path(path), int(steps) if steps is not None else None), checkpoint))
    for setting in settings:
        setting.check_against(loaded[0][1].config)
    return loaded


def architecture(config: DiffusionConfig) -> dict:
    """The fields of a DM config that shape its network (not what it was trained to output: objective, target,
    prediction type), so that the controls of another objective are probed beside the DM."""
    values = config.to_dict()
    for name in ("objective", "target", "prediction_type", "regression_timestep"):
        values.pop(name)
    return values


def untrained_network(config: DiffusionConfig, seed: int) -> torch.nn.Module:
    """A freshly initialised DM of ``config`` (the untrained control), the same for the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(config).eval()


def feature_families(loaded: Sequence[tuple[CheckpointInfo, DiffusionCheckpoint]], settings: Sequence[DmSetting],
                     with_ceiling: bool, options: ProbeOptions) -> list[FeatureFamily]:
    """The baselines, then per DM forward the untrained DM and every checkpoint."""
    device = torch.device(options.device)
    reference = loaded[0][1]
    control = untrained_network(reference.config, options.seed)
    networks = [(UNTRAINED, reference, control)] + [(info.name, checkpoint, checkpoint.build_network(info.path))
                                                    for info, checkpoint in loaded]
    families: list[FeatureFamily] = [BaselineFeatures(with_ceiling)]
    for group in group_by_forward(settings).values():
        families += [DmFeatures(name, checkpoint.config, checkpoint.input_scaling, network, group, device,
                                options.batch_size) for name, checkpoint, network in networks]
    return families


def setting_costs(loaded: Sequence[tuple[CheckpointInfo, DiffusionCheckpoint]], settings: Sequence[DmSetting],
                  slice_shape: tuple[int, int], options: ProbeOptions) -> pd.DataFrame:
    """Forward time per slice of each setting, with the first checkpoint's DM."""
    if not options.time_settings:
        return pd.DataFrame({"setting": [s.code for s in settings], "forward_ms_per_slice": np.nan})
    info, checkpoint = loaded[0]
    network = checkpoint.build_network(info.path)
    device = torch.device(options.device)
    costs = [forward_ms_per_slice(checkpoint.config, checkpoint.input_scaling, network, setting, slice_shape, device)
             for setting in tqdm(settings, desc="timing settings", unit="setting", disable=not options.progress,
                                 leave=False)]
    return pd.DataFrame({"setting": [s.code for s in settings], "forward_ms_per_slice": costs})


def run_probe(dataset: PlannedDataset, checkpoints: Mapping[str, Path], settings: Sequence[DmSetting],
              num_labelled: int | None = None, options: ProbeOptions | None = None) -> ProbeResult:
    """Probe the frozen features of ``checkpoints`` (name -> DM checkpoint file, e.g. ``{"pretrained": path}`` or
    snapshots ``{"step500": ...}``) at ``settings`` on ``dataset`` (a 2d configuration), against the untrained DM,
    the intensity, the filter bank and the enhancement ceiling.

    ``num_labelled`` overrides ``options.num_labelled`` (default options: :class:`ProbeOptions`). Raises
    :class:`ProbeError` (and the checkpoint and preprocessing errors) with one-line messages.

    Returns:
        :class:`ProbeResult`; its ``per_case`` DataFrame has one line per (row, classifier, report case) with
        columns ``row, kind, model, setting, classifier, case, dice, auc, average_precision, threshold,
        selection_dice``.
    """
    options = options if options is not None else ProbeOptions()
    if num_labelled is not None:
        options = replace(options, num_labelled=num_labelled)
    if dataset.spatial_dims != 2:
        raise ProbeError(f"configuration {dataset.configuration} is 3D; the probe works on 2D slices: use -c 2d")
    loaded = load_probed_checkpoints(dataset, checkpoints, settings)
    raw = dataset.raw_folder
    labelled = [exam.case_id for exam in find_pretraining_exams(raw)
                if exam.source == "labelled" and exam.label_file is not None]
    test = [exam.case_id for exam in find_test_exams(raw)]
    split = split_cases(labelled, test, options.num_labelled, options.num_selection, options.seed)
    notes = [] if test else ["the dataset has no test split (imagesTs/labelsTs): the report set is held-out labelled "
                             "training cases, never used to fit or select"]
    dataset.dkm_folder.mkdir(parents=True, exist_ok=True)
    # the test cases' images, stored beside the DM cache while the probe reads them (removed on return or error)
    with tempfile.TemporaryDirectory(prefix="probe_test_cases_", dir=dataset.dkm_folder) as store:
        cases = load_split_cases(dataset, split, options.progress, Path(store))
        fit_cases = [cases[c] for c in split.fit]
        selection = [cases[c] for c in split.selection]
        report = [cases[c] for c in split.report]
        with_ceiling = all(case.num_post_phases > 0 for case in [*selection, *report])
        if not with_ceiling:
            notes.append("no enhancement ceiling: some selection or report cases have no post-contrast phases")
        samples = [balanced_sample(case, options.pixels_per_class, options.seed, index)
                   for index, case in enumerate(fit_cases)]
        if total_pixels(samples) == 0:
            raise ProbeError(f"no tumour pixel inside the body in the {len(fit_cases)} fit case(s) "
                             f"({', '.join(split.fit)}): nothing to train the probe on")
        previews = preview_slices(report, options.preview_cases)
        families = feature_families(loaded, settings, with_ceiling, options)
        records: list[dict] = []
        selection_records: list[dict] = []
        for family in tqdm(families, desc="probing", unit="feature set", disable=not options.progress):
            classifiers = fit_family(family, fit_cases, samples, options)
            new_records, new_selection = evaluate_family(family, classifiers, selection, report, previews, options)
            records += new_records
            selection_records += new_selection
        rows = [row for family in families for row in family.rows]
        rows = sorted(rows, key=lambda row: _row_order(row, settings))
        costs = setting_costs(loaded, settings, tuple(report[0].images.shape[2:]), options)
    rank = {row.label: index for index, row in enumerate(rows)}
    per_case = pd.DataFrame(records, columns=list(PER_CASE_COLUMNS))
    per_case = per_case.sort_values("row", key=lambda labels: labels.map(rank), kind="stable").reset_index(drop=True)
    return ProbeResult(per_case, pd.DataFrame(selection_records), costs, rows, split, [info for info, _ in loaded],
                       list(settings), total_pixels(samples), previews, notes)


def _row_order(row: RowSpec, settings: Sequence[DmSetting]) -> tuple:
    """Table order: intensity, filter bank, then per setting the untrained and the probed DMs, then the ceiling."""
    codes = [s.code for s in settings]
    kind_rank = {"intensity": 0, "filter_bank": 1, "untrained_dm": 2, "dm": 2, "ceiling": 3}[row.kind]
    setting_rank = codes.index(row.setting) if row.setting in codes else 0
    return kind_rank, setting_rank, row.kind != "untrained_dm"
