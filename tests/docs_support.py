"""The README and docs/ as the tests read them: a section under its heading, its code blocks,
its tables, and the links between the files (anchors as GitHub makes them from headings)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^(#{1,6}) +(.+?) *#*$", re.MULTILINE)
# [text](target): the target up to a space or the closing parenthesis.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A file of the tree naming a document and maybe a heading in it, as an alert's description
# names a runbook entry.
DOC_REFERENCE = re.compile(r"(?<![\w/.-])((?:docs/[\w-]+|README)\.md)(#[\w-]+)?")


def prose(text: str) -> str:
    """`text` without its fenced code blocks (their `#` lines are no headings)."""
    return FENCE.sub("", text)


def section(path: Path, heading: str) -> str:
    """The text under `heading` (e.g. "## Runbook") up to the next heading of its level or
    above; fails when the file has no such heading."""
    text = path.read_text()
    level = len(heading) - len(heading.lstrip("#"))
    found = re.search(rf"^{re.escape(heading)} *$", text, re.MULTILINE)
    assert found, f"{path.relative_to(ROOT)} has no heading {heading!r}"
    rest = text[found.end() :]
    following = [
        match.start()
        for match in HEADING.finditer(rest)
        if len(match[1]) <= level and not _in_fence(rest, match.start())
    ]
    return rest[: following[0]] if following else rest


def _in_fence(text: str, position: int) -> bool:
    return any(fence.start() < position < fence.end() for fence in FENCE.finditer(text))


def code_blocks(text: str, language: str) -> list[str]:
    """The contents of the ```language blocks of `text`, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```[ \t]*$", text, re.MULTILINE | re.DOTALL)


def table_names(text: str) -> list[str]:
    """The `NAME`s in the first column of the tables in `text` (several to a cell at times)."""
    names = []
    for line in text.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([A-Za-z][\w]*)`", line.split("|")[1])
    return names


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of every heading of `path`."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(prose(path.read_text())):
        base = slug(match[2])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(f"{base}-{count}" if count else base)
    return found


def _missing(target: Path, anchor: str) -> str | None:
    if not target.is_file():
        return "no such file"
    if anchor and anchor not in anchors(target):
        return f"no heading #{anchor}"
    return None


def broken_links(path: Path) -> list[str]:
    """The links of the Markdown file `path` to a file of the tree, or a heading in one, that
    is not there."""
    broken = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        reason = _missing((path.parent / file).resolve() if file else path, anchor)
        if reason:
            broken.append(f"{path.relative_to(ROOT)}: ({target}) {reason}")
    return broken


def broken_references(path: Path) -> list[str]:
    """The documents the file `path` names (docs/<name>.md, with #<anchor> or without, and the
    README) that are not there, or lack the heading."""
    broken = []
    for file, anchor in DOC_REFERENCE.findall(path.read_text(errors="replace")):
        reason = _missing(ROOT / file, anchor.lstrip("#"))
        if reason:
            broken.append(f"{path.relative_to(ROOT)}: {file}{anchor} {reason}")
    return broken
