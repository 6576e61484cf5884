# ruff: noqa: F811 - pytest fixtures imported from the support modules are used by name
"""SMS pumping: a customer who sets its phone to a premium number abroad, then places order
after order so the shop pays for branded SMS there. Production mode, real Postgres and Redis,
the development identity provider and the local SMS gateway."""

from __future__ import annotations

import uuid
from typing import Any

import phonenumbers
import pytest
from limits import parse_many
from sqlalchemy import select

from common.settings import ConfigError, Settings
from models.notifications import Notification, NotificationStatus
from tests.factories import ADMIN_SUB, JANE_SUB, row_counts
from tests.limits_support import SHIPPED, client, closed_port, production, rate_limited  # noqa: F401
from tests.sms_support import (  # noqa: F401 - fixtures, used by name
    JANE_PHONE,
    attempts_of,
    bound,
    fresh,
    gateway,
    gateway_server,
    make_notification,
    run_send,
    sms_settings,
)
from worker.tasks import send_batch


def e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


PREMIUM = phonenumbers.PhoneNumberType.PREMIUM_RATE
ABROAD = {
    "a premium-rate number in the UK": e164(phonenumbers.example_number_for_type("GB", PREMIUM)),
    "a premium-rate number in Latvia": e164(phonenumbers.example_number_for_type("LV", PREMIUM)),
    "an international network's number": e164(phonenumbers.example_number_for_non_geo_entity(882)),
    "a mobile in Uganda": "+256712345678",
}
KENYAN = "+254733111222"
KENYAN_PREMIUM = e164(phonenumbers.example_number_for_type("KE", PREMIUM))
SMS_CAP = parse_many(SHIPPED.sms_rate_limit)[0].amount  # 30 a minute

UPDATE_PHONE = """
mutation Update($id: ID!, $phone: String) {
  updateCustomer(id: $id, input: {phone: $phone}) {
    success message fieldErrors { field code message } customer { phone }
  }
}
"""
CREATE_CUSTOMER = """
mutation Create($phone: String) {
  createCustomer(input: {name: "Pumped", phone: $phone}) {
    success message fieldErrors { field code message } customer { id phone }
  }
}
"""
ME = "{ me { phone } }"
CREATE_ORDER = """
mutation Order($input: CreateOrderInput!) {
  createOrder(input: $input) { success errors order { id status } }
}
"""
CONFIRM = "mutation($id: ID!) { confirmOrder(orderId: $id) { success order { status } } }"
CANCEL = "mutation($id: ID!) { cancelOrder(orderId: $id) { success order { status } } }"
RESEND = "mutation($id: ID!) { resendNotification(id: $id) { success } }"


def phone_refusal(result: dict[str, Any]) -> dict[str, str]:
    assert result["success"] is False, result
    (error,) = result["fieldErrors"]
    assert (error["field"], error["code"]) == ("phone", "INVALID")
    return error


@pytest.fixture
def shop(production):
    """The service as deployed: SMS only to Kenya (DEFAULT_PHONE_REGION)."""
    return production()


def signed_in(application, idp, username: str, **claims: Any):
    return client(application, idp.issue_access_token(username, **claims))


# -- a phone abroad is refused on input ------------------------------------------------------


@pytest.mark.parametrize("number", ABROAD.values(), ids=ABROAD.keys())
def test_a_customer_cannot_set_its_own_phone_to_a_number_abroad(shop, idp, session, number):
    jane = signed_in(shop, idp, "jane")

    result = jane.execute(UPDATE_PHONE, {"id": JANE_SUB, "phone": number})["updateCustomer"]

    error = phone_refusal(result)
    assert "KE" in error["message"]
    assert result["customer"] is None
    assert jane.execute(ME)["me"]["phone"] == JANE_PHONE


@pytest.mark.parametrize("number", ABROAD.values(), ids=ABROAD.keys())
def test_an_admin_cannot_create_a_customer_with_a_phone_abroad(shop, idp, session, number):
    admin = signed_in(shop, idp, "admin")
    admin.execute(ME)
    before = row_counts(session)

    result = admin.execute(CREATE_CUSTOMER, {"phone": number})["createCustomer"]

    phone_refusal(result)
    assert row_counts(session) == before


