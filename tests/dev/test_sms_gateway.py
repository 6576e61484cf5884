"""The fake Africa's Talking SMS gateway over real HTTP, driven by the real africastalking SDK."""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from africastalking.Service import AfricasTalkingException
from africastalking.SMS import SMSService
from werkzeug import Request, Response, serving
from werkzeug.test import EnvironBuilder

from dev.sms_gateway import FakeSmsGateway, ProductionRefusedError, RunningGateway, main
from dev.sms_protocol import check_outcome

ROOT = Path(__file__).resolve().parents[2]
KEY = "atsk_test_0123456789"
ALICE, BOB = "+254711000001", "+254722000002"
TIMEOUT = 5
SETTLE_TIMEOUT = 30  # generous: a condition is waited for, never timed


@pytest.fixture
def server() -> Iterator[RunningGateway]:
    with FakeSmsGateway(api_key=KEY).serve_in_thread() as running:
        yield running


@pytest.fixture
def gateway(server: RunningGateway) -> FakeSmsGateway:
    return server.gateway


def sdk(server: RunningGateway, username: str = "sandbox", api_key: str = KEY) -> SMSService:
    service = SMSService(username, api_key)
    service._baseUrl = f"{server.url}/version1"
    return service


@pytest.fixture
def sms(server: RunningGateway) -> SMSService:
    return sdk(server)


def post(server: RunningGateway, to: str = ALICE, api_key: str = KEY) -> requests.Response:
    form = {"username": "sandbox", "to": to, "message": "hi", "bulkSMSMode": 1}
    headers = {"apiKey": api_key, "Accept": "application/json"}
    return requests.post(f"{server.url}/version1/messaging", data=form, headers=headers, timeout=5)


def wait_for(check: Callable[[], Any], timeout: float = SETTLE_TIMEOUT) -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {check.__doc__ or check}")
        time.sleep(0.01)
    return value


def settled(gateway: FakeSmsGateway, count: int = 1) -> list[dict[str, Any]]:
    """The gateway's messages once `count` were accepted and none of their replies is pending."""

    def done() -> list[dict[str, Any]] | None:
        """every reply settled"""
        stats = gateway.stats()
        if stats["accepted"] >= count and stats["replies"]["pending"] == 0:
            return gateway.messages
        return None

    return wait_for(done)


def admin(server: RunningGateway, name: str, body: Any = None) -> requests.Response:
    url = f"{server.url}/_admin/{name}"
    if body is None and name in ("messages", "stats", "copies"):
        return requests.get(url, timeout=TIMEOUT)
    return requests.post(url, json=body, timeout=TIMEOUT)


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], dict[str, str]]]]]:
    """A callback endpoint that records (form, query) of each delivery report."""
    received: list[tuple[dict[str, str], dict[str, str]]] = []

    @Request.application
    def app(req: Request) -> Response:
        received.append((req.form.to_dict(), req.args.to_dict()))
        return Response("ok")

    callback = serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=callback.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{callback.server_port}/sms/delivery", received
    callback.shutdown()
    callback.server_close()
    thread.join(timeout=5)


def test_send_returns_the_gateway_reply_and_records_it(
    server: RunningGateway, gateway: FakeSmsGateway, sms: SMSService
) -> None:
    reply = sms.send("Your order shipped", [ALICE], sender_id="ACME")

    data = reply["SMSMessageData"]
    assert data["Message"] == "Sent to 1/1 Total Cost: KES 0.8000"
    [recipient] = data["Recipients"]
    assert list(recipient) == ["statusCode", "number", "status", "cost", "messageId"]
    assert recipient["statusCode"] == 101
    assert recipient["status"] == "Success"
    assert (recipient["number"], recipient["cost"]) == (ALICE, "KES 0.8000")
    assert recipient["messageId"].startswith("ATXid_")
    [record] = settled(gateway)
    assert record["to"] == ALICE
    assert record["message"] == "Your order shipped"
    assert record["sender_id"] == "ACME"
    assert (record["message_id"], record["status_code"]) == (recipient["messageId"], 101)
    assert abs(record["received_at"] - time.time()) < 5
    assert record["received_at"] <= record["accepted_at"] <= record["reply_settled_at"]
    assert record["reply"] == "delivered"  # the SDK read it
    assert gateway.stats()["replies"] == {"pending": 0, "delivered": 1, "cut": 0}
    assert gateway.requests == 1
    # The SDK only parses JSON when the header is exactly this.
    assert post(server).headers["Content-Type"] == "application/json"


