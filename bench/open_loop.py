"""Load at a fixed arrival rate (an open loop), keeping every answer's moment and order id.

bench/load.py runs a closed loop: each connection sends its next request when the last answer
arrived, so the rate is whatever the service manages. Here request i is due at start + i/rate
whatever the answers, and whichever of `connections` keep-alive connections is free sends it;
a request no connection is free for waits, and that wait counts in its latency; one still
waiting `give_up` seconds after it was due is never sent (its record stays null), so a service
that cannot keep up ends the run late by that much, not by its whole backlog. Each answer is
written out with its moment (epoch seconds, the clock the SMS gateway stamps its messages
with) and the order id it names, for the harness to match with the messages the gateway got.

    python -m bench.open_loop --spec spec.json --out answers.json

where spec.json holds the fields of `OpenLoopSpec`. Only the Python standard library: one
process, one thread per connection, which is plenty for a hundred requests a second.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.load import PLACEHOLDER

# Per request: when it was due, sent and answered (epoch seconds), its HTTP status (0: no
# answer), whether its body had the marker, and the id found at `id_path` (None if none).
FIELDS = ("due", "sent", "answered", "status", "ok", "id")


@dataclass(frozen=True)
class OpenLoopSpec:
    """`rate` requests a second for `duration` seconds; `template`'s @VALUE@ becomes
    `prefix`-N, a value of its own per request (an idempotency key)."""

    url: str
    template: str
    marker: str
    rate: float
    duration: float
    connections: int = 64
    give_up: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)
    prefix: str = "open"
    id_path: tuple[str, ...] = ("data", "createOrder", "order", "id")

    @property
    def count(self) -> int:
        return round(self.rate * self.duration)


def _found(answer: bytes, path: tuple[str, ...]) -> Any:
    try:
        value: Any = json.loads(answer)
        for key in path:
            value = value[key]
    except (ValueError, KeyError, TypeError, IndexError):
        return None
    return value


def _sender(spec: OpenLoopSpec, due: queue.Queue, out: list[list[Any] | None]) -> None:
    """One keep-alive connection sending each request it takes from `due` until None."""
    parts = urlsplit(spec.url)
    path = parts.path or "/"
    headers = {"Content-Type": "application/json", **spec.headers}
    head, _, tail = spec.template.partition(PLACEHOLDER)
    marker = spec.marker.encode()

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)

    connection = connect()
    while (item := due.get()) is not None:
        index, due_at = item
        if time.time() - due_at > spec.give_up:
            continue
        time.sleep(max(0.0, due_at - time.time()))
        body = f"{head}{spec.prefix}-{index}{tail}".encode()
        sent = time.time()
        try:
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException):
            out[index] = [due_at, sent, time.time(), 0, False, None]
            connection.close()
            connection = connect()
            continue
        answered = time.time()
        ok = response.status == 200 and marker in answer
        out[index] = [due_at, sent, answered, response.status, ok, _found(answer, spec.id_path)]
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
    connection.close()


def generate(spec: OpenLoopSpec) -> dict[str, Any]:
    """Send `spec.count` requests on schedule; every request's record (`FIELDS`)."""
    due: queue.Queue[tuple[int, float] | None] = queue.Queue()
    out: list[list[Any] | None] = [None] * spec.count
    senders = [
        threading.Thread(target=_sender, args=(spec, due, out), daemon=True)
        for _ in range(spec.connections)
    ]
    for sender in senders:
        sender.start()
    started = time.time() + 0.2  # the connections' threads are up
    for index in range(spec.count):
        due_at = started + index / spec.rate
        # Handed over a little early: the sender itself waits for the moment.
        time.sleep(max(0.0, due_at - 0.005 - time.time()))
        due.put((index, due_at))
    for _ in senders:
        due.put(None)
    for sender in senders:
        sender.join(timeout=60)
    return {
        "started": started,
        "rate": spec.rate,
        "fields": list(FIELDS),
        "requests": out,
    }


def run_open_loop(spec: OpenLoopSpec, work_dir: Path, name: str) -> dict[str, Any]:
    """Run the generator in a process of its own; what `generate` returned."""
    spec_file = work_dir / f"{name}.spec.json"
    spec_file.write_text(json.dumps(dataclasses.asdict(spec)))
    out_file = work_dir / f"{name}.answers.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.open_loop", "--spec", str(spec_file), "--out", str(out_file)],
        capture_output=True,
        text=True,
        timeout=spec.duration + 90,
        check=False,
    )
    (work_dir / f"{name}.out").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        raise RuntimeError(f"open-loop generator failed: {completed.stderr[-2000:]}")
    return json.loads(out_file.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.open_loop", description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="JSON file of OpenLoopSpec fields")
    parser.add_argument("--out", type=Path, required=True, help="where to write the answers")
    args = parser.parse_args(argv)
    fields = json.loads(args.spec.read_text())
    fields["id_path"] = tuple(fields.get("id_path", OpenLoopSpec.id_path))
    result = generate(OpenLoopSpec(**fields))
    args.out.write_text(json.dumps(result))
    missing = sum(record is None for record in result["requests"])
    print(json.dumps({"requests": len(result["requests"]), "unsent": missing}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
