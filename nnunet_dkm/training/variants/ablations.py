"""DKM variants for the paper's ablations and our controls, each with its short (``_debug``, ``_demo``) versions.

- ``nnUNetTrainerDKM_f{levels}``: every non-empty subset of the DM feature levels f1..f4 (paper Table 2);
  ``nnUNetTrainerDKM`` itself is f34.
- ``nnUNetTrainerDKM_modeB`` (pure noise at t = T-1), ``nnUNetTrainerDKM_modeC`` (features of a 5-step DDIM
  synthetic post-contrast image at t = 0), ``nnUNetTrainerDKM_encoder`` (encoder instead of decoder features).
- ``nnUNetTrainerDKM_bf16``: the frozen DM under bfloat16 autocast (``benchmarks/results_feature_precision.md``).
- ``nnUNetTrainerDKM_merge3x3``: fusions merge with the stage's own 3x3 kernel instead of 1x1 (as before the
  1x1 default; ``benchmarks/results_segmentation_speed.md`` has the cost of each).
- ``nnUNetTrainerDKMPaper``: the paper's segmentation module and optimiser (see ``paper.py``).
- ``nnUNetTrainerDKM_untrainedDM``: the control that separates learned kinetics from extra capacity: the same
  network fed by a randomly initialised, frozen DM of the same architecture.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations

from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM
from nnunet_dkm.training.variants.paper import nnUNetTrainerDKMPaper
from nnunet_dkm.training.variants.short_schedules import SCHEDULES, make_short

_DEFAULT = nnUNetTrainerDKM.kinetic_features


def _variant(name: str, doc: str, **attributes) -> type:
    return type(name, (nnUNetTrainerDKM,), {"__doc__": doc, "__module__": __name__, **attributes})


VARIANTS: dict[str, type] = {}
for size in range(1, 5):
    for levels in combinations((1, 2, 3, 4), size):
        suffix = "".join(map(str, levels))
        VARIANTS[f"nnUNetTrainerDKM_f{suffix}"] = _variant(
            f"nnUNetTrainerDKM_f{suffix}", f"DKM with DM feature levels {levels}.",
            kinetic_features=replace(_DEFAULT, levels=levels),
        )
VARIANTS["nnUNetTrainerDKM_modeB"] = _variant(
    "nnUNetTrainerDKM_modeB", "DKM with features of pure noise at t = T-1 (extraction mode B).",
    kinetic_features=replace(_DEFAULT, mode="B"))
VARIANTS["nnUNetTrainerDKM_modeC"] = _variant(
    "nnUNetTrainerDKM_modeC", "DKM with features of a 5-step DDIM synthetic post-contrast image (mode C).",
    kinetic_features=replace(_DEFAULT, mode="C"))
VARIANTS["nnUNetTrainerDKM_encoder"] = _variant(
    "nnUNetTrainerDKM_encoder", "DKM with DM encoder features instead of decoder features.",
    kinetic_features=replace(_DEFAULT, source="encoder"))
VARIANTS["nnUNetTrainerDKM_bf16"] = _variant(
    "nnUNetTrainerDKM_bf16", "DKM with the frozen DM under bfloat16 autocast (GPUs, CPUs with bf16 support).",
    kinetic_features=replace(_DEFAULT, autocast=True))
VARIANTS["nnUNetTrainerDKM_merge3x3"] = _variant(
    "nnUNetTrainerDKM_merge3x3", "DKM whose fusions merge with the stage's own (3x3) kernel instead of 1x1.",
    fusion_merge_kernel_size=None)
VARIANTS["nnUNetTrainerDKM_untrainedDM"] = _variant(
    "nnUNetTrainerDKM_untrainedDM", "Control: DKM network fed by a randomly initialised, frozen DM.",
    use_pretrained_dm=False)

VARIANTS["nnUNetTrainerDKMPaper"] = nnUNetTrainerDKMPaper

for _base in [nnUNetTrainerDKM, *list(VARIANTS.values())]:
    for _schedule in SCHEDULES:
        _short = make_short(_base, _schedule)
        _short.__module__ = __name__
        VARIANTS[_short.__name__] = _short

globals().update(VARIANTS)
__all__ = sorted(VARIANTS)
