"""The documents stand on their own: every relative link in README.md, BENCHMARKS.md,
CHANGELOG.md and docs/*.md leads to a file of the repository (and, with a #fragment, to a
heading there), and no tracked text file cites a document that is not in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "CHANGELOG.md",
               *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")  # an inline code span such as `kernel[grid](...)`


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of every heading of a Markdown file (duplicates numbered as GitHub does)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        if line.startswith("#"):
            base = slug(line.lstrip("#"))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """Relative link targets of a Markdown file, outside code blocks and spans."""
    text = CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t)]


def test_slug_follows_github():
    assert slug(" ASPP and the DeepLabV3 head") == "aspp-and-the-deeplabv3-head"
    assert slug("How `atrous bench` measures") == "how-atrous-bench-measures"
    assert slug("ASPP: what the task engine changed") == "aspp-what-the-task-engine-changed"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in links(doc):
        file_part, _, fragment = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        outside = not dest.exists() or ROOT not in (dest, *dest.parents)
        if outside or (fragment and dest.suffix == ".md" and fragment not in anchors(dest)):
            broken.append(target)
    assert broken == [], f"{doc.name}: links that lead nowhere: {broken}"


def test_no_file_cites_a_document_outside_the_repository():
    """DESIGN.md was a planning note that never lived in this repository."""
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    citing = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".toml", ".txt", ".cfg", ".ini") and \
                name != ".ci/run":
            continue
        if name == "tests/test_docs.py" or not path.is_file():
            continue
        if re.search(r"DESIGN(\.md| section)", path.read_text(encoding="utf-8",
                                                             errors="replace")):
            citing.append(name)
    assert citing == [], f"files that cite DESIGN.md, which is not in the repository: {citing}"
