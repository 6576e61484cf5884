"""Customers through GraphQL: who may create and change them, generated codes, phone
normalisation, duplicate codes and who may see which record."""

from __future__ import annotations

import re
import uuid

import pytest

from models import Customer
from tests.factories import JANE_SUB, CustomerFactory, row_counts

CUSTOMER_FIELDS = "id code name phone email"
CREATE = f"""
mutation Create($input: CreateCustomerInput!) {{
  createCustomer(input: $input) {{
    success message errors fieldErrors {{ field code message }}
    customer {{ {CUSTOMER_FIELDS} }}
  }}
}}
"""
UPDATE = f"""
mutation Update($id: ID!, $input: UpdateCustomerInput!) {{
  updateCustomer(id: $id, input: $input) {{
    success message errors fieldErrors {{ field code message }}
    customer {{ {CUSTOMER_FIELDS} }}
  }}
}}
"""
BY_ID = f"query ById($id: ID!) {{ customer(id: $id) {{ {CUSTOMER_FIELDS} }} }}"
BY_CODE = f"query ByCode($code: String!) {{ customerByCode(code: $code) {{ {CUSTOMER_FIELDS} }} }}"
GENERATED_CODE = re.compile(r"^C[0-9A-HJKMNP-TV-Z]{8}$")


def create(client, **fields):
    return client.execute(CREATE, {"input": fields})["createCustomer"]


def update(client, customer_id, **fields):
    return client.execute(UPDATE, {"id": str(customer_id), "input": fields})["updateCustomer"]


def field_errors(payload) -> list[tuple[str | None, str]]:
    return [(error["field"], error["code"]) for error in payload["fieldErrors"]]


@pytest.fixture
def signed_in(jane, admin):
    """Both callers provisioned, so row counts see only what a test's request writes."""
    jane.execute("{ me { id } }")
    admin.execute("{ me { id } }")


# --- creating -------------------------------------------------------------------------------


def test_admin_creates_a_customer(admin):
    result = create(
        admin, name="Amina Otieno", code="AMINA1", phone="0722000111", email="Amina@Example.COM"
    )

    assert result["success"] is True
    assert result["message"] == "Customer created!"
    assert result["errors"] == []
    assert result["fieldErrors"] == []
    customer = result["customer"]
    assert customer["code"] == "AMINA1"
    assert customer["name"] == "Amina Otieno"
    assert customer["phone"] == "+254722000111"
    assert customer["email"] == "Amina@example.com"
    uuid.UUID(customer["id"])


def test_customer_cannot_create_customers(jane, signed_in, session):
    before = row_counts(session)

    result = create(jane, name="Someone Else", code="ELSE1")

    assert result["success"] is False
    assert result["customer"] is None
    assert field_errors(result) == [(None, "FORBIDDEN")]
    assert row_counts(session) == before


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("0712 345 678", "+254712345678"),
        ("0712345678", "+254712345678"),
        ("712345678", "+254712345678"),
        ("+254 712 345 678", "+254712345678"),
        ("254712345678", "+254712345678"),
    ],
)
def test_phone_is_stored_in_e164_with_kenya_as_default_region(admin, given, stored):
    assert create(admin, name="Phone Owner", phone=given)["customer"]["phone"] == stored


def test_code_is_generated_when_not_given(admin):
    code = create(admin, name="No Code")["customer"]["code"]

    assert GENERATED_CODE.match(code)


def test_generated_codes_are_unique(admin):
    codes = [create(admin, name=f"Customer {n}")["customer"]["code"] for n in range(30)]

    assert len(set(codes)) == len(codes)
    assert all(GENERATED_CODE.match(code) for code in codes)


def test_duplicate_code_is_refused(admin, signed_in, session):
    existing = CustomerFactory(code="TAKEN1")
    before = row_counts(session)

    result = create(admin, name="Second Shop", code="TAKEN1")

    assert result["success"] is False
    assert field_errors(result) == [("code", "DUPLICATE")]
    assert "TAKEN1" in result["message"]
    assert row_counts(session) == before
    assert admin.execute(BY_CODE, {"code": "TAKEN1"})["customerByCode"]["id"] == str(existing.id)


def test_all_bad_fields_are_named_at_once(admin, signed_in, session):
    before = row_counts(session)

    result = create(admin, name="", phone="12", email="not-an-email", code="bad code!")

    assert result["success"] is False
    assert sorted(field_errors(result)) == [
        ("code", "INVALID"),
        ("email", "INVALID"),
        ("name", "INVALID"),
        ("phone", "INVALID"),
    ]
    assert len(result["errors"]) == 4
    assert row_counts(session) == before


def test_name_is_trimmed(admin):
    assert create(admin, name="  Baraka Mwangi  ")["customer"]["name"] == "Baraka Mwangi"


# --- updating -------------------------------------------------------------------------------


