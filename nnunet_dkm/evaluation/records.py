"""Study records: one small JSON file per finished training run, so that a study outlives the machine it ran on.

A record says what ran (``RunIdentity``: method, trainer, dataset and its fingerprint, configuration, plans, fold,
repeat, number of labels, schedule, the DM's sha256), what it scored (per-case test metrics) and how (wall time,
machine, load, the commit). Records live in ``benchmarks/records/<study>/`` (or any folder given to
``nnUNetv2_dkm_benchmark --records``); a run whose record exists is not trained again, and every study report is
rebuilt from the records alone::

    {"format": "nnunet_dkm.study_record", "format_version": 1,
     "identity": {...RunIdentity...},
     "per_case": [{"case": "case_0001", "dice": 0.71, "jaccard": 0.55, "hd95_mm": 3.2, ...}, ...],
     "wall_seconds": 412.0, "finished": "2026-12-07 08:10 UTC", "machine": "...", "load": "...", "commit": "..."}

The file name holds the run's key (a hash of its identity), so two runs that differ in anything that decides their
result (another DM, another dataset) never share a record.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.fingerprints import canonical_sha256
from nnunet_dkm.reporting import current_commit, machine_description, utc_now

RECORD_FORMAT = "nnunet_dkm.study_record"
RECORD_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunIdentity:
    """What decides a training run's result; two runs with the same identity are the same run.

    ``fold`` is nnU-Net's fold (for label-efficiency runs the extra fold of the label subset), ``base_fold`` the
    fold whose split it comes from, ``num_labelled`` the label subset's N ("all" for every labelled case).
    ``dm_sha256`` is the sha256 of the DM checkpoint file the method read (None for methods without a DM).
    """

    study: str
    method: str
    trainer: str
    dataset: str
    dataset_fingerprint: str
    configuration: str
    plans: str
    fold: int
    repeat: int
    schedule: str
    base_fold: int | None = None
    num_labelled: str = "all"
    dm_sha256: str | None = None

    @property
    def key(self) -> str:
        """12 hex digits of the hash of everything but ``study`` (a run's result does not depend on the name of
        the folder its record sits in, so a records folder copied under another name still resumes)."""
        return canonical_sha256({name: value for name, value in asdict(self).items() if name != "study"})[:12]

    @property
    def file_name(self) -> str:
        labels = "" if self.num_labelled == "all" else f"__n{self.num_labelled}"
        return f"{self.method}__fold{self.fold}__repeat{self.repeat}{labels}__{self.key}.json"


def load_description() -> str:
    """The machine's load as a record states it: the 1-minute load average and this process's cores."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (f"load average {os.getloadavg()[0]:.2f} (1 min) at the end; this process on core(s) "
            f"{','.join(map(str, cores)) or '?'} of {os.cpu_count()}; OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")


def _json_metric(value: Any) -> Any:
    """NaN (Dice of two empty masks) as None: records are strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


class RecordStore:
    """The records of one study: a folder of ``RunIdentity.file_name`` JSON files."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, identity: RunIdentity) -> Path:
        return self.folder / identity.file_name

    def has(self, identity: RunIdentity) -> bool:
        return self.path(identity).is_file()

    def write(self, identity: RunIdentity, per_case: pd.DataFrame, wall_seconds: float | None,
              device: str = "cpu") -> Path:
        """Write the record of a finished run (atomically: a temporary file, then a rename). ``per_case``: one row
        per evaluated case with a ``case`` column and the metric columns."""
        rows = [{key: _json_metric(value) for key, value in row.items()} for row in per_case.to_dict("records")]
        record = {"format": RECORD_FORMAT, "format_version": RECORD_FORMAT_VERSION, "identity": asdict(identity),
                  "per_case": rows, "wall_seconds": None if wall_seconds is None else round(float(wall_seconds), 1),
                  "finished": utc_now(), "machine": machine_description(device), "load": load_description(),
                  "commit": current_commit()}
        text = json.dumps(record, indent=1, sort_keys=False) + "\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        return write_atomically(self.path(identity), lambda temporary: temporary.write_text(text))

    def read(self, identity: RunIdentity) -> dict[str, Any]:
        return read_record(self.path(identity))

    def all(self) -> list[dict[str, Any]]:
        """Every record of the folder, in file-name order (none where the folder does not exist)."""
        return [read_record(path) for path in sorted(self.folder.glob("*.json"))] if self.folder.is_dir() else []


def read_record(path: Path) -> dict[str, Any]:
    """A record file's content; a damaged or foreign file is refused with its name."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NnunetDkmError(f"{path}: unreadable study record ({error}); delete it to rerun that run") from error
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise NnunetDkmError(f"{path}: not a study record (no format {RECORD_FORMAT!r})")
    if record.get("format_version", 0) > RECORD_FORMAT_VERSION:
        raise NnunetDkmError(f"{path}: record format {record.get('format_version')} is newer than this nnunet-dkm "
                             f"reads ({RECORD_FORMAT_VERSION}); update nnunet-dkm")
    return record


def per_case_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record and case: the identity's fields, then ``case`` and the metrics, then ``wall_seconds``."""
    rows = [{**record["identity"], **case, "wall_seconds": record.get("wall_seconds")}
            for record in records for case in record["per_case"]]
    return pd.DataFrame(rows)
