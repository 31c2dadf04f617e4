"""Identities of files and datasets: what a study record, a shipped DM and the virtual-contrast cache name."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (e.g. a DM checkpoint's identity)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_sha256(value: Any) -> str:
    """SHA-256 of ``value`` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _rounded(value: Any) -> Any:
    """Floats to 4 significant digits, inside dicts and lists."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def dataset_fingerprint(raw_dataset: Path, preprocessed_dataset: Path) -> str:
    """16 hex digits that identify a planned dataset: its ``dataset.json`` and, from nnU-Net's
    ``dataset_fingerprint.json``, the cases' shapes and spacings and the intensity statistics rounded to 4 significant
    digits (so that the last bits another CPU computes do not change it)."""
    fingerprint = json.loads((Path(preprocessed_dataset) / "dataset_fingerprint.json").read_text())
    content = {"dataset.json": json.loads((Path(raw_dataset) / "dataset.json").read_text()),
               "shapes": fingerprint.get("shapes_after_crop"), "spacings": _rounded(fingerprint.get("spacings")),
               "intensities": _rounded(fingerprint.get("foreground_intensity_properties_per_channel"))}
    return canonical_sha256(content)[:16]
