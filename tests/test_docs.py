"""The docs hold together: docs/settings.md is what ``make docs`` writes from the code, every relative link and
anchor in README.md, CHANGELOG.md and docs/*.md resolves, every repository path they cite exists, every page of
docs/ is in the README's index, and the README stays short enough to read (≤ 300 lines)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PATH_IN_CODE = re.compile(r"`((?:agent|bench|deploy|docs|examples|harness|helm|scripts|tests)/[A-Za-z0-9_./-]*)`")
README_MAX_LINES = 300


def prose(text: str) -> str:
    """``text`` without its fenced code blocks (a ``#`` there is a comment, a ``[x](y)`` is code)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor GitHub makes for ``page``'s headings (a repeated heading gets ``-1``, ``-2``, …)."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page.read_text()), flags=re.M):
        base = slug(heading)
        seen[base] = seen.get(base, -1) + 1
        if seen[base]:
            seen[f"{base}-{seen[base]}"] = 0
    return set(seen)


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "scripts" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_reference_is_current() -> None:
    """docs/settings.md is exactly what scripts/gen_reference.py renders from the code (``make docs``)."""
    generator = load_generator()
    assert generator.OUT.read_text() == generator.render(), "docs/settings.md is stale: run make docs"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    """Every relative link points to a file that exists, and its ``#anchor`` (in a Markdown file) to a heading."""
    broken = []
    for link in LINK.findall(prose(page.read_text())):
        if "://" in link or link.startswith("mailto:"):
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(link)
    assert broken == []


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "CHANGELOG.md"], ids=lambda p: p.name)
def test_every_cited_path_exists(page: Path) -> None:
    """Every repository path in backticks exists (the changelog may name what is gone)."""
    cited = {p for p in PATH_IN_CODE.findall(page.read_text()) if not (ROOT / p).exists()}
    assert sorted(cited) == []


def test_the_readme_indexes_every_page() -> None:
    """The README's documentation index links every page of docs/, each on a line of its own."""
    text = README.read_text()
    index = text[text.index("\n## Documentation\n"):]
    listed = {Path(link).name for link in LINK.findall(index) if link.startswith("docs/")}
    assert listed == {p.name for p in (ROOT / "docs").glob("*.md")}


def test_the_readme_is_short() -> None:
    """The README routes a newcomer; the reference lives in docs/."""
    assert len(README.read_text().splitlines()) <= README_MAX_LINES
