"""The benchmark's plan of methods: which trainers and rules make the rows, and in which role.

Every row is a ``Method``: a trained nnU-Net model per fold (``trainer``), or a rule without a network. Roles:
pre-contrast networks (vanilla nnU-Net, DKM and its ablations), the control (DKM fed by an untrained DM),
pre-contrast baselines (rules) and post-contrast ceilings (nnU-Net on the first post-contrast phase, on a companion
dataset; the label rule on post-contrast images).
"""

from __future__ import annotations

from dataclasses import dataclass

from nnunet_dkm.diffusion.config import KineticFeatureConfig

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
    """One row of the benchmark: a trained nnU-Net model per fold, or a rule."""

    info: MethodInfo
    trainer: str | None = None  # nnU-Net trainer; None for rules
    on_oracle_dataset: bool = False

    @property
    def uses_dm(self) -> bool:
        return self.trainer is not None and "DKM" in self.trainer


# short schedules have a trainer per name suffix (training/variants/short_schedules.py; vanilla 1epoch, 5epochs and
# 10epochs are nnU-Net's own nnUNetTrainer_<n>epoch(s))
SCHEDULE_CHOICES = ("full", "debug", "demo", "1epoch", "2epochs", "5epochs", "10epochs")


@dataclass(frozen=True)
class TrainerChoice:
    """The trainers of the four network rows; ``schedule`` is "full", "demo" or "debug"."""

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
            "oracle": self.oracle or f"nnUNetTrainer{self.suffix}",
        }


# --methods choices, in table order; "baselines" are the rules without a network
METHOD_CHOICES = ("vanilla", "dkm", "untrained-dm", "oracle", "baselines")
DEFAULT_METHODS = ("vanilla", "dkm", "untrained-dm", "oracle", "baselines")


def plan_methods(trainers: TrainerChoice, post_phase: int, selected: tuple[str, ...] = DEFAULT_METHODS,
                 ablation: tuple[str, ...] = ()) -> list[Method]:
    """The benchmark's rows of the ``selected`` methods (``METHOD_CHOICES``) and DM-level ablations, in table
    order."""
    names = trainers.names()
    pre, post = "pre-contrast", f"post-contrast {post_phase}"
    methods = []
    if "vanilla" in selected:
        methods.append(Method(MethodInfo("vanilla", "vanilla nnU-Net", "pre-contrast network", pre,
                                         names["vanilla"]), names["vanilla"]))
    if "dkm" in selected:
        methods.append(Method(MethodInfo("dkm", "DKM", "pre-contrast network", pre, names["dkm"]), names["dkm"]))
    if "untrained-dm" in selected:
        methods.append(Method(MethodInfo("untrained_dm_control", "DKM, untrained DM (control)", "control", pre,
                                         names["control"]), names["control"]))
    for levels in ablation:
        if levels == DKM_DEFAULT_LEVELS:
            continue  # that is nnUNetTrainerDKM itself
        trainer = f"nnUNetTrainerDKM_f{levels}{trainers.suffix}"
        methods.append(Method(MethodInfo(f"dkm_f{levels}", f"DKM, DM levels f{'+f'.join(levels)}",
                                         "pre-contrast network", pre, trainer), trainer))
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
                              on_oracle_dataset=True))
    if "baselines" in selected:
        methods.append(Method(MethodInfo("label_rule_post_contrast", "FTV label rule on post-contrast",
                                         "post-contrast ceiling", f"{pre} + {post}",
                                         "rule: PE1 >= 70 %, whole body, largest component")))
    return methods
