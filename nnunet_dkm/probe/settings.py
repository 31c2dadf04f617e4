"""DM settings the probe reads features with, in a compact syntax: ``<mode>[<n>]:<source>:<levels>``.

- ``A250:decoder:34``: mode A (noised pre-contrast) at t* = 250, decoder features, levels f3 + f4;
- ``B:decoder:1234``: mode B (pure noise at t = T-1), decoder, f1..f4;
- ``C5:encoder:3``: mode C (post-contrast synthesised with 5 DDIM steps, read at t = 0), encoder, f3.

``A`` without a number means the default t* (``KineticFeatureConfig``'s, 50), ``C`` without one 5 DDIM steps.
``default`` is the setting of
``nnUNetTrainerDKM`` and ``all`` the grid: mode A at t* in {50, 150, 250, 500, 750}, mode B and mode C5, each from
the decoder and the encoder, with levels f1, f2, f3, f4, f3+f4 and f1..f4 (84 settings). Settings that share mode,
t* (or DDIM steps) and source share one DM forward (:attr:`DmSetting.forward_key`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nnunet_dkm.diffusion.config import DiffusionConfig, KineticFeatureConfig
from nnunet_dkm.errors import NnunetDkmError

DEFAULT_TIMESTEP = KineticFeatureConfig().timestep  # the trainer's t* (50)
DEFAULT_DDIM_STEPS = 5
GRID_TIMESTEPS = (50, 150, 250, 500, 750)
GRID_LEVELS = ((1,), (2,), (3,), (4,), (3, 4), (1, 2, 3, 4))
GRID_SOURCES = ("decoder", "encoder")
_SYNTAX = re.compile(r"^(?P<mode>[ABC])(?P<number>\d*):(?P<source>decoder|encoder):(?P<levels>[1-9]+)$")
SYNTAX_HELP = ("<mode>[<t* or DDIM steps>]:<decoder|encoder>:<levels>, e.g. A250:decoder:34, B:decoder:1234, "
               "C5:encoder:3; or 'default' or 'all'")

ForwardKey = tuple[str, int, str]


class ProbeError(NnunetDkmError):
    """The probe cannot run as asked; the message names the file, case or setting and what to do."""


@dataclass(frozen=True, order=True)
class DmSetting:
    """How features are read from a DM: extraction mode, its number (t* of A, DDIM steps of C, 0 for B), source and
    levels (sorted, unique)."""

    mode: str
    number: int
    source: str
    levels: tuple[int, ...]

    @property
    def code(self) -> str:
        """The compact form, e.g. ``A250:decoder:34`` (what :func:`parse_setting` reads)."""
        number = "" if self.mode == "B" else str(self.number)
        return f"{self.mode}{number}:{self.source}:{''.join(map(str, self.levels))}"

    @property
    def forward_key(self) -> ForwardKey:
        """(mode, number, source): settings with the same key read their levels from one DM forward."""
        return self.mode, self.number, self.source

    def feature_config(self, levels: Sequence[int] | None = None) -> KineticFeatureConfig:
        """The extractor options of this setting (``levels`` overrides the levels, e.g. a group's union)."""
        return KineticFeatureConfig(
            mode=self.mode, levels=tuple(levels if levels is not None else self.levels), source=self.source,
            timestep=self.number if self.mode == "A" else DEFAULT_TIMESTEP,
            ddim_steps=self.number if self.mode == "C" else DEFAULT_DDIM_STEPS,
        )

    def check_against(self, config: DiffusionConfig) -> None:
        """Raise :class:`ProbeError` where the DM cannot give this setting (levels, t* or DDIM steps)."""
        if self.levels[-1] > config.num_levels:
            raise ProbeError(f"setting {self.code}: level {self.levels[-1]} requested but the DM has "
                             f"{config.num_levels} levels")
        if self.mode in ("A", "C") and self.number >= config.num_train_timesteps:
            raise ProbeError(f"setting {self.code}: {self.number} is outside the DM's T = "
                             f"{config.num_train_timesteps}")


def parse_setting(text: str) -> DmSetting:
    """One setting from its compact form; :class:`ProbeError` names the text and the syntax on a mistake."""
    match = _SYNTAX.match(text.strip())
    if match is None:
        raise ProbeError(f"unknown DM setting {text!r}: expected {SYNTAX_HELP}")
    mode, number = match["mode"], match["number"]
    if mode == "B" and number:
        raise ProbeError(f"unknown DM setting {text!r}: mode B always uses t = T-1 and takes no number")
    if mode == "A":
        value = int(number) if number else DEFAULT_TIMESTEP
    elif mode == "C":
        value = int(number) if number else DEFAULT_DDIM_STEPS
        if value < 1:
            raise ProbeError(f"unknown DM setting {text!r}: mode C needs at least 1 DDIM step")
    else:
        value = 0
    return DmSetting(mode, value, match["source"], tuple(sorted({int(c) for c in match["levels"]})))


def setting_of(config: KineticFeatureConfig) -> DmSetting:
    """The setting of a trainer's ``KineticFeatureConfig``."""
    number = {"A": config.timestep, "B": 0, "C": config.ddim_steps}[config.mode]
    return DmSetting(config.mode, number, config.source, tuple(config.levels))


def default_setting() -> DmSetting:
    """The setting of ``KineticFeatureConfig()``, which ``nnUNetTrainerDKM`` uses."""
    return setting_of(KineticFeatureConfig())


def settings_grid() -> list[DmSetting]:
    """The 84 settings of ``--settings all`` (7 forwards x 2 sources x 6 level sets)."""
    forwards = [("A", t) for t in GRID_TIMESTEPS] + [("B", 0), ("C", DEFAULT_DDIM_STEPS)]
    return [DmSetting(mode, number, source, levels)
            for mode, number in forwards for source in GRID_SOURCES for levels in GRID_LEVELS]


def parse_settings(texts: Iterable[str]) -> list[DmSetting]:
    """Settings from command-line words (``default``, ``all`` or compact forms), duplicates dropped, order kept."""
    settings: list[DmSetting] = []
    for text in texts:
        if text == "default":
            new = [default_setting()]
        elif text == "all":
            new = settings_grid()
        else:
            new = [parse_setting(text)]
        settings += [s for s in new if s not in settings]
    if not settings:
        raise ProbeError(f"no DM setting given: expected {SYNTAX_HELP}")
    return settings


def group_by_forward(settings: Sequence[DmSetting]) -> dict[ForwardKey, list[DmSetting]]:
    """Settings grouped by the DM forward they share, in first-seen order."""
    groups: dict[ForwardKey, list[DmSetting]] = {}
    for setting in settings:
        groups.setdefault(setting.forward_key, []).append(setting)
    return groups
