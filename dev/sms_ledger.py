"""What dev.sms_gateway was sent and what became of each reply, plus the outcomes scripted per
number; thread-safe, since werkzeug serves each connection from a thread of its own."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from dev.sms_protocol import ACCEPTED_CODES, Outcome, check_outcome, unscripted_outcome

# A message's `reply`: being written, reached the client, or never did.
PENDING, DELIVERED, CUT = "pending", "delivered", "cut"
_REPLIES = (PENDING, DELIVERED, CUT)


class Ledger:
    """The gateway's records: requests, messages by id and by phone and body, scripts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Forget messages, scripts and counters. Requests still being answered stay counted in
        flight until they end (a caller that gave up on one may have left it here)."""
        with self._lock:
            self._messages: list[dict[str, Any]] = []
            self._by_id: dict[str, dict[str, Any]] = {}
            # The accepted messages by phone and body, and by the fate of their reply, kept
            # as they change so that stats() stays cheap for a benchmark polling it.
            self._copies: dict[tuple[str, str], list[dict[str, Any]]] = {}
            self._replies = dict.fromkeys(_REPLIES, 0)
            self._scripts: dict[str, deque[Outcome]] = {}
            self._requests = 0
            self._max_in_flight = self._in_flight

    @property
    def requests(self) -> int:
        """How many requests reached the messaging endpoint, whatever the answer."""
        return self._requests

    def request_started(self) -> None:
        """Count a request to the messaging endpoint, now in flight."""
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def request_ended(self) -> None:
        """A request counted by `request_started` is answered (or abandoned)."""
        with self._lock:
            self._in_flight -= 1

    def script(self, phone: str, *outcomes: Any) -> None:
        """Queue outcomes for `phone`, used up one per request to it."""
        checked = [check_outcome(outcome) for outcome in outcomes]
        with self._lock:
            self._scripts.setdefault(phone.strip(), deque()).extend(checked)

    def next_outcomes(self, numbers: list[str]) -> list[Outcome]:
        """Take the next outcome of each number: its script's, else the unscripted one."""
        with self._lock:
            return [self._next_outcome(number) for number in numbers]

    def _next_outcome(self, number: str) -> Outcome:
        queue = self._scripts.get(number)
        return queue.popleft() if queue else unscripted_outcome(number)

    def record(self, records: list[dict[str, Any]]) -> None:
        """Keep the messages of one answered request; the accepted ones wait for their reply's
        verdict (`settle`)."""
        with self._lock:
            self._messages.extend(records)
            for record in records:
                if record["status_code"] in ACCEPTED_CODES:
                    self._by_id[record["message_id"]] = record
                    self._copies.setdefault((record["to"], record["message"]), []).append(record)
                    self._replies[PENDING] += 1

    def settle(self, records: list[dict[str, Any]], reached: bool) -> None:
        """Mark whether the reply carrying `records` reached the client."""
        # The first verdict on a reply stands: a later failure cannot un-deliver it.
        verdict, settled_at = (DELIVERED if reached else CUT), time.time()
        with self._lock:
            for record in records:
                if record["reply"] != PENDING:
                    continue
                record["reply"], record["reply_settled_at"] = verdict, settled_at
                # Records from before a reset() are no longer counted.
                if self._by_id.get(record["message_id"]) is record:
                    self._replies[PENDING] -= 1
                    self._replies[verdict] += 1

    def messages(self) -> list[dict[str, Any]]:
        """A copy of every recorded message, in the order accepted."""
        with self._lock:
            return [dict(m) for m in self._messages]

    def message(self, message_id: str) -> dict[str, Any]:
        """The recorded message with this id; KeyError if the gateway never issued it."""
        with self._lock:
            return dict(self._by_id[message_id])

    def phone_of(self, message_id: str) -> str | None:
        """The number a message this gateway issued went to, else None."""
        with self._lock:
            known = self._by_id.get(message_id)
        return known["to"] if known else None

    def stats(self) -> dict[str, Any]:
        """Counters: requests, messages, accepted, in flight and its peak, what is scripted, the
        accepted messages by the fate of their reply, and the copies beyond the first."""
        with self._lock:
            accepted = sum(self._replies.values())
            return {
                "requests": self._requests,
                "messages": len(self._messages),
                "accepted": accepted,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "scripted": {p: list(q) for p, q in self._scripts.items() if q},
                "replies": dict(self._replies),
                "duplicates": accepted - len(self._copies),
            }

    def copies(self) -> list[dict[str, Any]]:
        """The accepted messages grouped by phone and body (see `FakeSmsGateway.copies`)."""
        fields = ("message_id", "received_at", "accepted_at", "reply", "reply_settled_at")
        with self._lock:
            return [
                {
                    "to": to,
                    "message": body,
                    "copies": [{name: m[name] for name in fields} for m in found],
                    "duplicates": len(found) - 1,
                    "cut": sum(m["reply"] == CUT for m in found),
                    "unexplained": sum(m["reply"] == DELIVERED for m in found[:-1]),
                }
                for (to, body), found in self._copies.items()
            ]
