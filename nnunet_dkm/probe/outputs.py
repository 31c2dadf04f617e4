"""Writing the probe's results: ``results.md``, ``results.csv`` (one line per row x classifier x report case) and
``probe.png``, each atomically."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from nnunet_dkm.atomic import remove_stale_temporaries, report_removed, write_atomically
from nnunet_dkm.probe.figure import probe_figure
from nnunet_dkm.probe.results import ProbeOptions, ProbeResult
from nnunet_dkm.probe.tables import (
    ReportContext,
    chosen_settings,
    comparisons,
    markdown_report,
    summary_markdown,
    summary_table,
)


@dataclass(frozen=True)
class ProbeFiles:
    """Where the outputs go."""

    markdown: Path
    csv: Path
    figure: Path

    @classmethod
    def in_folder(cls, folder: Path, stem: str = "results", figure: str = "probe.png") -> ProbeFiles:
        return cls(folder / f"{stem}.md", folder / f"{stem}.csv", folder / figure)


def per_case_csv(result: ProbeResult) -> pd.DataFrame:
    """The per-case table with each setting's forward time per slice."""
    return result.per_case.merge(result.costs, on="setting", how="left")


def write_results(result: ProbeResult, context: ReportContext, files: ProbeFiles) -> str:
    """Write the three files; returns the summary table as markdown (for printing)."""
    report_removed(remove_stale_temporaries(files.markdown.parent), "partly written file")
    summary = summary_table(result)
    chosen = chosen_settings(summary)
    items = comparisons(result)
    figure = probe_figure(result, summary, chosen)
    write_atomically(files.figure, lambda path: figure.savefig(path, dpi=120))
    relative = files.figure.name if files.figure.parent == files.markdown.parent else str(files.figure)
    context = replace(context, figure=relative)
    text = markdown_report(result, context, summary, items, chosen)
    write_atomically(files.markdown, lambda path: path.write_text(text))
    write_atomically(files.csv, lambda path: per_case_csv(result).to_csv(path, index=False))
    return "\n".join(summary_markdown(summary))


def machine_description(device: str) -> str:
    """Operating system, CPU cores, torch version and device (the benchmark's description)."""
    from nnunet_dkm.evaluation.benchmark.outputs import machine_description as describe

    return describe(device)


def classifier_description(options: ProbeOptions) -> str:
    """One sentence on the classifiers, for the report."""
    return (f"classifiers {', '.join(options.classifiers)}: {options.classifier_settings.describe()}; features "
            f"standardised with the fit pixels' mean / std; at most {options.pixels_per_class} pixels per class and "
            "case")
