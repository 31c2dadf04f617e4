"""Study records: written as runs finish, read back to skip them and to rebuild reports on another machine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from nnunet_dkm.errors import NnunetDkmError
from nnunet_dkm.evaluation.records import RecordStore, RunIdentity, per_case_frame

IDENTITY = RunIdentity(study="convergence", method="dkm", trainer="nnUNetTrainerDKM_5epochs",
                       dataset="Dataset990_DKMPhantom", dataset_fingerprint="0123456789abcdef", configuration="2d",
                       plans="nnUNetPlans", fold=1, repeat=0, schedule="5epochs", base_fold=1, dm_sha256="ab" * 32)
SCORES = pd.DataFrame({"case": ["b", "a"], "dice": [0.5, float("nan")], "jaccard": [0.33, float("nan")],
                       "hd95_mm": [3.0, 0.0]})


def test_a_record_round_trips_and_marks_its_run_done(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "convergence")
    assert not store.has(IDENTITY) and store.all() == []
    path = store.write(IDENTITY, SCORES, wall_seconds=412.34)
    assert path.name.startswith("dkm__fold1__repeat0__") and path.suffix == ".json"
    assert store.has(IDENTITY)
    record = json.loads(path.read_text())  # strict JSON: the NaN Dice of two empty masks is null
    assert record["identity"]["dm_sha256"] == "ab" * 32 and record["wall_seconds"] == 412.3
    assert record["per_case"][1] == {"case": "a", "dice": None, "jaccard": None, "hd95_mm": 0.0}
    for stated in ("machine", "load", "commit", "finished"):
        assert record[stated]
    frame = per_case_frame(store.all())
    assert list(frame["case"]) == ["b", "a"] and frame["dice"].isna().tolist() == [False, True]
    assert (frame["trainer"] == "nnUNetTrainerDKM_5epochs").all()


@pytest.mark.parametrize("changed", [{"dm_sha256": "cd" * 32}, {"dataset_fingerprint": "fedcba9876543210"},
                                     {"repeat": 1}, {"num_labelled": "4"}, {"trainer": "nnUNetTrainerDKM_20epochs"}])
def test_a_run_that_differs_in_what_decides_its_result_is_not_done(tmp_path: Path, changed: dict) -> None:
    store = RecordStore(tmp_path)
    store.write(IDENTITY, SCORES, wall_seconds=1.0)
    assert not store.has(replace(IDENTITY, **changed))


def test_a_records_folder_copied_under_another_name_still_marks_its_runs_done(tmp_path: Path) -> None:
    RecordStore(tmp_path / "convergence").write(IDENTITY, SCORES, wall_seconds=1.0)
    (tmp_path / "convergence").rename(tmp_path / "copied")
    assert RecordStore(tmp_path / "copied").has(replace(IDENTITY, study="copied"))


def test_a_damaged_record_is_named(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    path = store.write(IDENTITY, SCORES, wall_seconds=None)
    path.write_text(path.read_text()[:40])
    with pytest.raises(NnunetDkmError, match=f"{path}: unreadable study record"):
        store.all()
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(NnunetDkmError, match="not a study record"):
        store.read(IDENTITY)
