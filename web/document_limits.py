"""The limits a GraphQL document must meet, each measured in time linear in its size.

A fragment may spread another fragment several times, so a walk that follows spreads as it
meets them takes time exponential in the document's length: a 1 KB document in which each
fragment spreads the next one twice stands for millions of fields. Here each fragment is
measured once, after every fragment it spreads (dependency order), and a spread adds up the
measure of its fragment instead of walking it again.

The checks run cheapest first: bracket nesting, then depth and expanded field count, then
how many selections merge into one response field (validation compares those pairwise), all
before validation; the cost, which depends on the request's variables, runs last.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    TokenKind,
    Undefined,
    ValueNode,
    VariableNode,
    get_named_type,
    value_from_ast_untyped,
)

from models.messages import SMS_LIMIT
from models.notifications import MESSAGE_ID_LIMIT
from models.pagination import DEFAULT_PAGE, MAX_PAGE
from models.sending import ERROR_LIMIT
from models.validation import MAX_DETAILS, MAX_EMAIL, MAX_ITEM, MAX_NAME, MAX_SUBJECT

# The arguments by which a field returns a page of rows: the field costs once per row.
PAGE_SIZE_ARGUMENTS = frozenset({"first", "last"})
# Fields whose resolver may ask the database when it runs: every root field, and these. A
# round trip costs a worker far more than a field read from a row it has (16 aliases of
# `allOrders(first: 100) { customer { id } }`, 1,600 lookups, took seconds yet cost 4,800 at
# 1 a field), so each costs this much more. All but a customer's orders are now read a list
# at a time (web/resolvers/batches.py); they are weighed per row all the same, as the cost is
# worked out before anything runs and must hold for whatever the rows turn out to be.
DATABASE_FIELDS = frozenset(
    {
        ("Customer", "orders"),
        ("Order", "customer"),
        ("Order", "events"),
        ("Order", "notifications"),
        ("Notification", "history"),
    }
)
DATABASE_WEIGHT = 10
# A customer's orders are the one per-row read not made a list at a time: each row of the
# list above it sends a query of its own (100 customers, 100 queries), so each costs as much.
PER_ROW_QUERY_WEIGHT = 40
PER_ROW_QUERIES = frozenset({("Customer", "orders")})
# A field read from a row costs 1, which stands for up to this many bytes of the answer. A
# text field that may be longer costs a point for each of these in its longest value: 48
# aliases of `orderDetails` (2,000 characters) over 100 orders cost 4,910 at 1 a field and
# answered 38 MB.
BYTES_A_POINT = 256
# The most bytes each long text field takes in an answer: 4 a character (UTF-8) for text
# cleaned of control characters, 6 (a \u escape) for text from the gateway or an exception.
LONG_TEXT_BYTES = {
    ("Order", "orderDetails"): 4 * MAX_DETAILS,
    ("Order", "item"): 4 * MAX_ITEM,
    ("Order", "createdBy"): 4 * MAX_SUBJECT,
    ("OrderEvent", "actor"): 4 * MAX_SUBJECT,
    ("OrderEvent", "data"): 4 * (MAX_DETAILS + 16),  # {"reason": "..."}, a cancel's reason
    ("Customer", "name"): 4 * MAX_NAME,
    ("Customer", "email"): 4 * MAX_EMAIL,
    ("Notification", "body"): 4 * SMS_LIMIT,
    ("Notification", "lastError"): 6 * ERROR_LIMIT,
    ("Notification", "providerMessageId"): 6 * MESSAGE_ID_LIMIT,
    ("NotificationAttempt", "error"): 6 * ERROR_LIMIT,
    ("NotificationAttempt", "providerMessageId"): 6 * MESSAGE_ID_LIMIT,
}
FIELD_POINTS = {key: -(-size // BYTES_A_POINT) for key, size in LONG_TEXT_BYTES.items()}
OPENING = frozenset({TokenKind.BRACE_L, TokenKind.BRACKET_L})
CLOSING = frozenset({TokenKind.BRACE_R, TokenKind.BRACKET_R})


def bracket_nesting(document: DocumentNode) -> int:
    """How deeply `{` and `[` nest in a document parsed with its locations."""
    level = deepest = 0
    token = document.loc.start_token if document.loc else None
    while token is not None:
        if token.kind in OPENING:
            level += 1
            deepest = max(deepest, level)
        elif token.kind in CLOSING:
            level -= 1
        token = token.next
    return deepest


@dataclass(frozen=True)
class Size:
    """How deep a selection goes (in fields, introspection aside) and how many field
    selections it makes once every fragment spread in it is expanded."""

    depth: int = 0
    fields: int = 0


@dataclass(frozen=True)
class Measurements:
    """A document's fragments in dependency order, the size of each of its operations, the
    fields validation walks, and whether fragment spreads form a cycle."""

    fragments: tuple[FragmentDefinitionNode, ...]
    operations: tuple[tuple[OperationDefinitionNode, Size], ...]
    fields: int
    cycle: bool


def measure(document: DocumentNode) -> Measurements:
    """Depth and expanded field count of each operation, in time linear in the document. A
    spread of an unknown fragment, or one that closes a cycle, counts as empty here: the
    validation rules refuse such documents."""
    fragments, cycle = _fragments_in_dependency_order(document)
    sizes: dict[str, Size] = {}
    for fragment in fragments:
        sizes[fragment.name.value] = _size(fragment.selection_set, sizes)
    operations = tuple(
        (definition, _size(definition.selection_set, sizes))
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    )
    # What validation walks: every operation expanded, and fragments no operation uses.
    used = {name for operation, _ in operations for name in _spreads(operation.selection_set)}
    used |= {name for fragment in fragments for name in _spreads(fragment.selection_set)}
    fields = sum(size.fields for _, size in operations) + sum(
        sizes[fragment.name.value].fields
        for fragment in fragments
        if fragment.name.value not in used
    )
    return Measurements(
        fragments=tuple(fragments), operations=operations, fields=fields, cycle=cycle
    )


def _size(selection_set: SelectionSetNode | None, fragments: Mapping[str, Size]) -> Size:
    depth = fields = 0
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FieldNode):
            inner = _size(selection.selection_set, fragments)
            fields += 1 + inner.fields
            if not selection.name.value.startswith("__"):  # introspection has its own switch
                depth = max(depth, 1 + inner.depth)
            continue
        if isinstance(selection, InlineFragmentNode):
            inner = _size(selection.selection_set, fragments)
        else:
            inner = fragments.get(selection.name.value, Size())
        depth = max(depth, inner.depth)
        fields += inner.fields
    return Size(depth, fields)


def _spreads(selection_set: SelectionSetNode | None) -> Iterator[str]:
    """The names of the fragments a selection set spreads, at any depth within it."""
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FragmentSpreadNode):
            yield selection.name.value
        else:
            yield from _spreads(selection.selection_set)


def _fragments_in_dependency_order(
    document: DocumentNode,
) -> tuple[list[FragmentDefinitionNode], bool]:
    """Every fragment after the fragments it spreads, and whether some spreads form a cycle
    (a depth-first walk with a stack of its own: a chain of a few hundred fragments must not
    exhaust Python's)."""
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    order: list[FragmentDefinitionNode] = []
    seen: set[str] = set()
    walking: set[str] = set()
    cycle = False
    for root in fragments:
        if root in seen:
            continue
        seen.add(root)
        walking.add(root)
        stack = [(root, _spreads(fragments[root].selection_set))]
        while stack:
            name, spreads = stack[-1]
            for spread in spreads:
                cycle = cycle or spread in walking
                if spread in fragments and spread not in seen:
                    seen.add(spread)
                    walking.add(spread)
                    stack.append((spread, _spreads(fragments[spread].selection_set)))
                    break
            else:
                stack.pop()
                walking.discard(name)
                order.append(fragments[name])
    return order, cycle


def merged_pairs(measurements: Measurements) -> int:
    """How many pairs of field selections validation compares: selections of the same
    response name at the same path of an operation (fragments expanded) must agree, and are
    checked two by two. Call only once the expanded field count is known to be small and the
    fragments to have no cycle: this walk expands fragments."""
    fragments = {fragment.name.value: fragment for fragment in measurements.fragments}
    pairs = 0
    pending = [[operation.selection_set] for operation, _ in measurements.operations]
    while pending:
        by_name: dict[str, list[FieldNode]] = {}
        for field in _expanded_fields(pending.pop(), fragments):
            by_name.setdefault((field.alias or field.name).value, []).append(field)
        for fields in by_name.values():
            pairs += len(fields) * (len(fields) - 1) // 2
            inner = [field.selection_set for field in fields if field.selection_set]
            if inner:
                pending.append(inner)
    return pairs


def _expanded_fields(
    selection_sets: list[SelectionSetNode], fragments: Mapping[str, FragmentDefinitionNode]
) -> Iterator[FieldNode]:
    """The fields of these selection sets, inline fragments and spreads expanded."""
    stack = list(selection_sets)
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FieldNode):
                yield selection
            elif isinstance(selection, InlineFragmentNode):
                stack.append(selection.selection_set)
            elif selection.name.value in fragments:
                stack.append(fragments[selection.name.value].selection_set)


