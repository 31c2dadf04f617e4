"""The benchmark's plan of methods: which trainers and rules make the rows, and in which role.

Every row is a ``Method``: a trained nnU-Net model per fold (``trainer``), or a rule without a network. Roles:
pre-contrast networks (vanilla nnU-Net, DKM and its ablations), the control (DKM fed by an untrained DM),
pre-contrast baselines (rules) and post-contrast ceilings (nnU-Net on the first post-contrast phase, on a companion
dataset; the label rule on post-contrast images).
"""

from __future__ import annotations

from dataclasses import dataclass

from nnunet_dkm.diffusion.config import KineticFeatureConfig
from nnunet_dkm.diffusion.postcontrast import DEFAULT_DDIM_STEPS, DEFAULT_ETA

DEFAULT_ABLATION = ("1", "2", "3", "4", "1234")
# nnUNetTrainerDKM's own levels: its ablation row is the DKM row itself
DKM_DEFAULT_LEVELS = "".join(map(str, KineticFeatureConfig().levels))
RULES = ("all_tissue", "intensity_window", "label_rule_post_contrast")


@dataclass(frozen=True)
class MethodInfo:
    """How a row of the tables was made."""

    key: str
    label: str
    role: str  # one of report.ROLE_COLOURS
    input: str
    made_by: str  # trainer name or rule


@dataclass(frozen=True)
class Method:
    """One row of the benchmark: a trained nnU-Net model per run, or a rule.

    ``companion``: the dataset the model trains on where it is not the benchmarked one ("oracle": the post-contrast
    companion; "virtual-contrast": pre-contrast + synthetic post-contrast). ``dm_objective``: the DM the method needs
    (its checkpoint must exist before anything trains).
    """

    info: MethodInfo
    trainer: str | None = None  # nnU-Net trainer; None for rules
    companion: str | None = None
    dm_objective: str | None = None

    @property
    def uses_dm(self) -> bool:
        return self.dm_objective is not None


# short schedules have a trainer per name suffix (training/variants/short_schedules.py; vanilla 1epoch, 5epochs and
# 10epochs are nnU-Net's own nnUNetTrainer_<n>epoch(s))
SCHEDULE_CHOICES = ("full", "debug", "demo", "1epoch", "2epochs", "5epochs", "10epochs", "20epochs", "50epochs")


@dataclass(frozen=True)
class TrainerChoice:
    """The trainers of the network rows; ``schedule`` is "full" or a short one (``SCHEDULE_CHOICES``)."""

    schedule: str = "full"
    vanilla: str | None = None
    dkm: str | None = None
    control: str | None = None
    oracle: str | None = None

    @property
    def suffix(self) -> str:
        return "" if self.schedule == "full" else f"_{self.schedule}"

    def names(self) -> dict[str, str]:
        """Trainer name per network row: the given one, else nnU-Net's / ours with the schedule's suffix."""
        return {
            "vanilla": self.vanilla or f"nnUNetTrainer{self.suffix}",
            "dkm": self.dkm or f"nnUNetTrainerDKM{self.suffix}",
            "control": self.control or f"nnUNetTrainerDKM_untrainedDM{self.suffix}",
            "pre_only": f"nnUNetTrainerDKM_preOnlyDM{self.suffix}",
            "regression": f"nnUNetTrainerDKM_regressionDM{self.suffix}",
            "virtual_contrast": self.vanilla or f"nnUNetTrainer{self.suffix}",
            "oracle": self.oracle or f"nnUNetTrainer{self.suffix}",
        }


# the virtual-contrast row's synthetic images: the sampler of nnUNetv2_dkm_synthesize_postcontrast's defaults
SYNTHESIS_DDIM_STEPS = DEFAULT_DDIM_STEPS
SYNTHESIS_ETA = DEFAULT_ETA

# --methods choices, in table order; "baselines" are the rules without a network
METHOD_CHOICES = ("vanilla", "dkm", "untrained-dm", "pre-only-dm", "regression-dm", "virtual-contrast", "oracle",
                  "baselines")
