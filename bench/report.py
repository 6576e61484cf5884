"""A run's rows (a figure, and the target it is held to, if any), as a table and as JSON."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, and the target it must meet if it has one."""

    metric: str
    value: float | None
    unit: str
    target: str = ""  # e.g. ">= 0.6", empty for a figure shown for information
    passed: bool | None = None

    @property
    def shown_value(self) -> str:
        if self.value is None:
            return "n/a"
        if self.unit == "x":
            return f"{self.value:.2f}x"
        digits = 0 if abs(self.value) >= 100 else 1 if abs(self.value) >= 10 else 2
        return f"{self.value:,.{digits}f} {self.unit}".rstrip()

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: ""}[self.passed]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def check(
    metric: str, value: float | None, unit: str, op: str, limit: float, shown: str | None = None
) -> Row:
    """A row whose value must be `op` (">=", "<=", "<") `limit`."""
    target = f"{op} {shown or f'{limit:g}'}"
    if value is None:
        return Row(metric, None, unit, target, False)
    passed = {">=": value >= limit, "<=": value <= limit, "<": value < limit}[op]
    return Row(metric, value, unit, target, passed)


def format_table(rows: Iterable[Row]) -> str:
    """The rows as an aligned plain-text table (also valid Markdown)."""
    lines = [("metric", "value", "target", "result")]
    lines += [(r.metric, r.shown_value, r.target or "-", r.verdict) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]

    def render(cells: tuple[str, ...]) -> str:
        padded = [
            cell.rjust(width) if i == 1 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:])])


def _command_output(*args: str) -> str | None:
    if not shutil.which(args[0]):
        return None
    try:
        completed = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def machine_info(root: Path) -> dict[str, Any]:
    """What the figures were measured on, and which code."""
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    nproc = _command_output("nproc")
    dirty = _command_output("git", "-C", str(root), "status", "--porcelain", "--untracked=no")
    return {
        "nproc": int(nproc) if nproc and nproc.isdigit() else os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_mb": memory_kb // 1024 if memory_kb else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_at_start": list(os.getloadavg()),
        "git_commit": _command_output("git", "-C", str(root), "rev-parse", "HEAD"),
        "git_uncommitted_changes": bool(dirty),
        "wrk": shutil.which("wrk") is not None,
    }


def write_results(path: Path, document: dict[str, Any], rows: list[Row]) -> None:
    """Write results.json: everything measured plus every row and its verdict."""
    payload = {**document, "table": [asdict(row) | {"shown": row.shown_value} for row in rows]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