def test_scripted_status_codes_apply_per_recipient_then_run_out(
    gateway: FakeSmsGateway, sms: SMSService
) -> None:
    gateway.script(ALICE, 406, 102)
    gateway.script(BOB, 403)

    first = sms.send("hi", [ALICE, BOB])["SMSMessageData"]
    second = sms.send("hi", [ALICE, BOB])["SMSMessageData"]
    third = sms.send("hi", [ALICE])["SMSMessageData"]

    assert first["Message"] == "Sent to 0/2 Total Cost: 0"
    blacklisted, invalid = first["Recipients"]
    assert (blacklisted["statusCode"], blacklisted["status"]) == (406, "UserInBlacklist")
    assert (invalid["statusCode"], invalid["status"]) == (403, "InvalidPhoneNumber")
    assert (blacklisted["cost"], blacklisted["messageId"]) == ("0", "None")
    assert second["Message"] == "Sent to 2/2 Total Cost: KES 1.6000"
    assert [r["statusCode"] for r in second["Recipients"]] == [102, 101]
    assert third["Recipients"][0]["statusCode"] == 101
    assert [m["status_code"] for m in gateway.messages] == [406, 403, 102, 101, 101]


def test_malformed_numbers_are_refused_like_the_real_gateway(server: RunningGateway) -> None:
    reply = post(server, to=f"{ALICE}, 0711000001").json()["SMSMessageData"]

    assert [r["statusCode"] for r in reply["Recipients"]] == [101, 403]


@pytest.mark.parametrize(("username", "api_key"), [("sandbox", "wrong"), ("someone", KEY)])
def test_wrong_credentials_get_401_plain_text(
    server: RunningGateway, gateway: FakeSmsGateway, username: str, api_key: str
) -> None:
    with pytest.raises(AfricasTalkingException, match="The supplied authentication is invalid"):
        sdk(server, username, api_key).send("hi", [ALICE])

    response = post(server, api_key="wrong")
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert gateway.messages == []
    assert gateway.requests == 2


def test_scripted_http_errors(server: RunningGateway, gateway: FakeSmsGateway) -> None:
    gateway.script(ALICE, "http:503", "HTTP:401")

    unavailable, unauthorised, fine = post(server), post(server), post(server)

    assert unavailable.status_code == 503
    assert unavailable.headers["Content-Type"].startswith("text/html")
    assert "503 Service Unavailable" in unavailable.text
    assert (unauthorised.status_code, unauthorised.text) == (
        401,
        "The supplied authentication is invalid",
    )
    assert fine.status_code == 201


def test_http_503_raises_in_the_sdk(gateway: FakeSmsGateway, sms: SMSService) -> None:
    gateway.script(ALICE, "http:503")

    with pytest.raises(AfricasTalkingException, match="503 Service Unavailable"):
        sms.send("hi", [ALICE])
    assert gateway.messages == []


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        ("timeout", requests.exceptions.ReadTimeout),
        ("close", requests.exceptions.ConnectionError),
        ("garbage", requests.exceptions.JSONDecodeError),
    ],
)
def test_transport_failures(
    gateway: FakeSmsGateway, sms: SMSService, outcome: str, error: type[Exception]
) -> None:
    gateway.script(BOB, outcome)

    started = time.perf_counter()
    with pytest.raises(error):
        sms.send("hi", [ALICE, BOB], timeout=(2, 0.3))

    assert time.perf_counter() - started < 2
    assert gateway.messages == []  # no JSON reply, so nothing counts as accepted
    assert gateway.requests == 1


def test_latency_delays_every_reply(
    server: RunningGateway, gateway: FakeSmsGateway, sms: SMSService
) -> None:
    gateway.latency = 0.2

    started = time.perf_counter()
    sms.send("hi", [ALICE])
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    assert post(server, api_key="wrong").status_code == 401
    assert time.perf_counter() - started >= 0.2
    with pytest.raises(ValueError, match="latency"):
        gateway.latency = -1
    with pytest.raises(ValueError, match="reply_watch"):
        FakeSmsGateway(reply_watch=-1)


