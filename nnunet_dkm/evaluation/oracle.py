"""The post-contrast "oracle" companion dataset: the same cases, labels and split, with the first post-contrast
phase as the network input instead of the pre-contrast image.

nnU-Net trained on it shows the ceiling that a method seeing the enhancement reaches. It is an ordinary nnU-Net raw
dataset named ``Dataset{OID}_{source name}PostContrastOracle`` whose ``dataset.json`` records ``"oracle_of"``, so
later runs find and reuse it. It is written to a hidden temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nnunet_dkm.atomic import remove_stale_temporaries, replace_folder, report_removed, write_atomically
from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.paths import dataset_id

ORACLE_SUFFIX = "PostContrastOracle"


class OracleDatasetError(NnunetDkmError):
    """The companion dataset cannot be made; the message says what is wrong and where."""


def find_oracle_dataset(raw_folder: Path, source: Path) -> Path | None:
    """An existing companion dataset of ``source`` (by the ``oracle_of`` entry of its ``dataset.json``)."""
    for path in sorted(raw_folder.glob(f"Dataset*_*{ORACLE_SUFFIX}")):
        info = json.loads((path / "dataset.json").read_text()) if (path / "dataset.json").is_file() else {}
        if info.get("dkm", {}).get("oracle_of") == source.name:
            return path
    return None


def companion_id(source: Path, requested: int | None, option: str) -> int:
    """The id of a companion of raw dataset ``source``: ``requested`` (given with ``option``) where no dataset beside
    ``source`` uses it; for None the highest id below 1000 that none uses (ids near 999 rarely clash)."""
    used = {dataset_id(p.name) for p in source.parent.glob("Dataset[0-9][0-9][0-9]_*") if p.is_dir()}
    if requested is not None and requested in used:
        raise OracleDatasetError(f"dataset id {requested} is taken in {source.parent} by another dataset; choose "
                                 f"another {option}")
    free = (candidate for candidate in range(999, 0, -1) if candidate not in used | {dataset_id(source.name)})
    requested = requested if requested is not None else next(free, None)
    if requested is None:
        raise OracleDatasetError(f"no free dataset id below 1000 in {source.parent}; pass {option}")
    return requested


def _copy_split(source: Path, target: Path, split: str, phase: int, file_ending: str) -> list[str]:
    kinetics = source / f"kinetics{split}"
    labels = source / f"labels{split}"
    cases = sorted(p.name[: -len(file_ending)] for p in labels.glob(f"*{file_ending}")) if labels.is_dir() else []
    for case in cases:
        post = kinetics / f"{case}_{phase:04d}{file_ending}"
        if not post.is_file():
            raise OracleDatasetError(
                f"{post} is missing: case {case} has no post-contrast phase {phase}, so no oracle can be trained "
                f"(leave `oracle` out of --methods to benchmark without it)"
            )
        (target / f"images{split}").mkdir(parents=True, exist_ok=True)
        (target / f"labels{split}").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(post, target / f"images{split}" / f"{case}_0000{file_ending}")
        shutil.copyfile(labels / f"{case}{file_ending}", target / f"labels{split}" / f"{case}{file_ending}")
    return cases


def make_oracle_dataset(source: Path, oracle_id: int | None = None, phase: int = 1) -> Path:
    """Create (or find) the companion dataset of raw dataset folder ``source``; returns its folder.

    Args:
        source: ``nnUNet_raw/DatasetXXX_Name`` with ``kineticsTr`` (and ``kineticsTs`` where there is a test split).
        oracle_id: dataset id to use; ``None`` reuses an existing companion or takes the highest free id.
        phase: post-contrast phase used as the input (1 = first post-contrast).
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    raw_folder = source.parent
    existing = find_oracle_dataset(raw_folder, source)
    if existing is not None and (oracle_id is None or existing.name.startswith(f"Dataset{oracle_id:03d}_")):
        return existing
    oracle_id = companion_id(source, oracle_id, "--oracle-id")
    info = json.loads((source / "dataset.json").read_text())
    file_ending = info["file_ending"]
    name = f"Dataset{oracle_id:03d}_{source.name.split('_', 1)[1]}{ORACLE_SUFFIX}"
    report_removed(remove_stale_temporaries(raw_folder), "dataset")
    def fill(folder: Path) -> None:
        training = _copy_split(source, folder, "Tr", phase, file_ending)
        test = _copy_split(source, folder, "Ts", phase, file_ending)
        if not training:
            raise OracleDatasetError(f"{source / 'labelsTr'} holds no labelled case")
        dkm = {
            "oracle_of": source.name,
            "input": f"post-contrast phase {phase} (kinetics{{Tr,Ts}}/<case>_{phase:04d})",
            "label_source": info.get("dkm", {}).get("label_source", "unknown"),
            "num_training": len(training),
            "num_test": len(test),
        }
        generate_dataset_json(
            str(folder), channel_names={0: f"post-contrast {phase}"}, labels=info["labels"],
            num_training_cases=len(training), file_ending=file_ending, dataset_name=name,
            description=f"Post-contrast oracle of {source.name}: same cases and labels, input = post-contrast "
                        f"phase {phase}. Made by nnUNetv2_dkm_benchmark.",
            converted_by="nnunet-dkm", dkm=dkm,
        )

    return replace_folder(raw_folder / name, fill)


def copy_split_file(source_preprocessed: Path, oracle_preprocessed: Path) -> None:
    """Give the oracle the source's ``splits_final.json`` so that fold k holds the same cases in both.

    An oracle split file whose folds are the source's first folds is brought up to date (the benchmark appends
    label-subset folds); one that differs in a common fold is an error (its models were trained on other folds).
    """
    source_split = source_preprocessed / "splits_final.json"
    if not source_split.is_file():
        raise OracleDatasetError(f"{source_split} is missing; train a model of the source dataset first")
    source = json.loads(source_split.read_text())
    target = oracle_preprocessed / "splits_final.json"
    if target.is_file():
        existing = json.loads(target.read_text())
        if existing != source[: len(existing)]:
            raise OracleDatasetError(
                f"{target} differs from {source_split}: the oracle was trained on other folds; delete the oracle's "
                f"results and split file, or pass another --oracle-id"
            )
        if existing == source:
            return
    write_atomically(target, lambda temporary: shutil.copyfile(source_split, temporary))
