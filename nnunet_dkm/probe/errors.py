"""The probe's one error type: what the command prints as ``error: <message>`` without a traceback."""

from __future__ import annotations

from nnunet_dkm.errors import NnunetDkmError


class ProbeError(NnunetDkmError):
    """The probe cannot run as asked; the message names the file, case or setting and what to do."""