def test_concurrent_requests_are_not_serialised(
    server: RunningGateway, gateway: FakeSmsGateway
) -> None:
    gateway.latency = 0.1
    numbers = [f"+2547110{i:05d}" for i in range(50)]

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(lambda n: post(server, to=n).status_code, numbers))

    assert statuses == [201] * 50
    # Served side by side: more than ten were inside their 0.1 s at the same moment.
    assert gateway.stats()["max_in_flight"] > 10
    assert sorted(m["to"] for m in gateway.messages) == numbers


def test_delivery_reports_are_posted_like_the_real_ones(
    gateway: FakeSmsGateway, sms: SMSService, receiver: tuple[str, list[Any]]
) -> None:
    url, received = receiver
    recipients = sms.send("hi", [ALICE, "+254733000003"])["SMSMessageData"]["Recipients"]
    first, second = (r["messageId"] for r in recipients)

    assert gateway.deliver(first, url=url) == 200
    assert gateway.deliver(second, "Failed", "UserInBlacklist", url=f"{url}?x=1", key="k3y") == 200
    assert (
        gateway.deliver("ATXid_other", "Rejected", url=url, phone_number=BOB, retry_count=2) == 200
    )

    success, failed, rejected = received
    assert success == (
        {
            "id": first,
            "status": "Success",
            "phoneNumber": ALICE,
            "networkCode": "63902",
            "retryCount": "0",
        },
        {},
    )
    assert failed[0]["failureReason"] == "UserInBlacklist"
    assert failed[0]["networkCode"] == "63903"
    assert failed[1] == {"x": "1", "key": "k3y"}
    assert (rejected[0]["failureReason"], rejected[0]["retryCount"]) == ("DeliveryFailure", "2")
    with pytest.raises(ValueError, match="no failureReason"):
        gateway.deliver(first, "Success", "DeliveryFailure", url=url)
    with pytest.raises(KeyError):
        gateway.deliver("ATXid_unknown", url=url)


def test_admin_api(
    server: RunningGateway, gateway: FakeSmsGateway, receiver: tuple[str, list[Any]]
) -> None:
    scripted = admin(server, "script", {"phone": ALICE, "outcomes": [406, "http:503"]})
    assert scripted.json() == {"phone": ALICE, "queued": [406, "http:503"]}
    assert admin(server, "script", {"phone": ALICE, "outcomes": ["nope"]}).status_code == 400
    assert admin(server, "latency", {"seconds": "slow"}).status_code == 400
    assert admin(server, "latency", {"seconds": 0.05}).json() == {"latency": 0.05}
    assert gateway.latency == 0.05

    assert post(server).json()["SMSMessageData"]["Recipients"][0]["statusCode"] == 406
    assert post(server).status_code == 503
    message_id = post(server).json()["SMSMessageData"]["Recipients"][0]["messageId"]

    messages = admin(server, "messages").json()["messages"]
    assert [(m["to"], m["status_code"]) for m in messages] == [(ALICE, 406), (ALICE, 101)]
    stats = admin(server, "stats").json()
    assert (stats["requests"], stats["messages"], stats["accepted"]) == (3, 2, 1)
    assert (stats["latency"], stats["scripted"]) == (0.05, {})
    url, received = receiver
    delivered = admin(
        server, "deliver", {"message_id": message_id, "status": "Buffered", "url": url}
    )
    assert delivered.json() == {"status": 200}
    assert received[0][0]["status"] == "Buffered"
    assert admin(server, "deliver", {"message_id": "ATXid_unknown", "url": url}).status_code == 404

    reset = admin(server, "reset").json()
    assert (reset["requests"], reset["messages"], reset["latency"]) == (0, 0, 0.0)
    assert gateway.messages == []


def test_outcomes_are_validated(gateway: FakeSmsGateway) -> None:
    assert [check_outcome(o) for o in (101, "502", "Timeout", "http:500")] == [
        101,
        502,
        "timeout",
        "http:500",
    ]
    for bad in (200, 408, True, "http:200", "http:abc", "hang", None):
        with pytest.raises(ValueError, match="unknown SMS outcome"):
            gateway.script(ALICE, bad)


