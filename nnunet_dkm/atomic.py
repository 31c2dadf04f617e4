"""Write files and folders atomically, with the user's normal permissions, and clean up after dead runs.

Every command that builds something (a raw dataset, the DM cache, a checkpoint, a figure, a table) builds it under a
hidden temporary name in the destination folder and renames it into place when complete, so a reader never sees
half of it. Temporary names carry the host and process id (``.tmp_<name>.<host>.<pid>.<random>``), so the next
run can tell a leftover of a killed run (``kill -9``, a cluster time limit) from the work of a live one, and
:func:`remove_stale_temporaries` deletes only the former.

Python's ``tempfile`` creates folders with mode 0700 and files with 0600; finished outputs here get what the user's
umask gives any new file (typically 0755 / 0644), so colleagues on a shared server can read them.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

TEMPORARY_PREFIX = ".tmp_"
# .tmp_<name>.<host>.<pid>.<token>[<suffixes of the final name>]
_TEMPORARY_NAME = re.compile(
    r"^\.tmp_(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})(?:\.[A-Za-z0-9]+)*$"
)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a new file gets from ``open()`` under the current umask (0o666 & ~umask)."""
    return 0o666 & ~_umask()


def default_folder_mode() -> int:
    """The mode a new folder gets from ``mkdir`` under the current umask (0o777 & ~umask)."""
    return 0o777 & ~_umask()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def temporary_name(final_name: str) -> str:
    """``.tmp_<final_name>.<host>.<pid>.<random>``: hidden, and traceable to the process that made it."""
    return f"{TEMPORARY_PREFIX}{final_name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}"


def make_temporary_folder(parent: Path, final_name: str) -> Path:
    """A new empty folder in ``parent`` for building ``final_name``, with the user's normal folder permissions."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = parent / temporary_name(final_name)
    folder.mkdir(mode=default_folder_mode())
    return folder


def publish(temporary: Path, final: Path) -> None:
    """Rename a finished temporary file or folder onto ``final`` (replacing a file; ``final`` must not be a
    non-empty folder) and give it the user's normal permissions."""
    os.chmod(temporary, default_folder_mode() if temporary.is_dir() else default_file_mode())
    os.replace(temporary, final)


def replace_folder(folder: Path, fill: Callable[[Path], object]) -> Path:
    """Call ``fill(temporary_folder)``, then put the result in place of ``folder`` (an older one is removed only
    once the new one is complete); nothing is left behind on failure."""
    temporary = make_temporary_folder(folder.parent, folder.name)
    try:
        fill(temporary)
        if folder.exists():
            shutil.rmtree(folder)
        publish(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return folder


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then rename the result onto ``path``; nothing is left behind on failure.

    The temporary name keeps ``path``'s suffixes, so writers that choose a format by extension still do.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(temporary_name(path.name) + "".join(path.suffixes))
    try:
        write(temporary)
        publish(temporary, path)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
    return path


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files and folders in ``folder`` that runs on this host left when they died.

    Only names made by :func:`temporary_name` whose process no longer exists on this host are removed; another
    host's or a live process's work is never touched. Returns what was removed, for the caller to report.
    """
    if not folder.is_dir():
        return []
    removed = []
    host = _host()
    for entry in folder.iterdir():
        match = _TEMPORARY_NAME.match(entry.name)
        if match is None or match["host"] != host or _process_is_alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def report_removed(removed: list[Path], what: str) -> None:
    """Print one line per removed leftover (commands call this at start)."""
    for entry in removed:
        print(f"removed {entry}: a {what} left by an interrupted earlier run", flush=True)
