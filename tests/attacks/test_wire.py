"""Attack: answers and connections that cost more than the request is worth. Text in answers
travels as UTF-8, not as \\u escapes six bytes each (a page of emoji names once made a 42 MB
answer); a body over the limit closes its connection, so its sender stops sending.

Production mode over real PostgreSQL and Redis with the development identity provider; the
Procfile's `web` (gunicorn with gunicorn.conf.py) for what goes over a real socket.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.clients import GraphQLClient
from tests.production import WebServer, production_env, web_server

EMOJI = "\U0001f600"
BODY_LIMIT = 64 * 1024
# A safeguard against a server that never answers, not a measure of speed.
PATIENCE_SECONDS = 30


def test_text_in_an_answer_is_utf8_not_escapes(production_app, session, idp):
    admin = GraphQLClient(production_app.test_client(), idp.issue_access_token("admin"))
    name = f"Duka {EMOJI * 40} la Mama ٣ 東京"

    response = admin.post(
        "mutation($input: CreateCustomerInput!) "
        "{ createCustomer(input: $input) { success customer { name } } }",
        {"input": {"name": name}},
    )

    raw = response.get_data()
    assert response.status_code == 200
    assert response.get_json()["data"]["createCustomer"]["customer"]["name"] == name
    assert name.encode() in raw
    assert b"\\u" not in raw
    # The client asks for GraphQL's media type (tests/conftest.py), which is UTF-8 JSON.
    assert response.mimetype == "application/graphql-response+json"
    assert response.mimetype_params["charset"] == "utf-8"


# -- over a real socket ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(database_url, idp, app, tmp_path_factory) -> Iterator[WebServer]:
    env = production_env(database_url, idp.issuer)
    with web_server(env, tmp_path_factory.mktemp("metrics")) as running:
        yield running


def connect(server: WebServer) -> socket.socket:
    address = urlsplit(server.url)
    connection = socket.create_connection((address.hostname, address.port), timeout=10)
    connection.settimeout(PATIENCE_SECONDS)
    return connection


def read_head(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status and headers of the next answer on the connection (and what came after)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"the connection closed before an answer: {received!r}"
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


def read_until_closed(connection: socket.socket) -> bytes:
    """What the server sends until it ends the connection, the client sending nothing more
    (a server that keeps it open fails the test at the socket's timeout)."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def request_head(length: int) -> bytes:
    return (
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_body_over_the_limit_is_answered_413_and_its_connection_closed(server):
    declared = 10 * 1024 * 1024
    with connect(server) as connection:
        # The head and a first part of the body, as a client streaming an upload would.
        connection.sendall(request_head(declared) + b"x" * 1024)

        status, headers, rest = read_head(connection)
        rest += read_until_closed(connection)

        assert status == 413
        assert headers["connection"] == "close"
        assert b'"REQUEST_ENTITY_TOO_LARGE"' in rest


def test_a_body_within_the_limit_keeps_its_connection(server):
    body = b'{"query": "{ __typename }"}'
    with connect(server) as connection:
        for _ in range(2):  # two requests over one connection
            connection.sendall(request_head(len(body)) + body)

            status, headers, rest = read_head(connection)

            assert status == 200
            assert headers["connection"] == "keep-alive"
            length = int(headers["content-length"])
            while len(rest) < length:
                rest += connection.recv(65536)
