"""schema.graphql documents itself: every type, field, argument, enum value and input field
has a description; the original API's fields still work, deprecated with the name of what
replaces them; and the enums the schema shares with models/ hold the same values."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    build_client_schema,
    get_introspection_query,
    parse,
    validate,
)
from graphql import build_schema as build_sdl_schema

from models.errors import ErrorCode
from models.notifications import NotificationKind, NotificationStatus
from models.orders import OrderStatus
from tests.factories import JANE_SUB, CustomerFactory, OrderFactory
from tests.test_design_operations import CONFIRM_ORDER, CREATE_ORDER, MY_ORDERS
from web.graphql import SCHEMA_PATH

ROOT = SCHEMA_PATH.parent

# Each deprecated element, where it is, and what replaces it (as the reason names it).
DEPRECATED = {
    "Order.totalPrice": "Use `total`.",
    "Query.allOrders": "Use `orders`.",
    "Query.allCustomers": "Use `customers`.",
    "Query.myOrders": "Use `me { orders }`.",
    "Query.ordersByCustomer": "Use `customerByCode(code) { orders }`.",
    "Query.allOrders(status)": "Use `statusIn`.",
    "Query.myOrders(status)": "Use `statusIn`.",
    "Query.ordersByCustomer(status)": "Use `statusIn`.",
    "Query.orders(status)": "Use `statusIn`.",
    "Customer.orders(status)": "Use `statusIn`.",
    "CreateOrderInput.price": "Use `unitPrice` (with `quantity`).",
}
SHARED_ENUMS = {
    "ErrorCode": ErrorCode,
    "OrderStatus": OrderStatus,
    "NotificationStatus": NotificationStatus,
    "NotificationKind": NotificationKind,
}


@pytest.fixture(scope="module")
def sdl() -> GraphQLSchema:
    return build_sdl_schema(SCHEMA_PATH.read_text())


def own_types(schema: GraphQLSchema) -> Iterator:
    """The types schema.graphql defines (not GraphQL's built-in scalars or introspection)."""
    for name, kind in schema.type_map.items():
        if not name.startswith("__") and kind.ast_node is not None:
            yield kind


def elements(schema: GraphQLSchema) -> Iterator[tuple[str, object]]:
    """Everything that can carry a description, by a readable name: types, fields, their
    arguments, input fields and enum values."""
    for kind in own_types(schema):
        yield kind.name, kind
        if isinstance(kind, GraphQLObjectType | GraphQLInterfaceType):
            for name, field in kind.fields.items():
                yield f"{kind.name}.{name}", field
                for argument_name, argument in field.args.items():
                    yield f"{kind.name}.{name}({argument_name})", argument
        elif isinstance(kind, GraphQLInputObjectType):
            for name, field in kind.fields.items():
                yield f"{kind.name}.{name}", field
        elif isinstance(kind, GraphQLEnumType):
            for name, value in kind.values.items():
                yield f"{kind.name}.{name}", value


def test_the_walk_sees_every_kind_of_element(sdl):
    names = dict(elements(sdl))

    # A walk that missed a kind would pass with that kind undocumented.
    assert {"Query", "Query.orders", "Query.orders(first)", "CreateOrderInput.price"} <= set(names)
    assert {"OrderStatus.NEW", "ErrorCode.NOT_FOUND", "Decimal", "PageInfo.hasPreviousPage"} <= (
        set(names)
    )


def test_every_element_of_the_schema_has_a_description(sdl):
    undocumented = [
        name for name, element in elements(sdl) if not (element.description or "").strip()
    ]

    assert sdl.description, "the schema itself"
    assert undocumented == []


def test_the_original_apis_fields_are_deprecated_naming_their_replacement(sdl):
    found = {
        name: element.deprecation_reason
        for name, element in elements(sdl)
        if getattr(element, "deprecation_reason", None)
    }

    assert found == DEPRECATED
    for reason in found.values():
        assert re.fullmatch(r"Use `[^`]+`.*\.", reason)


@pytest.mark.parametrize(
    ("owner", "replacement"),
    [
        ("Order", "total"),
        ("Query", "orders"),
        ("Query", "customers"),
        ("Query", "me"),
        ("Customer", "orders"),
        ("Query", "customerByCode"),
    ],
)
def test_each_named_replacement_exists(sdl, owner, replacement):
    field = sdl.get_type(owner).fields[replacement]

    assert field.deprecation_reason is None


def test_each_deprecated_status_argument_has_a_typed_one_beside_it(sdl):
    for name in DEPRECATED:
        if name.endswith("(status)"):
            owner, field = name.removesuffix("(status)").split(".")
            arguments = sdl.get_type(owner).fields[field].args
            assert str(arguments["statusIn"].type) == "[OrderStatus!]", name
            assert arguments["statusIn"].deprecation_reason is None


def test_the_deprecated_price_has_its_replacement_in_the_same_input(sdl):
    fields = sdl.get_type("CreateOrderInput").fields

    assert fields["unitPrice"].deprecation_reason is None
    assert fields["quantity"].deprecation_reason is None


@pytest.mark.parametrize("name", list(SHARED_ENUMS))
def test_shared_enums_hold_the_values_of_models(sdl, name):
    assert set(sdl.get_type(name).values) == {member.value for member in SHARED_ENUMS[name]}


def test_field_error_codes_are_an_enum(sdl):
    assert str(sdl.get_type("FieldError").fields["code"].type) == "ErrorCode!"


def test_every_field_error_code_is_one_the_service_gives(sdl):
    # A code nothing produces sends clients looking for a case that never comes (a missing
    # token is a top-level UNAUTHENTICATED error, never a field error).
    sources = " ".join(
        path.read_text()
        for folder in ("models", "web")
        for path in ROOT.joinpath(folder).rglob("*.py")
    )
    given = set(re.findall(r"ErrorCode\.([A-Z_]+)", sources))

    assert set(sdl.get_type("ErrorCode").values) == given


def test_introspection_shows_what_is_deprecated_and_why(jane):
    data = jane.execute(
        """{ __type(name: "Order") {
              fields(includeDeprecated: true) { name isDeprecated deprecationReason }
           } }"""
    )

    fields = {field["name"]: field for field in data["__type"]["fields"]}
    assert fields["totalPrice"] == {
        "name": "totalPrice",
        "isDeprecated": True,
        "deprecationReason": "Use `total`.",
    }
    assert fields["total"]["isDeprecated"] is False


def test_a_client_schema_from_introspection_still_takes_the_documented_operations(jane):
    # As gql and GraphiQL introspect: deprecated arguments and input fields included.
    introspected = jane.execute(get_introspection_query(input_value_deprecation=True))
    client_schema = build_client_schema(introspected)
    price = client_schema.get_type("CreateOrderInput").fields["price"]

    for document in (CREATE_ORDER % JANE_SUB, CONFIRM_ORDER % JANE_SUB, MY_ORDERS):
        assert validate(client_schema, parse(document)) == []
    assert price.deprecation_reason == DEPRECATED["CreateOrderInput.price"]


def test_deprecated_fields_keep_working(admin):
    customer = CustomerFactory()
    order = OrderFactory(customer=customer, status="CONFIRMED")

    data = admin.execute(
        """query($code: String!) {
          allOrders(status: "confirmed") { id totalPrice }
          allCustomers(first: 100) { id }
          ordersByCustomer(customerCode: $code, status: "CONFIRMED") { id }
        }""",
        {"code": customer.code},
    )

    assert {"id": str(order.id), "totalPrice": float(order.total)} in data["allOrders"]
    assert {"id": str(customer.id)} in data["allCustomers"]
    assert data["ordersByCustomer"] == [{"id": str(order.id)}]


def test_a_refused_mutation_names_its_code_from_the_enum(jane):
    payload = jane.execute(
        """mutation { confirmOrder(orderId: "00000000-0000-0000-0000-000000000000") {
              success fieldErrors { field code message } } }"""
    )["confirmOrder"]

    assert payload["success"] is False
    [error] = payload["fieldErrors"]
    assert error["code"] == "NOT_FOUND"
    assert error["code"] in {code.value for code in ErrorCode}