def test_refuses_to_start_in_production(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLASK_ENV", "production")
    with pytest.raises(ProductionRefusedError, match="FLASK_ENV"):
        FakeSmsGateway()

    monkeypatch.delenv("FLASK_ENV")
    monkeypatch.setenv("APP_ENV", "Production")
    assert main(["--port", "0"]) == 2
    assert "refuses to run with APP_ENV='Production'" in capsys.readouterr().err


def test_cli_prints_its_url_and_never_the_api_key() -> None:
    secret = "atsk_cli_secret_42"
    command = [sys.executable, "-m", "dev.sms_gateway", "--port", "0", "--latency", "0.05"]
    command += ["--api-key", secret, "--reply-watch", "2", "--verbose"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(4)]
        url = banner[1].split()[1]
        assert url.startswith("http://127.0.0.1:")
        form = {"username": "sandbox", "to": ALICE, "message": "hi"}
        reply = requests.post(
            f"{url}/version1/messaging?apiKey={secret}",
            data=form,
            headers={"apiKey": secret},
            timeout=TIMEOUT,
        )
        assert reply.status_code == 201
        stats = requests.get(f"{url}/_admin/stats", timeout=TIMEOUT).json()
        assert (stats["latency"], stats["reply_watch"]) == (0.05, 2)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=TIMEOUT)
    assert "POST /version1/messaging" in output
    assert secret not in "".join(banner) + output


# -- did the reply reach the client? ----------------------------------------------------------

# A sender in a process of its own, through the SDK: argv is the gateway URL, phone and body.
SDK_SENDER = f"""
import sys
from africastalking.SMS import SMSService
service = SMSService("sandbox", {KEY!r})
service._baseUrl = sys.argv[1] + "/version1"
print(service.send(sys.argv[3], [sys.argv[2]], timeout=(5, 120)), flush=True)
"""
# A sender that writes its request, waits until the whole reply is in its socket (peeking at
# it) and never reads it.
DEAF_SENDER = f"""
import re, socket, sys, time
from urllib.parse import urlencode, urlsplit
url = urlsplit(sys.argv[1])
body = urlencode({{"username": "sandbox", "to": sys.argv[2], "message": sys.argv[3]}}).encode()
head = (
    "POST /version1/messaging HTTP/1.1\\r\\nHost: gateway\\r\\napiKey: {KEY}\\r\\n"
    "Content-Type: application/x-www-form-urlencoded\\r\\n"
    f"Content-Length: {{len(body)}}\\r\\n\\r\\n"
)
connection = socket.create_connection((url.hostname, url.port))
connection.sendall(head.encode() + body)
while True:
    headers, _, rest = connection.recv(65536, socket.MSG_PEEK).partition(b"\\r\\n\\r\\n")
    length = re.search(rb"content-length: *(\\d+)", headers, re.IGNORECASE)
    if length and len(rest) >= int(length[1]):
        break
    time.sleep(0.01)
print("reply waiting", flush=True)
time.sleep(600)
"""
# A sender that keeps one connection for all its sends (as the worker's pool does) and stays
# alive after printing the status of each; argv adds how many sends.
POOLED_SENDER = f"""
import sys, time, urllib3
pool = urllib3.PoolManager()
form = {{"username": "sandbox", "to": sys.argv[2], "message": sys.argv[3]}}
for _ in range(int(sys.argv[4])):
    reply = pool.request(
        "POST", sys.argv[1] + "/version1/messaging", fields=form,
        headers={{"apiKey": {KEY!r}}}, encode_multipart=False,
    )
    print(reply.status, flush=True)
time.sleep(600)
"""


@pytest.fixture
def senders() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start sender processes (`senders(SCRIPT, url, phone, body, ...)`); killed at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(script: str, *argv: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-c", script, *argv]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.communicate(timeout=TIMEOUT)


def sigkill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=TIMEOUT)
    assert process.returncode == -signal.SIGKILL


def in_flight(stats: Callable[[], dict[str, Any]]) -> Callable[[], bool]:
    def check() -> bool:
        """a request in flight at the gateway"""
        return stats()["in_flight"] == 1

    return check


@pytest.fixture
def watchful() -> Iterator[RunningGateway]:
    """A gateway that watches a written reply's connection for up to a minute, so that a
    test can kill a client while the reply sits unread in its socket."""
    with FakeSmsGateway(api_key=KEY, reply_watch=60).serve_in_thread() as running:
        yield running


