"""What the probe is asked to do and what it measured: options, probed checkpoints, preview slices and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nnunet_dkm.probe.cases import CaseSplit
from nnunet_dkm.probe.classifiers import CLASSIFIERS, ClassifierSettings
from nnunet_dkm.probe.features import RowSpec
from nnunet_dkm.probe.settings import DmSetting

UNTRAINED = "untrained"
PER_CASE_COLUMNS = ("row", "kind", "model", "setting", "classifier", "case", "dice", "auc", "average_precision",
                    "threshold", "selection_dice")


@dataclass(frozen=True)
class ProbeOptions:
    """How the probe runs.

    Attributes:
        num_labelled: fit cases (default: every labelled training case outside the selection (and report) set).
        num_selection: selection cases (default: a quarter of the training cases, at least 2).
        seed: seed of the split, the pixel sample, the untrained DM and the classifiers.
        pixels_per_class: cap on tumour (and as many non-tumour) body pixels per fit case.
        classifiers: which classifiers (``logistic``, ``mlp``).
        classifier_settings: their training.
        device: where the DMs run (classifiers always train on the CPU).
        batch_size: slices per DM forward.
        chunk_slices: slices whose features are held in memory at once.
        preview_cases: report cases whose probability maps (slice with most tumour) are kept for the figure.
        time_settings: measure each setting's forward time per slice.
        progress: show tqdm progress bars.
    """

    num_labelled: int | None = None
    num_selection: int | None = None
    seed: int = 0
    pixels_per_class: int = 1000
    classifiers: tuple[str, ...] = CLASSIFIERS
    classifier_settings: ClassifierSettings = ClassifierSettings()
    device: str = "cpu"
    batch_size: int = 16
    chunk_slices: int = 32
    preview_cases: int = 3
    time_settings: bool = True
    progress: bool = True


@dataclass(frozen=True)
class CheckpointInfo:
    """A probed DM checkpoint: its file and training steps (``metadata['steps']``, None where not recorded)."""

    name: str
    path: Path
    steps: int | None


@dataclass
class Preview:
    """One report slice for the figure: the pre-contrast slice and label (y, x), and per (row, classifier) the
    probability map (y, x) (0 outside the body)."""

    case_id: str
    z: int
    pre: np.ndarray
    seg: np.ndarray
    probabilities: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


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
