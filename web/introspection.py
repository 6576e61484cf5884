"""Introspection is off in production: the schema cannot be read through GraphQL there.

`__schema`, what GraphiQL and code generators ask for, is refused when the document is
validated (`GRAPHQL_VALIDATION_FAILED` with `validationErrorCode: INTROSPECTION_DISABLED`, as
Apollo Server refuses it). A `__type(name: ...)` lookup answers null, as it does for a type
that does not exist: a refusal would turn a client's ordinary query that carries one (as the
GraphQL-over-HTTP audit's requests with variables do) into an error, and null says nothing
about the schema either. The schema itself is published as SDL (`GET /graphql/schema.graphql`)
unless SCHEMA_SDL_PUBLIC is off.
"""

from __future__ import annotations

import re
from typing import Any

from graphql import FieldNode, GraphQLError, GraphQLResolveInfo, ValidationRule

SDL_PATH = "/graphql/schema.graphql"
# `__type` as a field name, not the start of `__typename`: only a document that matches gets
# the resolver wrapper below, so every other request runs without it.
TYPE_LOOKUP = re.compile(r"__type\b")


def disabled_rule(sdl_public: bool) -> type[ValidationRule]:
    """The validation rule that refuses `__schema`, its message naming where the SDL is when
    it is published."""
    hint = f" The schema is published at {SDL_PATH}." if sdl_public else ""

    class SchemaIntrospectionDisabled(ValidationRule):
        def enter_field(self, node: FieldNode, *_args: Any) -> None:
            if node.name.value == "__schema":
                self.report_error(
                    GraphQLError(
                        f"Cannot query '__schema': introspection is disabled.{hint}",
                        node,
                        extensions={
                            "code": "GRAPHQL_VALIDATION_FAILED",
                            "validationErrorCode": "INTROSPECTION_DISABLED",
                        },
                    )
                )

    return SchemaIntrospectionDisabled


def _no_type_lookups(resolve: Any, root: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
    if info.field_name == "__type":
        return None
    return resolve(root, info, **args)


def middleware_for(query: str) -> list[Any] | None:
    """What execution of `query` needs in production so that `__type` answers null."""
    return [_no_type_lookups] if TYPE_LOOKUP.search(query) else None
