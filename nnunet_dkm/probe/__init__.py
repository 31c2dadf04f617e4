"""Asking the DM directly: pixel probes on frozen DM features (``nnUNetv2_dkm_probe``).

``run_probe(dataset, {"pretrained": path}, parse_settings(["default"]))`` returns a :class:`ProbeResult` whose
``per_case`` DataFrame has one line per (row, classifier, report case); ``write_results`` writes the report.

Modules, one job each: ``settings`` (the compact DM setting syntax, the probe's error), ``cases`` (cases in
preprocessed space, the fit / selection / report split, balanced body pixels, where the DM and the results are),
``features`` (intensity, filter bank, ceiling and DM feature maps, the forward cost per setting), ``scoring``
(scikit-learn classifiers, thresholds, Dice / ROC-AUC / AP), ``run`` (the probe), ``report`` (tables, figure, files)
and ``cli``.
"""

from nnunet_dkm.probe.report import ProbeFiles, ReportContext, comparisons, summary_table, write_results
from nnunet_dkm.probe.run import ProbeResult, run_probe
from nnunet_dkm.probe.scoring import ProbeOptions
from nnunet_dkm.probe.settings import ProbeError, parse_setting, parse_settings, settings_grid

__all__ = [
    "ProbeError",
    "ProbeFiles",
    "ProbeOptions",
    "ProbeResult",
    "ReportContext",
    "comparisons",
    "parse_setting",
    "parse_settings",
    "run_probe",
    "settings_grid",
    "summary_table",
    "write_results",
]
