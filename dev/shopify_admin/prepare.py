"""A request's document made ready to run, or refused the way Shopify refuses it:
parse, validate against the 2026-10 schema, pick the operation, coerce variables, and
Shopify's own checks (the 250-item input limit, the required ``@idempotent``).

Shopify runs graphql-ruby, so validation failures carry its messages and codes
(``undefinedField``, ``argumentNotAccepted``, ``missingRequiredArguments``, ...) and
variable failures its "was provided invalid value" form with ``problems``. graphql-core
does the checking; :func:`_ruby` rewrites the common cases into those words.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    ListValueNode,
    OperationDefinitionNode,
    OperationType,
    Visitor,
    parse,
    specified_rules,
    validate,
    visit,
)
from graphql.execution.values import VariableValues, get_variable_values
from graphql.utilities import type_from_ast, validate_input_value
from graphql.validation import ASTValidationRule

from dev.shopify_admin.errors import JsonError, error, locations_of

MAX_INPUT_ARRAY: Final = 250
#: Mutations whose ``@idempotent(key:)`` is required since 2026-04 (among those modelled).
IDEMPOTENT_REQUIRED: Final = frozenset({"inventorySetQuantities"})


@dataclass(frozen=True)
class Document:
    """A parsed, valid document with its chosen operation (cached per query text)."""

    document: DocumentNode
    operation: OperationDefinitionNode
    fragments: Mapping[str, FragmentDefinitionNode]
    root_fields: tuple[str, ...]

    @property
    def is_mutation(self) -> bool:
        return self.operation.operation is OperationType.MUTATION


@dataclass
class Prepared:
    doc: Document
    variables: VariableValues
    raw_variables: dict[str, Any] = field(default_factory=dict)


class Refused(Exception):
    """The request cannot run; ``errors`` are Shopify-shaped."""

    def __init__(self, errors: list[JsonError]) -> None:
        super().__init__(errors[0]["message"] if errors else "refused")
        self.errors = errors


# --------------------------------------------------------------------- validation


def _op_label(name: str | None) -> str:
    return name or "anonymous query"


_RUBY: Final[
    list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], tuple[str, dict[str, Any]]]]]
] = [
    (
        "FieldsOnCorrectTypeRule",
        re.compile(r"Cannot query field '(\w+)' on type '(\w+)'"),
        lambda m: (
            f"Field '{m[1]}' doesn't exist on type '{m[2]}'",
            {"code": "undefinedField", "typeName": m[2], "fieldName": m[1]},
        ),
    ),
    (
        "KnownArgumentNamesRule",
        re.compile(r"Unknown argument '(\w+)' on field '\w+\.(\w+)'"),
        lambda m: (
            f"Field '{m[2]}' doesn't accept argument '{m[1]}'",
            {
                "code": "argumentNotAccepted",
                "name": m[2],
                "typeName": "Field",
                "argumentName": m[1],
            },
        ),
    ),
    (
        "KnownArgumentNamesRule",
        re.compile(r"Unknown argument '(\w+)' on directive '@(\w+)'"),
        lambda m: (
            f"Directive '{m[2]}' doesn't accept argument '{m[1]}'",
            {
                "code": "argumentNotAccepted",
                "name": m[2],
                "typeName": "Directive",
                "argumentName": m[1],
            },
        ),
    ),
    (
        "ProvidedRequiredArgumentsRule",
        re.compile(r"Argument '\w+\.(\w+)\((\w+):\)'"),
        lambda m: (
            f"Field '{m[1]}' is missing required arguments: {m[2]}",
            {
                "code": "missingRequiredArguments",
                "className": "Field",
                "name": m[1],
                "arguments": m[2],
            },
        ),
    ),
    (
        "ProvidedRequiredArgumentsRule",
        re.compile(r"Argument '@(\w+)\((\w+):\)'"),
        lambda m: (
            f"Directive '{m[1]}' is missing required arguments: {m[2]}",
            {
                "code": "missingRequiredArguments",
                "className": "Directive",
                "name": m[1],
                "arguments": m[2],
            },
        ),
    ),
    (
        "ScalarLeafsRule",
        re.compile(r"Field '(\w+)' of type '([^']+)' must have a selection"),
        lambda m: (
            f"Field must have selections (field '{m[1]}' returns {m[2]} but has no selections. "
            f"Did you mean '{m[1]} {{ ... }}'?)",
            {"code": "selectionMismatch", "nodeName": f"field '{m[1]}'", "typeName": m[2]},
        ),
    ),
    (
        "ScalarLeafsRule",
        re.compile(r"Field '(\w+)' must not have a selection since type '([^']+)'"),
        lambda m: (
            f"Selections can't be made on scalars "
            f"(field '{m[1]}' returns {m[2]} but has selections)",
            {"code": "selectionMismatch", "nodeName": f"field '{m[1]}'", "typeName": m[2]},
        ),
    ),
    (
        "KnownTypeNamesRule",
        re.compile(r"Unknown type '(\w+)'"),
        lambda m: (
            f"{m[1]} isn't a defined input type",
            {"code": "variableRequiresValidType", "typeName": m[1]},
        ),
    ),
    (
        "NoUndefinedVariablesRule",
        re.compile(r"Variable '\$(\w+)' is not defined(?: by operation '(\w+)')?"),
        lambda m: (
            f"Variable ${m[1]} is used by {_op_label(m[2])} but not declared",
            {"code": "variableNotDefined", "variableName": m[1]},
        ),
    ),
    (
        "NoUnusedVariablesRule",
        re.compile(r"Variable '\$(\w+)' is never used(?: in operation '(\w+)')?"),
        lambda m: (
            f"Variable ${m[1]} is declared by {_op_label(m[2])} but not used",
            {"code": "variableNotUsed", "variableName": m[1]},
        ),
    ),
    (
        "KnownDirectivesRule",
        re.compile(r"Unknown directive '@(\w+)'"),
        lambda m: (
            f"Directive @{m[1]} is not defined",
            {"code": "undefinedDirective", "directiveName": m[1]},
        ),
    ),
    (
        "KnownDirectivesRule",
        re.compile(r"Directive '@(\w+)' may not be used on (\w+)"),
        lambda m: (
            f"'@{m[1]}' can't be applied to {m[2].lower()}",
            {"code": "directiveCannotBeApplied", "targetName": m[2].lower(), "name": m[1]},
        ),
    ),
    (
        "VariablesInAllowedPositionRule",
        re.compile(
            r"Variable '\$(\w+)' of type '([^']+)' used in position expecting type '([^']+)'"
        ),
        lambda m: (
            f"Type mismatch on variable ${m[1]} and argument ({m[2]} / {m[3]})",
            {"code": "variableMismatch", "variableName": m[1], "typeName": m[2]},
        ),
    ),
    (
        "UniqueOperationNamesRule",
        re.compile(r"There can be only one operation named '(\w+)'"),
        lambda m: (
            f'Operation name "{m[1]}" must be unique',
            {"code": "operationNotUnique", "operationName": m[1]},
        ),
    ),
    (
        "KnownOperationTypesRule",
        re.compile(r"The subscription operation is not supported"),
        lambda m: (
            "Schema is not configured for subscriptions",
            {"code": "missingSubscriptionConfiguration"},
        ),
    ),
    (
        "ValuesOfCorrectTypeRule",
        re.compile(r"(.*)", re.S),
        lambda m: (m[1], {"code": "argumentLiteralsIncompatible"}),
    ),
]


def _ruby(rule: str, exc: GraphQLError) -> JsonError:
    locations = [{"line": loc.line, "column": loc.column} for loc in exc.locations or ()]
    for name, pattern, build in _RUBY:
        if name == rule and (match := pattern.search(exc.message)) is not None:
            message, extensions = build(match)
            return error(message, locations=locations, extensions=extensions)
    return error(exc.message, locations=locations)


def _validation_errors(schema: GraphQLSchema, document: DocumentNode) -> list[JsonError]:
    """Each rule on its own (only for invalid documents), to know which rule failed."""
    out: list[JsonError] = []
    rules: Sequence[type[ASTValidationRule]] = specified_rules
    for rule in rules:
        for exc in validate(schema, document, [rule]):
            out.append(_ruby(rule.__name__, exc))
    return out


# --------------------------------------------------------------------- documents


def _choose(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        for op in operations:
            if op.name is not None and op.name.value == operation_name:
                return op
        raise Refused([error(f'No operation named "{operation_name}"')])
    if len(operations) != 1:
        raise Refused([error("An operation name is required")])
    return operations[0]


class Documents:
    """Parsed and validated documents, cached by (query, operationName): the push sends
    the same few documents again and again."""

    def __init__(self, schema: GraphQLSchema, cache_size: int = 512) -> None:
        self.schema = schema
        self._load = lru_cache(maxsize=cache_size)(self._load_uncached)

    def load(self, query: str, operation_name: str | None) -> Document:
        return self._load(query, operation_name)

    def _load_uncached(self, query: str, operation_name: str | None) -> Document:
        try:
            document = parse(query)
        except GraphQLError as exc:
            locations = [{"line": loc.line, "column": loc.column} for loc in exc.locations or ()]
            raise Refused([error(exc.message, locations=locations)]) from None
        if validate(self.schema, document):
            raise Refused(_validation_errors(self.schema, document))
        operation = _choose(document, operation_name)
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        roots = tuple(
            s.name.value for s in operation.selection_set.selections if isinstance(s, FieldNode)
        )
        _check_idempotent(operation)
        _check_literal_arrays(operation)
        return Document(document, operation, fragments, roots)


# --------------------------------------------------------------------- Shopify's checks


def _check_idempotent(operation: OperationDefinitionNode) -> None:
    if operation.operation is not OperationType.MUTATION:
        return
    problems = []
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.name.value not in IDEMPOTENT_REQUIRED:
            continue
        if not any(d.name.value == "idempotent" for d in selection.directives or ()):
            key = selection.alias.value if selection.alias else selection.name.value
            problems.append(
                error(
                    "The @idempotent directive is required for this mutation but was not provided.",
                    locations=locations_of([selection]),
                    path=[key],
                    extensions={"code": "BAD_REQUEST"},
                )
            )
    if problems:
        raise Refused(problems)


def _too_long(count: int) -> str:
    return (
        f"The input array size of {count} is greater than the maximum allowed of {MAX_INPUT_ARRAY}."
    )


def _check_literal_arrays(operation: OperationDefinitionNode) -> None:
    problems: list[JsonError] = []

    class ArrayLimit(Visitor):
        def enter_list_value(self, node: ListValueNode, *_: Any) -> None:
            if len(node.values) > MAX_INPUT_ARRAY:
                problems.append(
                    error(
                        _too_long(len(node.values)),
                        locations=locations_of([node]),
                        extensions={"code": "MAX_INPUT_SIZE_EXCEEDED"},
                    )
                )

    visit(operation, ArrayLimit())
    if problems:
        raise Refused(problems)


def _long_arrays(value: Any, path: list[str | int]) -> list[tuple[list[str | int], int]]:
    found: list[tuple[list[str | int], int]] = []
    if isinstance(value, list):
        if len(value) > MAX_INPUT_ARRAY:
            found.append((path, len(value)))
        for i, item in enumerate(value):
            found.extend(_long_arrays(item, [*path, i]))
    elif isinstance(value, dict):
        for key, item in value.items():
            found.extend(_long_arrays(item, [*path, key]))
    return found


# --------------------------------------------------------------------- variables


def _explain(exc: GraphQLError, path: list[str | int], raw: Any) -> tuple[list[str | int], str]:
    message = exc.message
    if "not to be None" in message or "to be provided" in message:
        return path, "Expected value to not be null"
    if match := re.search(r"to include required field '(\w+)'", message):
        return [*path, match[1]], "Expected value to not be null"
    if match := re.search(r"of type '(\w+)' not to include unknown field '(\w+)'", message):
        return [*path, match[2]], f"Field is not defined on {match[1]}"
    if match := re.match(r"(\w+) cannot represent", message):
        value: Any = raw
        for step in path:
            try:
                value = value[step]
            except (KeyError, IndexError, TypeError):
                break
        return path, f"Could not coerce value {json.dumps(value)} to {match[1]}"
    return path, message


def _variable_problems(
    schema: GraphQLSchema, doc: Document, raw: Mapping[str, Any]
) -> list[JsonError]:
    """One error per bad variable, each listing its problems (graphql-ruby's shape)."""
    problems_out: list[JsonError] = []
    for definition in doc.operation.variable_definitions or ():
        name = definition.variable.name.value
        var_type = type_from_ast(schema, definition.type)
        assert var_type is not None, "validated"
        type_text = print_type_ref(definition.type)
        problems: list[dict[str, Any]] = []
        if name not in raw and definition.default_value is None:
            if type_text.endswith("!"):
                problems.append({"path": [], "explanation": "Expected value to not be null"})
        elif name in raw:
            value = raw[name]

            def collect(
                exc: GraphQLError,
                path: Sequence[str | int],
                value: Any = value,
                problems: list[dict[str, Any]] = problems,
            ) -> None:
                where, why = _explain(exc, list(path), value)
                problems.append({"path": where, "explanation": why})

            validate_input_value(value, var_type, collect)  # type: ignore[arg-type]
        if problems:
            where = ", ".join(
                f"{'.'.join(str(p) for p in problem['path'])} ({problem['explanation']})"
                if problem["path"]
                else f"({problem['explanation']})"
                for problem in problems
            )
            problems_out.append(
                error(
                    f"Variable ${name} of type {type_text} was provided invalid value"
                    + (f" for {where}" if problems[0]["path"] else ""),
                    locations=locations_of([definition]),
                    extensions={
                        "code": "INVALID_VARIABLE",
                        "value": raw.get(name),
                        "problems": problems,
                    },
                )
            )
    return problems_out


def coerce_variables(
    schema: GraphQLSchema, doc: Document, raw: Mapping[str, Any]
) -> VariableValues:
    """The operation's variables coerced, or :class:`Refused` in Shopify's words."""
    coerced = get_variable_values(schema, doc.operation.variable_definitions or (), dict(raw))
    if isinstance(coerced, list):  # only then is the slower, path-by-path account made
        raise Refused(_variable_problems(schema, doc, raw) or [error(e.message) for e in coerced])
    too_long = [
        error(_too_long(count), path=path, extensions={"code": "MAX_INPUT_SIZE_EXCEEDED"})
        for path, count in _long_arrays(dict(raw), [])
    ]
    if too_long:
        raise Refused(too_long)
    return coerced


def print_type_ref(node: Any) -> str:
    """``[InventoryQuantityInput!]!`` as written in the document."""
    kind = node.kind
    if kind == "non_null_type":
        return print_type_ref(node.type) + "!"
    if kind == "list_type":
        return f"[{print_type_ref(node.type)}]"
    return str(node.name.value)


def prepare(documents: Documents, query: Any, operation_name: Any, variables: Any) -> Prepared:
    if not isinstance(query, str) or not query.strip():
        raise Refused([error("No query string was present")])
    if operation_name is not None and not isinstance(operation_name, str):
        raise Refused([error("operationName must be a string")])
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise Refused([error("Variables must be an object")])
    doc = documents.load(query, operation_name or None)
    coerced = coerce_variables(documents.schema, doc, variables)
    return Prepared(doc, coerced, variables)