def test_a_client_that_gives_up_before_the_reply_gets_it_cut_and_its_resend_is_explained(
    server: RunningGateway, gateway: FakeSmsGateway
) -> None:
    gateway.latency = 60  # the client hanging up ends the wait

    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            f"{server.url}/version1/messaging",
            data={"username": "sandbox", "to": ALICE, "message": "hi"},
            headers={"apiKey": KEY},
            timeout=(TIMEOUT, 0.2),
        )

    [cut] = settled(gateway)
    assert (cut["status_code"], cut["reply"]) == (101, "cut")  # taken, but never answered
    assert cut["message_id"].startswith("ATXid_")
    assert gateway.stats()["in_flight"] == 0
    gateway.latency = 0
    assert post(server).status_code == 201  # the client's resend: a duplicate, explained
    settled(gateway, 2)
    assert [c["unexplained"] for c in gateway.copies()] == [0]
    assert post(server).status_code == 201  # a resend after a delivered reply: unexplained
    settled(gateway, 3)

    [alice] = admin(server, "copies").json()["copies"]
    assert (alice["to"], alice["message"]) == (ALICE, "hi")
    assert [c["reply"] for c in alice["copies"]] == ["cut", "delivered", "delivered"]
    assert alice["copies"][0]["message_id"] == cut["message_id"]
    assert (alice["duplicates"], alice["cut"], alice["unexplained"]) == (2, 1, 1)
    stats = admin(server, "stats").json()
    assert stats["replies"] == {"pending": 0, "delivered": 2, "cut": 1}
    assert (stats["accepted"], stats["duplicates"]) == (3, 2)
    copies = admin(server, "copies").json()
    assert (copies["duplicates"], copies["unexplained"]) == (2, 1)
    reset = admin(server, "reset").json()
    assert (reset["replies"], reset["duplicates"]) == ({"pending": 0, "delivered": 0, "cut": 0}, 0)
    assert gateway.copies() == []


