"""Asking the DM directly: pixel probes on frozen DM features (``nnUNetv2_dkm_probe``).

``run_probe(dataset, {"pretrained": path}, parse_settings(["default"]))`` returns a :class:`ProbeResult` whose
``per_case`` DataFrame has one line per (row, classifier, report case); ``write_results`` writes the report.

Modules, one job each: ``settings`` (the compact DM setting syntax), ``cases`` (cases in preprocessed space and the
fit / selection / report split), ``sampling`` (balanced body pixels), ``features`` (intensity, filter bank, ceiling
and DM feature maps), ``classifiers`` (logistic regression, MLP), ``metrics`` (Dice, ROC-AUC, AP, thresholds),
``timing`` (forward cost per setting), ``results`` (options and results), ``scoring`` (train and score one
feature family), ``run`` (the probe), ``tables`` / ``figure`` / ``outputs`` (the report),
``paths`` and ``cli``.
"""

from nnunet_dkm.probe.classifiers import CLASSIFIERS, ClassifierSettings, PixelClassifier, fit_classifier
from nnunet_dkm.probe.errors import ProbeError
from nnunet_dkm.probe.metrics import BodyPixels, CaseScores, case_scores, choose_threshold
from nnunet_dkm.probe.outputs import ProbeFiles, write_results
from nnunet_dkm.probe.results import CheckpointInfo, ProbeOptions, ProbeResult
from nnunet_dkm.probe.run import run_probe
from nnunet_dkm.probe.settings import DmSetting, default_setting, parse_setting, parse_settings, settings_grid
from nnunet_dkm.probe.tables import ReportContext, chosen_settings, comparisons, summary_table

__all__ = [
    "CLASSIFIERS",
    "BodyPixels",
    "CaseScores",
    "CheckpointInfo",
    "ClassifierSettings",
    "DmSetting",
    "PixelClassifier",
    "ProbeError",
    "ProbeFiles",
    "ProbeOptions",
    "ProbeResult",
    "ReportContext",
    "case_scores",
    "choose_threshold",
    "chosen_settings",
    "comparisons",
    "default_setting",
    "fit_classifier",
    "parse_setting",
    "parse_settings",
    "run_probe",
    "settings_grid",
    "summary_table",
    "write_results",
]
