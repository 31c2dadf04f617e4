"""The report helpers every report shares: the header and markdown tables."""

from __future__ import annotations

import pandas as pd
from conftest import squeeze

from nnunet_dkm.reporting import ReportHeader, markdown_table


def test_header_states_command_date_machine_commit_and_notes():
    lines = ReportHeader("A study", "python x.py --n 2", "host (cpu)", date="2026-01-01 10:00 UTC", commit="abc123",
                         notes=["**Dataset:** phantom", "seed 0"]).lines()
    assert lines == ["# A study", "", "- **Command:** `python x.py --n 2`",
                     "- **Date / machine:** 2026-01-01 10:00 UTC; host (cpu)", "- **Commit:** abc123",
                     "- **Dataset:** phantom", "- seed 0"]
    assert ReportHeader("t", "c", "m").commit  # git describe, or "unknown" outside a checkout


def test_markdown_table_keeps_cells_as_given():
    lines = markdown_table([{"N": 2, "runs": 2, "Dice": "0.500", "verdict": ""},
                            {"N": 16, "runs": 4, "Dice": "0.125 ± 0.010", "verdict": "better"}])
    assert len(lines) == 4 and set(lines[1]) <= set("|:-")
    assert squeeze(lines[0]) == "| N | runs | Dice | verdict |"
    assert squeeze(lines[2]).startswith("| 2 | 2 | 0.500 |")  # no number parsing: 0.500 stays 0.500
    assert squeeze(lines[3]) == "| 16 | 4 | 0.125 ± 0.010 | better |"
    assert markdown_table(pd.DataFrame({"a": ["x"]})) == ["| a   |", "|:----|", "| x   |"]
    assert squeeze(markdown_table([], columns=["a", "b"])[0]) == "| a | b |"
