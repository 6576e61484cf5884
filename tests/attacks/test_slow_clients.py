"""Attack: slowloris. Clients that send their request a byte at a time, each byte well within
any per-read timeout, must not hold the web process's threads for good: a body too slow is
cut off with 408, headers too slow with the connection, and every other client is served.

The service runs as the Procfile's `web` (gunicorn's threaded worker, one process of
WEB_THREADS=4 threads, see tests/production.py) in production mode, over this run's
PostgreSQL and Redis and the development identity provider; the attackers are raw sockets.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

import pytest
import requests

from tests.production import PATIENCE_SECONDS, production_env, web_server
from web.slow_clients import Watchdog

THREADS = 4  # what web_server() starts the worker with
# Twice as many attackers as threads: every thread is taken, and more wait for one.
ATTACKERS = 2 * THREADS
DECLARED_LENGTH = 4000
# Between two bytes of an attacker: far less than any per-read timeout would allow.
TRICKLE_SECONDS = 0.2


@pytest.fixture
def env(database_url, idp, app):
    """`env(**changes)`: a complete production environment (over the migrated database)."""
    return lambda **changes: production_env(database_url, idp.issuer, **changes)


def _started(url: str, *, body: bool) -> socket.socket:
    """A connection that has sent a POST's headers and the first byte of its body, or (not
    `body`) the first of its headers."""
    address = urlsplit(url)
    attacker = socket.create_connection((address.hostname, address.port))
    head = f"POST /graphql HTTP/1.1\r\nHost: {address.netloc}\r\n".encode()
    if body:
        head += b"Content-Type: application/json\r\n"
        head += f"Content-Length: {DECLARED_LENGTH}\r\n\r\n{{".encode()
    else:
        head += b"X-Slow: "  # a header whose value never ends
    attacker.sendall(head)
    return attacker


@contextmanager
def _slowloris(url: str, count: int, *, body: bool) -> Iterator[list[socket.socket]]:
    """`count` connections that keep sending their bodies (or headers), a byte at a time,
    until the server cuts them off or the block ends."""
    attackers = [_started(url, body=body) for _ in range(count)]
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(TRICKLE_SECONDS):
            for attacker in attackers:
                with suppress(OSError):  # cut off by the server: what the test wants
                    attacker.send(b"a")

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        yield attackers
    finally:
        stop.set()
        sender.join()
        for attacker in attackers:
            attacker.close()


def _normal_request(url: str) -> requests.Response:
    # Sent after the attackers, so it waits behind all of them for a thread.
    query = {"query": "{ __typename }"}
    return requests.post(f"{url}/graphql", json=query, timeout=PATIENCE_SECONDS)


def _everything_until_closed(connection: socket.socket) -> bytes:
    """What the server sends on `connection` until it closes it (bounded by the patience)."""
    connection.settimeout(PATIENCE_SECONDS)
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_slow_bodies_neither_hold_every_thread_nor_stay_connected(env, tmp_path):
    with (
        web_server(env(), tmp_path) as server,
        _slowloris(server.url, ATTACKERS, body=True) as attackers,
    ):
        answer = _normal_request(server.url)
        cut_off = _everything_until_closed(attackers[0])

    assert answer.status_code == 200
    assert answer.json() == {"data": {"__typename": "Query"}}
    head, _, body = cut_off.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
    assert "Traceback" not in server.output


def test_slow_headers_neither_hold_every_thread_nor_stay_connected(env, tmp_path):
    with (
        web_server(env(), tmp_path) as server,
        _slowloris(server.url, ATTACKERS, body=False) as attackers,
    ):
        answer = _normal_request(server.url)
        cut_off = _everything_until_closed(attackers[0])

    assert answer.status_code == 200
    assert answer.json() == {"data": {"__typename": "Query"}}
    assert cut_off == b""  # closed, the request never read to its end
    assert "Traceback" not in server.output


def test_a_body_sent_at_once_is_served_as_before(env, tmp_path):
    # The control: a whole body, in one write, is read and answered like any other.
    with web_server(env(), tmp_path) as server:
        address = urlsplit(server.url)
        body = json.dumps({"query": "{ __typename }"}).encode()
        with socket.create_connection((address.hostname, address.port)) as client:
            client.sendall(
                b"POST /graphql HTTP/1.1\r\n"
                + f"Host: {address.netloc}\r\nContent-Type: application/json\r\n".encode()
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            answer = _everything_until_closed(client)

    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b'{"data":{"__typename":"Query"}}\n')


# -- the watchdog itself ------------------------------------------------------------------


def test_the_watchdog_cuts_a_read_still_going_at_its_deadline_and_nothing_else():
    watchdog = Watchdog(0.2)
    finished_server, finished_client = socket.socketpair()
    slow_server, slow_client = socket.socketpair()
    with finished_server, finished_client, slow_server, slow_client:
        slow_server.settimeout(PATIENCE_SECONDS)
        with watchdog.watch(finished_server) as finished:
            pass  # read in time
        with watchdog.watch(slow_server) as slow:
            slow_client.send(b"{")
            received = slow_server.recv(1024) + slow_server.recv(1024)  # waits until cut
        # Its deadline came first: had it been cut, this would read the end instead.
        finished_client.send(b"next request")
        after = finished_server.recv(1024)

    assert (received, slow.expired) == (b"{", True)
    assert (after, finished.expired) == (b"next request", False)
