"""Where the web workers' time goes: py-spy samples under load, summarised as top frames.

`record` attaches py-spy to gunicorn's master and its workers for a while (the harness runs a
createOrder load meanwhile) and writes py-spy's "raw" collapsed stacks, which flame-graph tools
read. `summarise` turns them into the frames most samples were in (self) and passed through
(inclusive), and the same by package. On its own:

    python -m bench.profile var/bench/profile-create-gil.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SITE = re.compile(r".*/(?:site|dist)-packages/")


def py_spy() -> str | None:
    """The py-spy executable beside this Python, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(
    pid: int, seconds: float, output: Path, *, gil: bool = False, rate: int = 250
) -> subprocess.Popen[bytes]:
    """Start py-spy sampling `pid` and its subprocesses for `seconds` (with `gil`, only the
    thread holding the GIL); wait() on the result."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    command = [executable, "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
    command += ["--rate", str(rate), "--duration", str(max(1, round(seconds)))]
    command += ["--format", "raw", "--output", str(output)]
    if gil:
        command.append("--gil")
    log = output.with_suffix(".log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _short(frame: str) -> str:
    """'function (path/to/file.py:12)' as 'function (package/file.py)'."""
    found = _FRAME.match(frame)
    if not found:
        return frame
    path = _SITE.sub("", found["file"])
    path = re.sub(r".*/(?=(web|worker|models|bench|dev)/)", "", path)
    return f"{found['function']} ({path})"


@dataclass(frozen=True)
class Summary:
    samples: int
    self_frames: list[tuple[str, int]]
    inclusive_frames: list[tuple[str, int]]
    self_packages: list[tuple[str, int]]
    inclusive_packages: list[tuple[str, int]]

    def as_dict(self) -> dict[str, object]:
        def share(pairs: list[tuple[str, int]]) -> list[dict[str, object]]:
            total = max(1, self.samples)
            return [
                {"frame": k, "samples": v, "percent": round(100 * v / total, 1)} for k, v in pairs
            ]

        return {
            "samples": self.samples,
            "self": share(self.self_frames),
            "inclusive": share(self.inclusive_frames),
            "self_by_package": share(self.self_packages),
            "inclusive_by_package": share(self.inclusive_packages),
        }

    def text(self) -> str:
        total = max(1, self.samples)
        lines = [f"{self.samples} samples"]
        for title, pairs in (
            ("self time by package", self.self_packages),
            ("inclusive time by package", self.inclusive_packages),
            ("self time, top frames", self.self_frames),
            ("inclusive time, top frames", self.inclusive_frames),
        ):
            lines.append(f"\n{title}:")
            lines += [f"  {100 * v / total:5.1f}%  {k}" for k, v in pairs]
        return "\n".join(lines)


def summarise(raw: Path, top: int = 25) -> Summary:
    """Count samples per frame in py-spy's raw output ('a;b;c COUNT' per line)."""
    self_frames: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_packages: Counter[str] = Counter()
    inclusive_packages: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        number = int(count)
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += number
        self_frames[frames[-1]] += number
        self_packages[_package_of_short(frames[-1])] += number
        for frame in set(frames):
            inclusive[frame] += number
        for package in {_package_of_short(f) for f in frames}:
            inclusive_packages[package] += number
    return Summary(
        samples,
        self_frames.most_common(top),
        inclusive.most_common(top),
        self_packages.most_common(top),
        inclusive_packages.most_common(top),
    )


def _package_of_short(short: str) -> str:
    found = _FRAME.match(short)
    if not found:
        return short
    path = found["file"]
    if path.startswith("/") or path.startswith("<"):
        return "python (stdlib/other)"
    return path.split("/", 1)[0].removesuffix(".py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("raw", type=Path, help="py-spy --format raw output")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print(summarise(args.raw, args.top).text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
