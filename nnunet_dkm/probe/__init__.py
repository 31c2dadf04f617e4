"""Asking the DM directly: pixel probes on frozen DM features (``nnUNetv2_dkm_probe``).

``run.run_probe(dataset, {"pretrained": path}, settings.parse_settings(["default"]))`` returns a ``run.ProbeResult``
whose ``per_case`` DataFrame has one line per (row, classifier, report case); ``report.write_results`` writes the
report.

Modules, one job each: ``settings`` (the compact DM setting syntax, the probe's error), ``cases`` (cases in
preprocessed space, the fit / selection / report split, balanced body pixels, where the DM and the results are),
``features`` (intensity, filter bank, ceiling and DM feature maps, the forward cost per setting), ``scoring``
(scikit-learn classifiers, thresholds, Dice / ROC-AUC / AP), ``run`` (the probe), ``report`` (tables, figure, files)
and ``cli``.
"""