def test_a_client_that_hangs_up_as_soon_as_it_has_asked_gets_its_reply_cut(
    server: RunningGateway, gateway: FakeSmsGateway
) -> None:
    body = f"username=sandbox&to={ALICE.replace('+', '%2B')}&message=bye".encode()
    head = (
        f"POST /version1/messaging HTTP/1.1\r\nHost: gateway\r\napiKey: {KEY}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=TIMEOUT) as connection:
        connection.sendall(head.encode() + body)

    [record] = settled(gateway)
    assert (record["message"], record["status_code"], record["reply"]) == ("bye", 101, "cut")


def test_a_sender_killed_mid_request_gets_its_reply_cut(
    server: RunningGateway, gateway: FakeSmsGateway, senders: Callable[..., Any]
) -> None:
    gateway.latency = 60  # its death ends the wait
    sender = senders(SDK_SENDER, server.url, ALICE, "Your order shipped")
    wait_for(in_flight(gateway.stats))

    sigkill(sender)

    [record] = settled(gateway)
    assert (record["to"], record["message"]) == (ALICE, "Your order shipped")
    assert (record["status_code"], record["reply"]) == (101, "cut")
    assert gateway.stats()["replies"] == {"pending": 0, "delivered": 0, "cut": 1}


def test_a_sender_killed_with_the_reply_unread_in_its_socket_gets_it_cut(
    watchful: RunningGateway, senders: Callable[..., Any]
) -> None:
    gateway = watchful.gateway
    sender = senders(DEAF_SENDER, watchful.url, ALICE, "unread")
    assert sender.stdout.readline() == "reply waiting\n"
    # Written, and watched: the sender is alive and has not closed its connection.
    assert [m["reply"] for m in gateway.messages] == ["pending"]

    sigkill(sender)

    [record] = settled(gateway)
    assert (record["message"], record["reply"]) == ("unread", "cut")


def test_a_reply_the_server_could_not_write_is_cut(gateway: FakeSmsGateway) -> None:
    # What a WSGI server does when a write fails: it stops iterating the body and closes it.
    def environ() -> dict[str, Any]:
        form = {"username": "sandbox", "to": ALICE, "message": "hi"}
        builder = EnvironBuilder(
            method="POST", path="/version1/messaging", data=form, headers={"apiKey": KEY}
        )
        return builder.get_environ()

    statuses: list[str] = []
    unwritten = gateway(environ(), lambda status, headers: statuses.append(status))
    unwritten.close()
    written = gateway(environ(), lambda status, headers: statuses.append(status))
    assert b"".join(written).startswith(b'{"SMSMessageData"')
    written.close()

    assert statuses == ["201 CREATED", "201 CREATED"]
    assert [m["reply"] for m in gateway.messages] == ["cut", "delivered"]


def test_a_reply_to_a_client_already_gone_is_cut_though_writing_it_succeeds(
    gateway: FakeSmsGateway,
) -> None:
    # A write to a peer that just died lands in the kernel's buffer without an error: a
    # server whose writes all succeeded still cannot say the reply arrived.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        connection, _ = listener.accept()
    with connection:
        client.close()
        assert select.select([connection], [], [], TIMEOUT)[0]  # its end-of-file has arrived
        builder = EnvironBuilder(
            method="POST",
            path="/version1/messaging",
            data={"username": "sandbox", "to": ALICE, "message": "gone"},
            headers={"apiKey": KEY},
        )
        environ = builder.get_environ() | {"werkzeug.socket": connection}
        body = gateway(environ, lambda status, headers: None)
        assert b"".join(body).startswith(b'{"SMSMessageData"')
        body.close()

    [record] = gateway.messages
    assert (record["message"], record["reply"]) == ("gone", "cut")


@pytest.fixture
def gunicorn_gateway(tmp_path: Path) -> Iterator[str]:
    """The gateway served as the benchmark serves it (gunicorn's threaded worker, connections
    kept alive), watching written replies for up to a minute; yields its URL."""
    log = tmp_path / "gunicorn.log"
    factory = f"dev.sms_gateway:FakeSmsGateway(api_key={KEY!r}, reply_watch=60)"
    command = [sys.executable, "-m", "gunicorn", "--config", "/dev/null", "--workers=1"]
    command += ["--worker-class=gthread", "--threads=8", "--no-control-socket"]
    command += ["--keep-alive=75", "--bind=127.0.0.1:0", factory]
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=ROOT, stderr=output)
    try:

        def listening() -> str | None:
            """gunicorn listening"""
            assert process.poll() is None, log.read_text()
            found = re.search(r"Listening at: (http://\S+)", log.read_text())
            return found.group(1) if found else None

        url = wait_for(listening)
        wait_for(lambda: requests.get(f"{url}/_admin/stats", timeout=TIMEOUT).ok)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT)


def test_under_gunicorn_cut_and_delivered_replies_are_told_apart(
    gunicorn_gateway: str, senders: Callable[..., Any]
) -> None:
    url = gunicorn_gateway

    def stats() -> dict[str, Any]:
        return requests.get(f"{url}/_admin/stats", timeout=TIMEOUT).json()

    def copies() -> list[dict[str, Any]] | None:
        """every reply settled"""
        if stats()["replies"]["pending"]:
            return None
        return requests.get(f"{url}/_admin/copies", timeout=TIMEOUT).json()["copies"]

    requests.post(f"{url}/_admin/latency", json={"seconds": 60}, timeout=TIMEOUT)
    killed = senders(SDK_SENDER, url, ALICE, "killed mid-request")
    wait_for(in_flight(stats))
    sigkill(killed)
    wait_for(lambda: stats()["accepted"] == 1)
    requests.post(f"{url}/_admin/latency", json={"seconds": 0}, timeout=TIMEOUT)
    # Two sends on one kept connection, both read; the sender dies afterwards.
    pooled = senders(POOLED_SENDER, url, BOB, "read, then died", "2")
    assert [pooled.stdout.readline(), pooled.stdout.readline()] == ["201\n", "201\n"]
    sigkill(pooled)

    alice, bob = wait_for(copies)
    assert [c["reply"] for c in alice["copies"]] == ["cut"]
    assert (bob["to"], bob["message"]) == (BOB, "read, then died")
    assert [c["reply"] for c in bob["copies"]] == ["delivered", "delivered"]
    assert (bob["duplicates"], bob["cut"], bob["unexplained"]) == (1, 0, 1)
    assert stats()["replies"] == {"pending": 0, "delivered": 2, "cut": 1}
