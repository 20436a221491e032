"""The part of Shopify's search syntax the stand-in understands, for ``inventoryItems``.

``sku:A OR sku:B``, ``sku:"with space"``, ``sku:PREFIX*``, ``id:123`` / ``id:>=123``,
terms joined by ``AND`` (or a space) and ``OR`` (AND binds tighter). Anything else
(parentheses, negation, other fields) is refused loudly rather than guessed at, so a
query the real API would read differently cannot pass here by accident.

SKU terms match case-insensitively: a caller must compare the returned ``sku`` with the
one it asked for itself, as against the real search.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

FIELDS: Final = frozenset({"sku", "id"})
_COMPARATORS: Final = (">=", "<=", ">", "<")


class SearchUnsupported(ValueError):
    """A search query the stand-in does not model; the message says which part."""


@dataclass(frozen=True)
class Term:
    field: str
    value: str
    comparator: str = ":"


def _tokens(text: str) -> list[str | Term]:
    """Terms and the connectives ``AND``/``OR`` in order."""
    out: list[str | Term] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] in "()":
            raise SearchUnsupported("parentheses in search queries are not modelled")
        if text[i] == "-" or text.startswith("NOT ", i):
            raise SearchUnsupported("negated search terms are not modelled")
        match = re.match(r"([A-Za-z_]+):", text[i:])
        if match is None:
            word = re.match(r"\S+", text[i:])
            assert word is not None
            if word.group(0) in ("AND", "OR"):
                out.append(word.group(0))
                i += len(word.group(0))
                continue
            raise SearchUnsupported(f"free-text search term {word.group(0)!r} is not modelled")
        field = match.group(1)
        if field not in FIELDS:
            raise SearchUnsupported(f"search field {field!r} is not modelled (only sku, id)")
        i += len(match.group(0))
        comparator = ":"
        for candidate in _COMPARATORS:
            if text.startswith(candidate, i):
                comparator = candidate
                i += len(candidate)
                break
        if i < n and text[i] in "\"'":
            quote, j, value = text[i], i + 1, []
            while j < n and text[j] != quote:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                value.append(text[j])
                j += 1
            if j >= n:
                raise SearchUnsupported("unterminated quoted search value")
            out.append(Term(field, "".join(value), comparator))
            i = j + 1
        else:
            word = re.match(r"[^\s()]*", text[i:])
            assert word is not None
            out.append(Term(field, word.group(0), comparator))
            i += len(word.group(0))
    return out


def parse(text: str) -> list[list[Term]]:
    """The query as OR-groups of AND-ed terms."""
    groups: list[list[Term]] = [[]]
    expect_term = True
    for token in _tokens(text):
        if isinstance(token, Term):
            groups[-1].append(token)
            expect_term = False
        elif expect_term:
            raise SearchUnsupported(f"{token} without a term before it")
        else:
            if token == "OR":
                groups.append([])
            expect_term = True
    if expect_term and any(groups):
        raise SearchUnsupported("search query ends with a connective")
    return [group for group in groups if group]


def _term_matches(term: Term, sku: str | None, number: int) -> bool:
    if term.field == "sku":
        if term.comparator != ":" or sku is None:
            return False
        want = term.value.casefold()
        if want.endswith("*"):
            return sku.casefold().startswith(want[:-1])
        return sku.casefold() == want
    if not term.value.isdigit():
        return False
    value = int(term.value)
    return {
        ":": number == value,
        ">=": number >= value,
        "<=": number <= value,
        ">": number > value,
        "<": number < value,
    }[term.comparator]


def matcher(text: str | None) -> Callable[[str | None, int], bool]:
    """A predicate on (sku, numeric id); no query (or an empty one) matches everything."""
    if not text or not text.strip():
        return lambda sku, number: True
    groups = parse(text)

    def matches(sku: str | None, number: int) -> bool:
        return any(all(_term_matches(t, sku, number) for t in group) for group in groups)

    return matches
