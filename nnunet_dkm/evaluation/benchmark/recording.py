"""``nnUNetv2_dkm_benchmark --records FOLDER``: the benchmark's network runs as study records.

Each run (method, nnU-Net fold, repeat) has a ``RunIdentity``; a run whose record is in the folder is neither trained
nor predicted again, and its per-case scores come from the record. Every run that finishes writes its record as soon
as it is scored, so a benchmark stopped on one machine resumes on another from the records alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nnunet_dkm.evaluation.benchmark.label_subsets import LabelRun
from nnunet_dkm.evaluation.benchmark.methods import Method
from nnunet_dkm.evaluation.benchmark.stages import RunKey
from nnunet_dkm.evaluation.records import RecordStore, RunIdentity
from nnunet_dkm.fingerprints import dataset_fingerprint, file_sha256


@dataclass
class BenchmarkRecords:
    """The records of one benchmark: the store and the identity of every network run it makes."""

    store: RecordStore
    identities: dict[RunKey, RunIdentity]

    @classmethod
    def plan(cls, folder: Path, methods: list[Method], runs: list[LabelRun], repeats: int, raw: Path,
             preprocessed: Path, configuration: str, plans: str, schedule: str,
             dm_paths: dict[str, str]) -> BenchmarkRecords:
        """Identities of every (network method, run, repeat); ``dm_paths``: the DM checkpoint file per objective.
        The study is the folder's name."""
        fingerprint = dataset_fingerprint(raw, preprocessed)
        dm_digests = {objective: file_sha256(path) for objective, path in dm_paths.items()}
        identities = {}
        for method in methods:
            if not method.trainer:
                continue
            for run in runs:
                for repeat in range(repeats):
                    identities[(method.info.key, run.nnunet_fold, repeat)] = RunIdentity(
                        study=Path(folder).name, method=method.info.key, trainer=method.trainer, dataset=raw.name,
                        dataset_fingerprint=fingerprint, configuration=configuration, plans=plans,
                        fold=run.nnunet_fold, repeat=repeat, schedule=schedule, base_fold=run.fold,
                        num_labelled=run.label, dm_sha256=dm_digests.get(method.dm_objective))
        return cls(RecordStore(folder), identities)

    def recorded(self) -> frozenset[RunKey]:
        """The runs whose record exists."""
        return frozenset(key for key, identity in self.identities.items() if self.store.has(identity))

    def write_new(self, per_case: pd.DataFrame, seconds: dict[RunKey, float | None], device: str) -> list[Path]:
        """Write the record of every run scored in ``per_case`` (rows: method, fold, repeat, case, metrics) that
        has none yet."""
        written = []
        for (method, fold, repeat), rows in per_case.groupby(["method", "fold", "repeat"], sort=True):
            key = (str(method), int(fold), int(repeat))
            identity = self.identities.get(key)
            if identity is None or self.store.has(identity):
                continue
            cases = rows.drop(columns=["method", "fold", "repeat"]).sort_values("case")
            written.append(self.store.write(identity, cases, seconds.get(key), device))
        return written

    def recorded_per_case(self) -> pd.DataFrame:
        """The recorded runs' per-case rows in the benchmark's columns (method, fold, repeat, case, metrics)."""
        rows = []
        for (method, fold, repeat), identity in sorted(self.identities.items()):
            if self.store.has(identity):
                rows += [{"method": method, "fold": fold, "repeat": repeat, **case}
                         for case in self.store.read(identity)["per_case"]]
        return pd.DataFrame(rows)