def cost(
    schema: GraphQLSchema,
    measurements: Measurements,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any],
) -> int:
    """What `operation` costs with these variables: each field 1 (a long text field its
    `FIELD_POINTS`), times the page size of every list above it and of its own, the page
    size being the one its resolver will use; a field that asks the database
    (`DATABASE_FIELDS`, root fields) `DATABASE_WEIGHT` more (`PER_ROW_QUERY_WEIGHT` for one
    whose reads are not batched), times the page size of every list above it (once per run
    of its resolver, not per row)."""
    given = dict(variables)
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if name not in given and definition.default_value is not None:
            given[name] = value_from_ast_untyped(definition.default_value)
    costs: dict[str, int] = {}
    roots = (schema.query_type, schema.mutation_type, schema.subscription_type)
    walk = _CostWalk(schema, given, costs, frozenset(root for root in roots if root))
    for fragment in measurements.fragments:
        costs[fragment.name.value] = walk.selections(
            fragment.selection_set, schema.get_type(fragment.type_condition.name.value)
        )
    root = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
        OperationType.SUBSCRIPTION: schema.subscription_type,
    }[operation.operation]
    return walk.selections(operation.selection_set, root)


@dataclass
class _CostWalk:
    schema: GraphQLSchema
    variables: Mapping[str, Any]
    fragments: Mapping[str, int]
    roots: frozenset[GraphQLObjectType]

    def selections(self, selection_set: SelectionSetNode | None, parent: Any) -> int:
        total = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                kind = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selections(selection.selection_set, kind)
            else:
                total += self.fragments.get(selection.name.value, 0)
        return total

    def field(self, node: FieldNode, parent: GraphQLNamedType | None) -> int:
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 1
        field = parent.fields.get(node.name.value)
        if field is None:  # __typename, or a field validation has refused already
            return 1
        times = 1
        if PAGE_SIZE_ARGUMENTS & field.args.keys():
            # A connection's `first` has no default (it may not come with `last`), and a
            # list's is 20: either way the resolver serves DEFAULT_PAGE rows when none is given.
            omitted = field.args["first"].default_value if "first" in field.args else None
            omitted = None if omitted is Undefined else omitted
            sizes = [
                self.page_size(argument.value)
                for argument in node.arguments
                if argument.name.value in PAGE_SIZE_ARGUMENTS
            ]
            given = [size for size in sizes if size is not None]
            times = max(given) if given else _as_page_size(omitted)
        inner = self.selections(node.selection_set, get_named_type(field.type))
        key = (parent.name, node.name.value)
        if key in PER_ROW_QUERIES:
            asking = PER_ROW_QUERY_WEIGHT
        elif parent in self.roots or key in DATABASE_FIELDS:
            asking = DATABASE_WEIGHT
        else:
            asking = 0
        return asking + times * (FIELD_POINTS.get(key, 1) + inner)

    def page_size(self, value: ValueNode) -> int | None:
        """The rows a page-size argument asks for; None when it is omitted (a variable that
        was not given), so the field's default applies."""
        if isinstance(value, VariableNode):
            name = value.name.value
            return _as_page_size(self.variables[name]) if name in self.variables else None
        if isinstance(value, NullValueNode):
            return DEFAULT_PAGE  # a resolver given null serves its default page
        if isinstance(value, IntValueNode):
            return _as_page_size(int(value.value))
        return MAX_PAGE  # not an Int: refused before it runs; counted at the cap meanwhile


def _as_page_size(value: object) -> int:
    """The rows a resolver serves at most for this page size: its default for null, and at
    least 1 and at most the cap otherwise (it refuses sizes outside 1 to the cap, and values
    that are not numbers never reach it)."""
    if value is None:
        return DEFAULT_PAGE
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return MAX_PAGE
    return min(max(value, 1), MAX_PAGE)