def test_a_premium_rate_number_at_home_is_refused_too(shop, idp, session):
    jane = signed_in(shop, idp, "jane")

    result = jane.execute(UPDATE_PHONE, {"id": JANE_SUB, "phone": KENYAN_PREMIUM})

    assert "premium-rate number" in phone_refusal(result["updateCustomer"])["message"]
    assert jane.execute(ME)["me"]["phone"] == JANE_PHONE


def test_a_stored_premium_rate_number_at_home_is_never_sent(worker_app, gateway, session):
    notification = make_notification(session, phone=KENYAN_PREMIUM)

    outcome = run_send(session, notification.id)

    row = fresh(session, notification.id)
    assert (outcome, row.status) == ("permanent", NotificationStatus.FAILED)
    assert row.last_error == "not sent: the phone is a premium-rate number, which gets no SMS"
    assert gateway.requests == 0


def test_a_kenyan_phone_is_still_taken(shop, idp, session):
    jane = signed_in(shop, idp, "jane")

    result = jane.execute(UPDATE_PHONE, {"id": JANE_SUB, "phone": "0733 111 222"})

    assert result["updateCustomer"]["customer"]["phone"] == KENYAN


def test_the_allowed_regions_are_a_setting(production, idp, session):
    east_africa = production(sms_allowed_regions=("KE", "UG", "TZ"))
    admin = signed_in(east_africa, idp, "admin")

    local = admin.execute(CREATE_CUSTOMER, {"phone": "0712 345 678"})["createCustomer"]
    ugandan = admin.execute(CREATE_CUSTOMER, {"phone": ABROAD["a mobile in Uganda"]})
    british = admin.execute(CREATE_CUSTOMER, {"phone": ABROAD["a premium-rate number in the UK"]})

    assert local["customer"]["phone"] == "+254712345678"  # local numbers are still Kenyan
    assert ugandan["createCustomer"]["customer"]["phone"] == "+256712345678"
    assert "KE, UG, TZ" in phone_refusal(british["createCustomer"])["message"]


def test_a_phone_claim_abroad_is_dropped_and_the_user_still_gets_in(shop, idp, session):
    sub = str(uuid.uuid4())
    newcomer = signed_in(
        shop, idp, "jane", sub=sub, phone_number=ABROAD["a premium-rate number in the UK"]
    )

    assert newcomer.execute(ME)["me"]["phone"] is None
    order = newcomer.execute(CREATE_ORDER, {"input": {"price": "10"}})["createOrder"]
    assert order["success"] is True
    notification = session.scalars(
        select(Notification).where(Notification.order_id == uuid.UUID(order["order"]["id"]))
    ).one()
    assert notification.phone is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("KE", ("KE",)), ("ke, ug,TZ", ("KE", "UG", "TZ")), ("KE,KE", ("KE",))],
)
def test_sms_allowed_regions_reads_region_codes(value, expected):
    assert Settings.from_env({"SMS_ALLOWED_REGIONS": value}).allowed_regions == expected


def test_without_sms_allowed_regions_only_the_default_region_gets_sms():
    assert Settings.from_env({"DEFAULT_PHONE_REGION": "ug"}).allowed_regions == ("UG",)


@pytest.mark.parametrize("value", ["UK", "Kenya", "KE;UG", ",", "KE,EU"])
def test_an_unknown_region_code_stops_the_process_naming_the_variable(value):
    with pytest.raises(ConfigError, match="SMS_ALLOWED_REGIONS") as refused:
        Settings.from_env({"SMS_ALLOWED_REGIONS": value, "APP_ENV": "production"})

    assert "region" in str(refused.value)


def test_an_unknown_default_region_stops_the_process_naming_the_variable():
    with pytest.raises(ConfigError, match="DEFAULT_PHONE_REGION"):
        Settings.from_env({"DEFAULT_PHONE_REGION": "Kenya"})


# -- the worker never sends outside the allowed regions --------------------------------------


@pytest.fixture
def worker_app(production, sms_settings):
    """The worker as deployed: SMS only to Kenya, through the local gateway."""
    application = production(sms_settings)
    with bound(application):
        yield application


@pytest.mark.parametrize("number", ABROAD.values(), ids=ABROAD.keys())
def test_a_stored_phone_abroad_is_failed_without_calling_the_gateway(
    worker_app, gateway, session, number
):
    notification = make_notification(session, phone=number)  # as older code stored it

    outcome = run_send(session, notification.id)

    row = fresh(session, notification.id)
    assert outcome == "permanent"
    assert row.status == NotificationStatus.FAILED
    assert "SMS_ALLOWED_REGIONS" in row.last_error
    assert "not sent" in row.last_error
    (attempt,) = attempts_of(session, notification.id)
    assert attempt.error == row.last_error
    assert attempt.http_status is None
    assert gateway.requests == 0
    assert gateway.messages == []


