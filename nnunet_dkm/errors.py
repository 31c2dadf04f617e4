"""The project's one base error type.

Every error this project raises for something the user can fix (a missing dataset, a bad option, a damaged file,
an unreadable checkpoint, ...) is an :class:`NnunetDkmError`; the subclasses keep their own names
(``DatasetConversionError``, ``PretrainingError``, ``BenchmarkError``, ...) and their message names the file or
option and what to do. The command-line wrapper (``nnunet_dkm.command_line``) prints such an error as one line,
``error: <message>``, and exits with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NnunetDkmError(Exception):
    """Bad input or environment for an nnunet-dkm command; the message names what is wrong and what to do."""
