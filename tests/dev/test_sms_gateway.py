"""The fake Africa's Talking SMS gateway over real HTTP, driven by the real africastalking SDK."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from africastalking.Service import AfricasTalkingException
from africastalking.SMS import SMSService
from werkzeug import Request, Response, serving

from dev.sms_gateway import (
    FakeSmsGateway,
    ProductionRefusedError,
    RunningGateway,
    check_outcome,
    main,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = "atsk_test_0123456789"
ALICE, BOB = "+254711000001", "+254722000002"
TIMEOUT = 5


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


def admin(server: RunningGateway, name: str, body: Any = None) -> requests.Response:
    url = f"{server.url}/_admin/{name}"
    if body is None and name in ("messages", "stats"):
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
    [record] = gateway.messages
    assert record["to"] == ALICE
    assert record["message"] == "Your order shipped"
    assert record["sender_id"] == "ACME"
    assert (record["message_id"], record["status_code"]) == (recipient["messageId"], 101)
    assert abs(record["received_at"] - time.time()) < 5
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
    command += ["--api-key", secret, "--verbose"]
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
        assert requests.get(f"{url}/_admin/stats", timeout=TIMEOUT).json()["latency"] == 0.05
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=TIMEOUT)
    assert "POST /version1/messaging" in output
    assert secret not in "".join(banner) + output
