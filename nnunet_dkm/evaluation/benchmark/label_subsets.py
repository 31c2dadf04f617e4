"""Label-efficiency runs: every method trained on N labelled cases of a fold's training split.

nnU-Net trains fold k on ``splits_final.json[k]``, and that file may hold any number of folds. A run with N labelled
cases of fold f is therefore one more entry of that file: the first N cases of a fixed, seeded ordering of fold f's
training cases, with fold f's validation cases. Subsets are nested (the 4-case subset is inside the 8-case one), the
same for every method, and the existing folds are never changed: entries are only appended (atomically), and an
entry that is already there is reused, so a second benchmark run finds the models it trained before. Where the
dataset has no ``splits_final.json`` yet, nnU-Net's own default 5-fold split is written first (the one
``nnUNetTrainer.do_split`` would write: ``generate_crossval_split`` of the sorted identifiers, seed 12345).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.evaluation.benchmark.cases import BenchmarkError

ALL_LABELLED = "all"
SUBSET_ORDER_SEED = 20231008  # fixed: the same subsets in every run and for every method
NNUNET_SPLIT_SEED = 12345  # nnUNetTrainer.do_split's seed


@dataclass(frozen=True)
class LabelRun:
    """One training run of every method: base fold ``fold`` restricted to ``num_labelled`` training cases.

    Attributes:
        fold: the base cross-validation fold.
        num_labelled: labelled training cases (None: all of the fold's).
        nnunet_fold: the index of ``splits_final.json`` that nnU-Net trains for this run.
        train_cases: the labelled training cases it uses.
    """

    fold: int
    num_labelled: int | None
    nnunet_fold: int
    train_cases: tuple[str, ...]

    @property
    def label(self) -> str:
        """``all`` or the number of labelled cases, as the tables show it."""
        return ALL_LABELLED if self.num_labelled is None else str(self.num_labelled)


def parse_num_labelled(values: list[str]) -> list[int | None]:
    """``["4", "8", "all"]`` -> ``[4, 8, None]``; raises ``ValueError`` for anything else."""
    parsed: list[int | None] = []
    for value in values:
        if value == ALL_LABELLED:
            parsed.append(None)
        elif value.isdigit() and int(value) >= 1:
            parsed.append(int(value))
        else:
            raise ValueError(f"--num-labelled {value!r}: give positive numbers of labelled cases or 'all'")
    return sorted(set(parsed), key=lambda n: float("inf") if n is None else n)


def nnunet_default_split(preprocessed: Path, data_identifier: str) -> list[dict]:
    """The split nnU-Net writes when it first trains a fold: 5 folds over the sorted case identifiers."""
    data_folder = preprocessed / data_identifier
    if not data_folder.is_dir():
        raise BenchmarkError(f"{data_folder} is missing: run nnUNetv2_plan_and_preprocess for this configuration")
    identifiers = sorted(infer_dataset_class(str(data_folder)).get_identifiers(str(data_folder)))
    if len(identifiers) < 5:
        raise BenchmarkError(f"{len(identifiers)} labelled training case(s): nnU-Net's default split needs 5. Write "
                             f"{preprocessed / 'splits_final.json'} yourself (README: \"With one or two patients\")")
    return [{"train": list(map(str, s["train"])), "val": list(map(str, s["val"]))}
            for s in generate_crossval_split(identifiers, seed=NNUNET_SPLIT_SEED, n_splits=5)]


def subset_order(train_cases: list[str], fold: int) -> list[str]:
    """A fixed ordering of a fold's training cases; its first N cases are the N-case subset (so subsets nest)."""
    rng = np.random.default_rng([SUBSET_ORDER_SEED, fold])
    ordered = sorted(train_cases)
    return [ordered[i] for i in rng.permutation(len(ordered))]


def label_runs(preprocessed: Path, data_identifier: str, folds: list[int],
               num_labelled: list[int | None]) -> list[LabelRun]:
    """The runs of every (fold, N), appending their subset folds to ``splits_final.json`` where missing.

    Raises ``BenchmarkError`` where a fold is not in the split file or N exceeds the fold's training cases.
    """
    path = preprocessed / "splits_final.json"
    existed = path.is_file()
    splits = json.loads(path.read_text()) if existed else nnunet_default_split(preprocessed, data_identifier)
    written = len(splits)
    runs: list[LabelRun] = []
    for fold in folds:
        if fold >= len(splits):
            raise BenchmarkError(f"fold {fold} is not in {path} ({len(splits)} folds)")
        base = splits[fold]
        order = subset_order(list(base["train"]), fold)
        for count in num_labelled:
            if count is None or count == len(order):
                run = LabelRun(fold, None, fold, tuple(sorted(base["train"])))
                if run not in runs:
                    runs.append(run)
                continue
            if count > len(order):
                raise BenchmarkError(f"--num-labelled {count}: fold {fold} has only {len(order)} labelled training "
                                     f"cases")
            entry = {"train": sorted(order[:count]), "val": sorted(base["val"])}
            index = next((i for i, s in enumerate(splits) if sorted(s["train"]) == entry["train"]
                          and sorted(s["val"]) == entry["val"]), None)
            if index is None:
                splits.append(entry)
                index = len(splits) - 1
            runs.append(LabelRun(fold, count, index, tuple(entry["train"])))
    if not existed or len(splits) != written:
        write_atomically(path, lambda temporary: temporary.write_text(json.dumps(splits, indent=1)))
        what = [] if existed else ["nnU-Net's default 5-fold split"]
        if len(splits) != written:
            what.append(f"folds {written}..{len(splits) - 1} for the label subsets (existing folds unchanged)")
        print(f"{path}: wrote {' and '.join(what)}", flush=True)
    return runs
