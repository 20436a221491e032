"""Calculated query cost, the way Shopify documents it.

shopify.dev "GraphQL Admin API rate limits" (Cost calculation): a field costs by what it
returns: scalar 0, enum 0, object 1, interface and union "maximum of possible
selections", connection "sized by first and last arguments", mutation 10. Shopify's
engineering post "Rate Limiting GraphQL APIs by Calculating Query Complexity" spells the
connection out: two points plus the objects requested, i.e. ``2 + n * (cost of one
node)``; ``pageInfo`` and cursors are inside the two. A mutation's payload objects are
inside its 10 (real answers show ``requestedQueryCost: 10`` for a mutation selecting an
object and userErrors); connections selected inside a payload are still added.

The *requested* cost is computed from the document before execution; the *actual* cost
walks the answer, so connections that return fewer nodes cost less (Shopify refunds the
difference). A list of objects that is not a connection costs as one object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInt,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    is_abstract_type,
    is_leaf_type,
    value_from_ast,
)
from graphql.execution.values import VariableValues, get_directive_values
from graphql.type import GraphQLIncludeDirective, GraphQLSkipDirective

OBJECT: Final = 1
CONNECTION_BASE: Final = 2
MUTATION: Final = 10
MAX_QUERY_COST: Final = 1_000


@dataclass(frozen=True)
class _Walk:
    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: VariableValues


def _included(walk: _Walk, node: FieldNode | InlineFragmentNode | FragmentSpreadNode) -> bool:
    skip = get_directive_values(GraphQLSkipDirective, node, walk.variables)
    if skip and skip.get("if") is True:
        return False
    include = get_directive_values(GraphQLIncludeDirective, node, walk.variables)
    return not (include and include.get("if") is False)


def _type_named(walk: _Walk, name: str) -> GraphQLNamedType:
    named = walk.schema.get_type(name)
    assert named is not None, name
    return named


def _fields(
    walk: _Walk, parent: GraphQLNamedType, selections: SelectionSetNode | None
) -> tuple[dict[str, list[FieldNode]], list[tuple[GraphQLNamedType, SelectionSetNode]]]:
    """Fields by response key; on an abstract parent, fragments are kept apart (their
    costs are alternatives), on an object type they are flattened into the fields."""
    fields: dict[str, list[FieldNode]] = {}
    alternatives: list[tuple[GraphQLNamedType, SelectionSetNode]] = []
    if selections is None:
        return fields, alternatives
    for selection in selections.selections:
        if not _included(walk, selection):  # type: ignore[arg-type]
            continue
        if isinstance(selection, FieldNode):
            key = selection.alias.value if selection.alias else selection.name.value
            fields.setdefault(key, []).append(selection)
            continue
        if isinstance(selection, InlineFragmentNode):
            condition = selection.type_condition
            target = _type_named(walk, condition.name.value) if condition else parent
            inner = selection.selection_set
        else:
            assert isinstance(selection, FragmentSpreadNode)
            fragment = walk.fragments[selection.name.value]
            target = _type_named(walk, fragment.type_condition.name.value)
            inner = fragment.selection_set
        if is_abstract_type(parent) and target is not parent:
            alternatives.append((target, inner))
        else:
            sub_fields, sub_alternatives = _fields(walk, parent, inner)
            for key, nodes in sub_fields.items():
                fields.setdefault(key, []).extend(nodes)
            alternatives.extend(sub_alternatives)
    return fields, alternatives


def _field_def(parent: GraphQLNamedType, name: str) -> GraphQLField:
    assert isinstance(parent, GraphQLObjectType | GraphQLInterfaceType), parent
    definition: GraphQLField = parent.fields[name]
    return definition


def _merged(nodes: Sequence[FieldNode]) -> SelectionSetNode | None:
    sets = [n.selection_set for n in nodes if n.selection_set is not None]
    if not sets:
        return None
    if len(sets) == 1:
        return sets[0]
    return SelectionSetNode(selections=tuple(s for st in sets for s in st.selections))


def _page_size(walk: _Walk, node: FieldNode) -> int:
    size = 0
    for argument in node.arguments or ():
        if argument.name.value in ("first", "last"):
            value = value_from_ast(argument.value, GraphQLInt, walk.variables.coerced)
            if isinstance(value, int):
                size = max(size, value)
    return size


def is_connection(field_type: GraphQLNamedType, argument_names: Sequence[str]) -> bool:
    return field_type.name.endswith("Connection") and (
        "first" in argument_names or "last" in argument_names
    )


class _Requested:
    def __init__(self, walk: _Walk) -> None:
        self.walk = walk

    def selection(
        self, parent: GraphQLNamedType, selections: SelectionSetNode | None, payload: bool
    ) -> int:
        fields, alternatives = _fields(self.walk, parent, selections)
        total = sum(self.field(parent, nodes, payload) for nodes in fields.values())
        options = [self.selection(t, s, payload) for t, s in alternatives]
        return total + max(options, default=0)

    def field(self, parent: GraphQLNamedType, nodes: list[FieldNode], payload: bool) -> int:
        name = nodes[0].name.value
        if name.startswith("__"):
            return 0
        definition = _field_def(parent, name)
        field_type = get_named_type(definition.type)
        if is_leaf_type(field_type):
            return 0
        children = _merged(nodes)
        if is_connection(field_type, list(definition.args)):
            size = max(_page_size(self.walk, node) for node in nodes)
            return CONNECTION_BASE + size * self.node_of_connection(field_type, children)
        own = 0 if payload else OBJECT
        return own + self.selection(field_type, children, payload)

    def node_of_connection(
        self, connection: GraphQLNamedType, selections: SelectionSetNode | None
    ) -> int:
        """The cost of one node: through ``edges { node }`` or ``nodes``, whichever is
        dearer (both name the same objects)."""
        fields, _ = _fields(self.walk, connection, selections)
        per_node = 0
        assert isinstance(connection, GraphQLObjectType)
        for nodes in fields.values():
            name = nodes[0].name.value
            children = _merged(nodes)
            if name == "nodes":
                node_type = get_named_type(connection.fields["nodes"].type)
                per_node = max(per_node, OBJECT + self.selection(node_type, children, False))
            elif name == "edges":
                edge_type = get_named_type(connection.fields["edges"].type)
                edge_fields, _ = _fields(self.walk, edge_type, children)
                for edge_nodes in edge_fields.values():
                    if edge_nodes[0].name.value == "node":
                        assert isinstance(edge_type, GraphQLObjectType)
                        node_type = get_named_type(edge_type.fields["node"].type)
                        inner = _merged(edge_nodes)
                        per_node = max(per_node, OBJECT + self.selection(node_type, inner, False))
        return per_node


def _root(schema: GraphQLSchema, operation: OperationDefinitionNode) -> GraphQLObjectType:
    root = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
    }.get(operation.operation)
    assert root is not None, "validated documents only"
    return root


def requested_cost(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: VariableValues,
) -> int:
    walk = _Walk(schema, fragments, variables)
    root = _root(schema, operation)
    requested = _Requested(walk)
    if operation.operation is OperationType.MUTATION:
        fields, _ = _fields(walk, root, operation.selection_set)
        return sum(
            MUTATION
            + requested.selection(
                get_named_type(root.fields[nodes[0].name.value].type), _merged(nodes), True
            )
            for nodes in fields.values()
            if not nodes[0].name.value.startswith("__")
        )
    return requested.selection(root, operation.selection_set, False)


class _Actual:
    def __init__(self, walk: _Walk) -> None:
        self.walk = walk

    def selection(
        self,
        parent: GraphQLNamedType,
        selections: SelectionSetNode | None,
        data: Any,
        payload: bool,
    ) -> int:
        if not isinstance(data, Mapping):
            return 0
        fields, alternatives = _fields(self.walk, parent, selections)
        total = 0
        for key, nodes in fields.items():
            total += self.field(parent, nodes, data.get(key), payload)
        options = [self.selection(t, s, data, payload) for t, s in alternatives]
        return total + max(options, default=0)

    def field(
        self, parent: GraphQLNamedType, nodes: list[FieldNode], value: Any, payload: bool
    ) -> int:
        name = nodes[0].name.value
        if name.startswith("__"):
            return 0
        definition = _field_def(parent, name)
        field_type = get_named_type(definition.type)
        if is_leaf_type(field_type):
            return 0
        children = _merged(nodes)
        if is_connection(field_type, list(definition.args)):
            return CONNECTION_BASE + self.connection_nodes(field_type, children, value)
        own = 0 if payload else OBJECT
        if isinstance(value, list):
            inner = [self.selection(field_type, children, v, payload) for v in value]
            return own + max(inner, default=0)
        return own + self.selection(field_type, children, value, payload)

    def connection_nodes(
        self, connection: GraphQLNamedType, selections: SelectionSetNode | None, value: Any
    ) -> int:
        if not isinstance(value, Mapping):
            return 0
        assert isinstance(connection, GraphQLObjectType)
        fields, _ = _fields(self.walk, connection, selections)
        by_node: list[int] = []
        for key, nodes in fields.items():
            name = nodes[0].name.value
            children = _merged(nodes)
            if name == "nodes" and isinstance(value.get(key), list):
                node_type = get_named_type(connection.fields["nodes"].type)
                costs = [OBJECT + self.selection(node_type, children, v, False) for v in value[key]]
                by_node = [max(a, b) for a, b in zip(by_node, costs, strict=False)] or costs
            elif name == "edges" and isinstance(value.get(key), list):
                edge_type = get_named_type(connection.fields["edges"].type)
                assert isinstance(edge_type, GraphQLObjectType)
                node_type = get_named_type(edge_type.fields["node"].type)
                edge_fields, _ = _fields(self.walk, edge_type, children)
                costs = []
                for edge in value[key]:
                    cost = 0
                    for edge_key, edge_nodes in edge_fields.items():
                        if edge_nodes[0].name.value == "node" and isinstance(edge, Mapping):
                            inner = _merged(edge_nodes)
                            node_value = edge.get(edge_key)
                            cost = max(
                                cost, OBJECT + self.selection(node_type, inner, node_value, False)
                            )
                    costs.append(cost)
                by_node = [max(a, b) for a, b in zip(by_node, costs, strict=False)] or costs
        return sum(by_node)


def actual_cost(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: VariableValues,
    data: Mapping[str, Any] | None,
) -> int:
    walk = _Walk(schema, fragments, variables)
    root = _root(schema, operation)
    actual = _Actual(walk)
    if operation.operation is OperationType.MUTATION:
        fields, _ = _fields(walk, root, operation.selection_set)
        total = 0
        for key, nodes in fields.items():
            if nodes[0].name.value.startswith("__"):
                continue
            field_type = get_named_type(root.fields[nodes[0].name.value].type)
            value = (data or {}).get(key)
            total += MUTATION + actual.selection(field_type, _merged(nodes), value, True)
        return total
    return actual.selection(root, operation.selection_set, data or {}, False)
