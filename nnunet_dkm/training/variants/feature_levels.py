"""DKM with other DM feature levels: every non-empty subset of f1..f4 (the paper's Table 2).

Level l is read at 1 / 2^(l-1) of the patch size, in the default extraction mode (B); ``_f1`` is
``nnUNetTrainerDKM``'s network under its ablation name.
"""

from __future__ import annotations

from dataclasses import replace

from nnunet_dkm.training.nnUNetTrainerDKM import nnUNetTrainerDKM

_DEFAULT = nnUNetTrainerDKM.kinetic_features


class nnUNetTrainerDKM_f1(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(1,))

class nnUNetTrainerDKM_f2(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(2,))

class nnUNetTrainerDKM_f3(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(3,))

class nnUNetTrainerDKM_f4(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(4,))

class nnUNetTrainerDKM_f12(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(1, 2))

class nnUNetTrainerDKM_f13(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(1, 3))

class nnUNetTrainerDKM_f14(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(1, 4))

class nnUNetTrainerDKM_f23(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(2, 3))

class nnUNetTrainerDKM_f24(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(2, 4))

class nnUNetTrainerDKM_f34(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(3, 4))

class nnUNetTrainerDKM_f123(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(1, 2, 3))

class nnUNetTrainerDKM_f124(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(1, 2, 4))

class nnUNetTrainerDKM_f134(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(1, 3, 4))

class nnUNetTrainerDKM_f234(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(2, 3, 4))

class nnUNetTrainerDKM_f1234(nnUNetTrainerDKM):
    kinetic_features = replace(_DEFAULT, levels=(1, 2, 3, 4))