def test_customer_updates_its_own_record(jane):
    result = update(jane, JANE_SUB, phone="0733 111 222", email="jane.w@example.com")

    assert result["success"] is True
    assert result["message"] == "Customer updated!"
    assert result["customer"]["id"] == JANE_SUB
    assert result["customer"]["phone"] == "+254733111222"
    assert result["customer"]["email"] == "jane.w@example.com"


def test_own_update_is_still_there_on_the_next_request(jane):
    update(jane, JANE_SUB, name="Jane W. Kamau", phone="0733 111 222")

    me = jane.execute("{ me { name phone } }")["me"]

    assert me == {"name": "Jane W. Kamau", "phone": "+254733111222"}


def test_update_changes_only_the_fields_given(admin):
    customer = CustomerFactory(name="Old Name", phone="+254700111222", email="old@example.com")

    result = update(admin, customer.id, name="New Name")

    assert result["customer"]["name"] == "New Name"
    assert result["customer"]["phone"] == "+254700111222"
    assert result["customer"]["email"] == "old@example.com"


def test_update_can_clear_the_phone(admin):
    customer = CustomerFactory(phone="+254700111222")

    assert update(admin, customer.id, phone=None)["customer"]["phone"] is None


def test_update_with_a_bad_phone_changes_nothing(admin, session):
    customer = CustomerFactory(name="Kept", phone="+254700111222")

    result = update(admin, customer.id, name="Changed", phone="not a phone")

    assert result["success"] is False
    assert field_errors(result) == [("phone", "INVALID")]
    session.expire_all()
    stored = session.get_one(Customer, customer.id)
    assert (stored.name, stored.phone) == ("Kept", "+254700111222")


def test_customer_cannot_update_another_customer(jane, session):
    other = CustomerFactory(name="Not Jane")

    result = update(jane, other.id, name="Hijacked")

    assert result["success"] is False
    assert result["customer"] is None
    assert field_errors(result) == [(None, "NOT_FOUND")]
    session.expire_all()
    assert session.get_one(Customer, other.id).name == "Not Jane"


def test_admin_updates_any_customer(admin):
    other = CustomerFactory()

    assert update(admin, other.id, name="Renamed")["customer"]["name"] == "Renamed"


def test_updating_an_unknown_customer_is_not_found(admin):
    result = update(admin, uuid.uuid4(), name="Nobody")

    assert field_errors(result) == [(None, "NOT_FOUND")]


# --- reading --------------------------------------------------------------------------------


def test_customer_reads_its_own_record_by_id_and_code(jane, session):
    jane.execute("{ me { id } }")
    code = session.get_one(Customer, uuid.UUID(JANE_SUB)).code

    by_id = jane.execute(BY_ID, {"id": JANE_SUB})["customer"]
    by_code = jane.execute(BY_CODE, {"code": code})["customerByCode"]

    assert by_id == by_code
    assert by_id["id"] == JANE_SUB
    assert by_id["name"] == "Jane Wanjiku"


def test_another_customers_record_reads_as_null(jane):
    other = CustomerFactory()

    assert jane.execute(BY_ID, {"id": str(other.id)}) == {"customer": None}
    assert jane.execute(BY_CODE, {"code": other.code}) == {"customerByCode": None}


def test_admin_reads_any_customer(admin):
    other = CustomerFactory(code="SEEN1")

    assert admin.execute(BY_ID, {"id": str(other.id)})["customer"]["code"] == "SEEN1"
    assert admin.execute(BY_CODE, {"code": "SEEN1"})["customerByCode"]["id"] == str(other.id)


def test_unknown_code_reads_as_null(admin):
    assert admin.execute(BY_CODE, {"code": "NO-SUCH-CODE"}) == {"customerByCode": None}


def test_customer_lists_only_itself(jane):
    CustomerFactory.create_batch(3)

    listed = jane.execute("{ allCustomers { id } }")["allCustomers"]

    assert listed == [{"id": JANE_SUB}]


def test_admin_lists_every_customer(admin):
    created = CustomerFactory.create_batch(3)

    listed = [c["id"] for c in admin.execute("{ allCustomers(first: 100) { id } }")["allCustomers"]]

    assert {str(customer.id) for customer in created} <= set(listed)


def test_a_customers_orders_are_listed_on_the_customer(admin):
    customer = CustomerFactory()
    admin.execute(
        'mutation($id: ID!) { createOrder(input: {customerId: $id, unitPrice: "5"}) { success } }',
        {"id": str(customer.id)},
    )

    data = admin.execute(
        "query($id: ID!) { customer(id: $id) { orders { nodes { total { amount } } } } }",
        {"id": str(customer.id)},
    )

    assert data["customer"]["orders"]["nodes"] == [{"total": {"amount": "5.00"}}]


def test_a_new_user_becomes_a_customer_with_its_subject_as_id(graphql):
    subject = str(uuid.uuid4())

    me = graphql("jane", sub=subject).execute("{ me { id name } }")["me"]

    assert me == {"id": subject, "name": "Jane Wanjiku"}
