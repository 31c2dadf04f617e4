"""Every relative link in README.md and docs/*.md resolves to a file or folder of the repository.

Also: README.md is a landing page of at most 250 lines.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCUMENTS = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

# [text](target) and ![alt](target); the target ends at the first space (an optional "title") or ")"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
EXTERNAL = ("http://", "https://", "mailto:")


def relative_links(document: Path) -> list[tuple[int, str]]:
    """(line number, target without #anchor) of every relative link outside code blocks and inline code."""
    links = []
    in_fence = False
    for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if target.startswith(EXTERNAL) or target.startswith("#"):
                continue
            links.append((number, target.split("#", 1)[0]))
    return links


def test_docs_folder_exists():
    assert len(DOCUMENTS) > 1, "docs/*.md not found"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_relative_links_resolve(document: Path):
    broken = [
        f"{document.relative_to(REPO_ROOT)}:{number}: {target}"
        for number, target in relative_links(document)
        if not (document.parent / target).exists()
    ]
    assert not broken, "links to nothing in the repository:\n" + "\n".join(broken)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_links_stay_inside_the_repository(document: Path):
    outside = [
        f"{document.relative_to(REPO_ROOT)}:{number}: {target}"
        for number, target in relative_links(document)
        if not (document.parent / target).resolve().is_relative_to(REPO_ROOT)
    ]
    assert not outside, "links outside the repository:\n" + "\n".join(outside)


def test_link_pattern_finds_links_and_images():
    line = "see [a](docs/a.md#x), ![b](benchmarks/b.png), [c](https://x.org), [d](#here), `[e](nowhere.md)`"
    targets = [target for target in LINK.findall(INLINE_CODE.sub("", line))]
    assert targets == ["docs/a.md#x", "benchmarks/b.png", "https://x.org", "#here"]


def test_readme_is_a_landing_page():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, at most {README_MAX_LINES}"