DEFAULT_METHODS = ("vanilla", "dkm", "untrained-dm", "oracle", "baselines")
# what each row answers (README and --help)
METHOD_QUESTIONS = {
    "vanilla": "how far nnU-Net gets on the pre-contrast image alone",
    "dkm": "the method: nnU-Net with the learned DM's kinetic features",
    "untrained-dm": "capacity: the same network fed by a random frozen DM (a DKM gain counts only beyond it)",
    "pre-only-dm": "diffusion without kinetics: a DM trained on pre-contrast images only",
    "regression-dm": "kinetics without diffusion: the same network regressing the post-contrast image in one step",
    "virtual-contrast": "the peer method: nnU-Net on [pre-contrast, the DM's synthetic post-contrast image]",
    "oracle": "the ceiling: nnU-Net given the real post-contrast phase",
    "baselines": "what a rule gets without a network (body mask, intensity window) and the post-contrast label rule",
}


def plan_methods(trainers: TrainerChoice, post_phase: int, selected: tuple[str, ...] = DEFAULT_METHODS,
                 ablation: tuple[str, ...] = ()) -> list[Method]:
    """The benchmark's rows of the ``selected`` methods (``METHOD_CHOICES``) and DM-level ablations, in table
    order."""
    names = trainers.names()
    pre, post = "pre-contrast", f"post-contrast {post_phase}"
    network_rows = {
        "vanilla": Method(MethodInfo("vanilla", "vanilla nnU-Net", "pre-contrast network", pre, names["vanilla"]),
                          names["vanilla"]),
        "dkm": Method(MethodInfo("dkm", "DKM", "pre-contrast network", pre, names["dkm"]), names["dkm"],
                      dm_objective="kinetic"),
        "untrained-dm": Method(MethodInfo("untrained_dm_control", "DKM, untrained DM (control)", "control", pre,
                                          names["control"]), names["control"], dm_objective="kinetic"),
        "pre-only-dm": Method(MethodInfo("pre_only_dm_control", "DKM, pre-only DM (control)", "control", pre,
                                         names["pre_only"]), names["pre_only"], dm_objective="pre-only"),
        "regression-dm": Method(MethodInfo("regression_dm_control", "DKM, regression DM (control)", "control", pre,
                                           names["regression"]), names["regression"], dm_objective="regression"),
        "virtual-contrast": Method(MethodInfo("virtual_contrast", "nnU-Net on pre + synthetic post-contrast",
                                              "pre-contrast network", f"{pre} + synthetic {post}",
                                              names["virtual_contrast"]), names["virtual_contrast"],
                                   companion="virtual-contrast", dm_objective="kinetic"),
    }
    methods = [row for key, row in network_rows.items() if key in selected]
    for levels in ablation:
        if levels == DKM_DEFAULT_LEVELS:
            continue  # that is nnUNetTrainerDKM itself
        trainer = f"nnUNetTrainerDKM_f{levels}{trainers.suffix}"
        methods.append(Method(MethodInfo(f"dkm_f{levels}", f"DKM, DM levels f{'+f'.join(levels)}",
                                         "pre-contrast network", pre, trainer), trainer, dm_objective="kinetic"))
    if "baselines" in selected:
        methods += [
            Method(MethodInfo("all_tissue", "all tissue (body mask)", "pre-contrast baseline", pre,
                              "rule: Otsu body mask")),
            Method(MethodInfo("intensity_window", "best intensity window", "pre-contrast baseline", pre,
                              "rule: intensity band fit on the fold's training cases")),
        ]
    if "oracle" in selected:
        methods.append(Method(MethodInfo("oracle_post_contrast", "nnU-Net on post-contrast (oracle)",
                                         "post-contrast ceiling", post, names["oracle"]), names["oracle"],
                              companion="oracle"))
    if "baselines" in selected:
        methods.append(Method(MethodInfo("label_rule_post_contrast", "FTV label rule on post-contrast",
                                         "post-contrast ceiling", f"{pre} + {post}",
                                         "rule: PE1 >= 70 %, whole body, largest component")))
    return methods
