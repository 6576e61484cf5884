"""Attack: a chunked body over the body limit. A chunked body declares no length, and
werkzeug read one only up to MAX_CONTENT_LENGTH (64 KiB) and stopped there: a valid document
padded to exactly the limit, followed by anything at all, ran as if the prefix were the whole
body and answered 200. It is refused with 413, and the connection closed, since what is left
of it unread would be taken for the next request.

The service runs as the Procfile's `web` (gunicorn) in production mode; the client is a raw
socket that sends the body in chunks.
"""

from __future__ import annotations

import io
import json
import socket
from urllib.parse import urlsplit

import pytest

from tests.production import PATIENCE_SECONDS, production_env, web_server

LIMIT = 65_536  # MAX_BODY_BYTES' default


@pytest.fixture
def env(database_url, idp, app):
    return lambda **changes: production_env(database_url, idp.issuer, **changes)


def padded(size: int) -> bytes:
    """`{"query":"{__typename}"}` padded with spaces to `size` bytes."""
    document = b'{"query":"{__typename}"}'
    return document + b" " * (size - len(document))


def send_chunked(url: str, body: bytes, chunk: int = 8192) -> tuple[bytes, bytes]:
    """POST `body` in chunks of `chunk` bytes on a keep-alive connection; the answer's head
    and body, everything the server sent until it closed the connection or the patience ran
    out."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port)) as client:
        client.sendall(
            b"POST /graphql HTTP/1.1\r\n"
            + f"Host: {address.netloc}\r\nContent-Type: application/json\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for start in range(0, len(body), chunk):
            part = body[start : start + chunk]
            client.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        client.sendall(b"0\r\n\r\n")
        client.settimeout(PATIENCE_SECONDS)
        received = b""
        try:
            while piece := client.recv(65536):
                received += piece
                head, _, rest = received.partition(b"\r\n\r\n")
                length = _content_length(head)
                if b"connection: close" not in head.lower() and len(rest) >= length >= 0:
                    break  # kept alive: the whole answer is in
        except TimeoutError:
            pass
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return -1


def test_a_chunked_body_over_the_limit_is_refused_and_the_connection_closed(env, tmp_path):
    with web_server(env(), tmp_path) as server:
        head, body = send_chunked(server.url, padded(LIMIT) + b"GARBAGE NOT JSON")

    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"connection: close" in head.lower()
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "REQUEST_ENTITY_TOO_LARGE"
    assert "Traceback" not in server.output


def test_a_chunked_body_of_exactly_the_limit_is_served(env, tmp_path):
    with web_server(env(), tmp_path) as server:
        head, body = send_chunked(server.url, padded(LIMIT))

    assert head.startswith(b"HTTP/1.1 200 "), head
    assert json.loads(body) == {"data": {"__typename": "Query"}}


def test_a_chunked_body_over_the_limit_is_refused_by_any_server(production_app):
    # The tests' client is not gunicorn: the same refusal, from the same hook.
    response = production_app.test_client().post(
        "/graphql",
        input_stream=io.BytesIO(padded(LIMIT) + b"GARBAGE NOT JSON"),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )

    assert response.status_code == 413
    assert response.headers["Connection"] == "close"
