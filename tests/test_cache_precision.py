"""The verdict of the cache-precision study (benchmarks/cache_precision.py) from its records: the fixed rule
|float16 - float32| at each seed against the float32 seed-to-seed difference. No subprocess."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cache_precision.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("benchmark_cache_precision", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def record(precision: str, seed: int, mae: float, corr: float) -> dict:
    """A study record whose tumour rows give ``mae`` and ``corr`` as their mean over two phases."""
    rows = [{"estimate": estimate, "phase": phase, "region": region, "mae": value + offset,
             "enhancement_corr": corr + offset}
            for phase, offset in ((1, -0.01), (2, 0.01))
            for estimate, region, value in (("synthetic", "tumour", mae), ("synthetic", "breast", 9.0),
                                            ("identity", "tumour", 5.0))]
    return {"settings": {"precision": precision, "seed": seed, "steps": 500}, "machine": "test machine",
            "training_seconds": 1200.0, "rows": rows}


def frame_of(study, records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{**r["settings"], **study.measures_of(r)} for r in records])


def test_measures_are_the_synthetic_tumour_rows_averaged_over_phases(study) -> None:
    assert study.measures_of(record("float16", 0, 0.40, 0.80)) == pytest.approx({"mae": 0.40,
                                                                                "enhancement_corr": 0.80})


def test_verdict_compares_the_precision_gap_with_the_seed_to_seed_difference(study) -> None:
    close = [record("float16", 0, 0.41, 0.80), record("float32", 0, 0.40, 0.80),
             record("float16", 1, 0.46, 0.78), record("float32", 1, 0.45, 0.79)]
    lines = study.verdict(frame_of(study, close))
    assert all(line.endswith("within noise") for line in lines)
    far = [record("float16", 0, 0.60, 0.80), *close[1:]]
    mae_line, corr_line = study.verdict(frame_of(study, far))
    assert mae_line.endswith("beyond noise") and corr_line.endswith("within noise")
    partial = study.verdict(frame_of(study, close[:3]))
    assert all("not every run is recorded yet" in line for line in partial)


def test_report_names_the_command_and_every_run(study) -> None:
    records = [record("float16", 0, 0.41, 0.80), record("float32", 0, 0.40, 0.80),
               record("float16", 1, 0.46, 0.78), record("float32", 1, 0.45, 0.79)]
    text = study.report(records, "python benchmarks/cache_precision.py --workdir /tmp/x")
    assert "`python benchmarks/cache_precision.py --workdir /tmp/x`" in text and "--steps 500" in text
    assert text.count("| float16 |") == 2 and text.count("| float32 |") == 2 and "2.40" in text  # s per step
