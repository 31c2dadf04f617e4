"""One error path for every ``nnUNetv2_dkm_*`` command.

Each command's ``main`` is wrapped by :func:`command_line_entry`. A user's mistake then ends in one line on stderr,
``error: <what is wrong, the path or option, what to do>``, and exit status 1:

- the project's own errors (:class:`nnunet_dkm.errors.NnunetDkmError` and its subclasses);
- ``OSError``s about the user's paths: missing, not writable, a file where a folder is expected, a full disk;
- running out of memory (numpy's ``MemoryError``, torch's ``OutOfMemoryError``);
- Ctrl-C: ``interrupted``, exit status 130.

Anything else is a bug and keeps its traceback. ``--verbose`` (every command has it) or
``nnUNet_dkm_verbose=1`` in the environment shows the full traceback of the errors above too.

This module is imported by every command: it must stay light (standard library only).
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from nnunet_dkm.errors import NnunetDkmError

VERBOSE_VARIABLE = "nnUNet_dkm_verbose"
VERBOSE_HELP = f"show the full traceback of an error (also: export {VERBOSE_VARIABLE}=1)"
INTERRUPTED_STATUS = 130  # the shell's status for a process ended by SIGINT (128 + 2)

Result = TypeVar("Result")


# errno -> (what happened, what to do): the OSErrors that are about a path the user gave
_PATH_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENOENT: ("no such file or folder", "check the path (and the nnUNet_raw, nnUNet_preprocessed and "
                                             "nnUNet_results variables)"),
    errno.EACCES: ("permission denied", "choose a path you may use, or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose a path you may use, or change its permissions"),
    errno.EROFS: ("read-only file system", "choose a folder on a writable disk"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose a path whose folders are folders"),
    errno.EISDIR: ("is a folder where a file was expected", "give a file's path"),
    errno.EEXIST: ("exists already", "remove it or choose another path"),
    errno.ENOSPC: ("no space left on the disk", "free some space or choose a folder on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose a folder on another disk"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.ELOOP: ("too many symbolic links", "check the links in the path"),
}


class _VerboseAction(argparse.Action):
    """``--verbose``: remember for :func:`command_line_entry` that the user asked for tracebacks."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, help=VERBOSE_HELP)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)
        _traceback_switch["requested"] = True


_traceback_switch = {"requested": False}


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """Give a command's parser the ``--verbose`` option that :func:`command_line_entry` reads."""
    parser.add_argument("--verbose", action=_VerboseAction)


def add_device_argument(parser: argparse.ArgumentParser, what: str = "device") -> None:
    """Give a command's parser ``-device cpu|cuda``, by default cuda where torch sees a GPU, else cpu (nnU-Net's
    commands default to cuda and fail without one; ours fall back)."""
    import torch

    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("-device", "--device", default=default, choices=("cpu", "cuda"),
                        help=f"{what} (default cuda where a GPU is visible, else cpu; here {default})")


def tracebacks_requested() -> bool:
    """Whether the user asked for full tracebacks (``--verbose`` or ``nnUNet_dkm_verbose`` set, not 0)."""
    return _traceback_switch["requested"] or os.environ.get(VERBOSE_VARIABLE, "").strip() not in ("", "0")


def describe_path_error(error: OSError) -> str | None:
    """One line for an ``OSError`` about a path: the path, what happened and what to do; None for other OSErrors."""
    if error.errno not in _PATH_ERRORS:
        return None
    what, to_do = _PATH_ERRORS[error.errno]
    if error.filename is None:
        return f"{what} ({error.strerror or error}): {to_do}"
    paths = str(error.filename) if error.filename2 is None else f"{error.filename} -> {error.filename2}"
    return f"{paths}: {what}: {to_do}"


def describe_out_of_memory(error: BaseException) -> str | None:
    """One line for running out of memory (numpy, torch on CPU or CUDA); None for other errors."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or (
            isinstance(error, RuntimeError) and "can't allocate memory" in str(error)):
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return (f"out of memory ({detail[:200]}): choose smaller sizes (shape, batch size, patch size, number of "
                f"cases) or a machine with more memory")
    return None


def command_line_entry(main: Callable[[list[str]], Result]) -> Callable[[Sequence[str] | None], Result]:
    """Wrap a command's ``main(argv)``: the user's mistakes become one ``error:`` line and exit status 1.

    ``main`` gets the argument list (``sys.argv[1:]`` when called without one) and must give its parser
    :func:`add_verbose_argument`.
    """

    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> Result:
        arguments = list(sys.argv[1:] if argv is None else argv)
        _traceback_switch["requested"] = False
        try:
            return main(arguments)
        except KeyboardInterrupt:
            if tracebacks_requested():
                raise
            print("\ninterrupted", file=sys.stderr, flush=True)
            sys.exit(INTERRUPTED_STATUS)
        except (NnunetDkmError, OSError, MemoryError, RuntimeError) as error:
            if isinstance(error, NnunetDkmError):
                message = str(error)
            elif isinstance(error, OSError):
                message = describe_path_error(error)
            else:
                message = describe_out_of_memory(error)
            if message is None or tracebacks_requested():
                raise
            sys.stdout.flush()
            sys.exit(f"error: {message}")

    return run


def nearest_existing_folder(path: Path) -> Path:
    """``path`` itself where it exists, else its closest existing ancestor."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(folder: str | os.PathLike, option: str) -> Path:
    """Refuse, before anything is written, an output folder that cannot be made or written to.

    ``folder`` may not exist yet (it is not created here); its closest existing ancestor must be a folder this
    process may write to. ``option`` names where the path came from (``-o``, ``--raw-folder``, ``$nnUNet_raw``).
    Returns ``folder``.
    """
    folder = Path(folder)
    existing = nearest_existing_folder(folder)
    shown = f"{option} {folder}"
    if not existing.is_dir():
        raise NnunetDkmError(f"{shown}: {existing} is a file, not a folder; choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "read-only file system" if _is_read_only_file_system(existing) else "permission denied"
        raise NnunetDkmError(f"{shown}: cannot write into {existing} ({reason}); choose a folder you can "
                             f"write to, or change its permissions")
    return folder


def _is_read_only_file_system(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