def test_in_a_batch_only_the_message_abroad_is_held_back(worker_app, gateway, session):
    abroad = make_notification(session, phone=ABROAD["a premium-rate number in Latvia"])
    kenyan = make_notification(session, phone=KENYAN)

    send_batch([str(abroad.id), str(kenyan.id)])

    assert fresh(session, abroad.id).status == NotificationStatus.FAILED
    assert fresh(session, kenyan.id).status == NotificationStatus.SENT
    assert [message["to"] for message in gateway.messages] == [KENYAN]


def test_an_order_placed_before_the_regions_were_narrowed_sends_nothing_abroad(
    production, worker_app, idp, gateway, session
):
    # Yesterday the shop also served the UK; today it serves Kenya only.
    yesterday = production(sms_allowed_regions=("KE", "GB"))
    admin = signed_in(yesterday, idp, "admin")
    british = e164(phonenumbers.example_number_for_type("GB", phonenumbers.PhoneNumberType.MOBILE))
    customer = admin.execute(CREATE_CUSTOMER, {"phone": british})["createCustomer"]["customer"]
    order = admin.execute(CREATE_ORDER, {"input": {"price": "25", "customerId": customer["id"]}})
    notification = session.scalars(
        select(Notification).where(
            Notification.order_id == uuid.UUID(order["createOrder"]["order"]["id"])
        )
    ).one()
    assert notification.phone == british

    run_send(session, notification.id)

    row = fresh(session, notification.id)
    assert row.status == NotificationStatus.FAILED
    assert "GB" in row.last_error
    assert gateway.requests == 0


# -- SMS-sending mutations are capped per caller ---------------------------------------------


def place(jane) -> Any:
    return jane.post(CREATE_ORDER, {"input": {"price": "10"}})


def test_sms_mutations_past_the_cap_are_rate_limited_and_do_nothing(shop, idp, session):
    jane = signed_in(shop, idp, "jane")
    placed = [place(jane).get_json()["data"]["createOrder"] for _ in range(SMS_CAP)]
    assert all(result["success"] for result in placed)
    failed = make_notification(session, phone=KENYAN)
    before = row_counts(session)

    refused = {
        "createOrder": place(jane),
        "confirmOrder": jane.post(CONFIRM, {"id": placed[0]["order"]["id"]}),
        "cancelOrder": jane.post(CANCEL, {"id": placed[0]["order"]["id"]}),
        "resendNotification": jane.post(RESEND, {"id": str(failed.id)}),
    }

    for name, response in refused.items():
        error = rate_limited(response)
        assert error is not None, (name, response.get_json())
        assert error["path"] == [name]
        assert 0 < error["extensions"]["retryAfter"] <= 60
        assert response.get_json()["data"] == {name: None}
    assert row_counts(session) == before
    orders = jane.execute("{ myOrders(first: 100) { id status } }")["myOrders"]
    assert len(orders) == SMS_CAP
    assert {order["status"] for order in orders} == {"NEW"}


def test_one_callers_cap_leaves_other_callers_alone(shop, idp, session):
    jane = signed_in(shop, idp, "jane")
    placed = [place(jane) for _ in range(SMS_CAP + 1)]
    assert rate_limited(placed[-1]) is not None

    admin = signed_in(shop, idp, "admin")
    result = admin.execute(CREATE_ORDER, {"input": {"price": "10", "userId": ADMIN_SUB}})

    assert result["createOrder"]["success"] is True


def test_with_redis_unreachable_orders_succeed_and_the_cap_holds(production, idp, session):
    no_redis = production(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    jane = signed_in(no_redis, idp, "jane")

    placed = [place(jane).get_json()["data"]["createOrder"] for _ in range(SMS_CAP)]
    past_the_cap = place(jane)

    assert all(result["success"] for result in placed)
    ids = [uuid.UUID(result["order"]["id"]) for result in placed]
    queued = session.scalars(select(Notification).where(Notification.order_id.in_(ids))).all()
    assert [row.status for row in queued] == [NotificationStatus.QUEUED] * SMS_CAP
    assert rate_limited(past_the_cap) is not None
