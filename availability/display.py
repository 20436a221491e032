"""Bounded previews of values for error messages.

Every message that quotes a value it was given (a dead-letter reason, a 400 answer,
a refused rule) goes through ``preview``, never ``repr``: the value may be a string
of megabytes, an integer of thousands of digits (which ``str`` refuses to convert),
or a JSON document nested a thousand deep (which ``repr`` turns into a
``RecursionError``). ``preview`` walks the value with an explicit stack and stops as
soon as it has ``limit`` characters, so its cost is bounded by ``limit`` whatever the
value, and it cannot raise for any value.
"""

from __future__ import annotations

#: Characters of a value shown in a message by default.
PREVIEW_LIMIT = 80
#: An integer with more bits than this is described, not written out.
_MAX_INT_BITS = 256
_ELLIPSIS = "..."


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``...`` when cut."""
    if len(text) <= limit:
        return text
    if limit <= len(_ELLIPSIS):
        return text[:limit]
    return text[: limit - len(_ELLIPSIS)] + _ELLIPSIS


def _scalar(value: object, budget: int) -> str | None:
    """The text of a value that has no parts, or None for a list or dict."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            return f"<integer of {value.bit_length()} bits>"
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str | bytes | bytearray):
        # Only the start is quoted: a megabyte string costs no more than a short one.
        return repr(value[: budget + 1])
    if isinstance(value, list | tuple | dict):
        return None
    return f"<{type(value).__name__}>"


def preview(value: object, limit: int = PREVIEW_LIMIT) -> str:
    """A one-line preview of a JSON-like value (``repr`` style), at most ``limit``
    characters; ``...`` at the end when it was cut."""
    parts: list[str] = []
    size = 0
    # (True, text) is text to write; (False, value) a value still to be shown.
    stack: list[tuple[bool, object]] = [(False, value)]
    while stack and size <= limit:
        literal, item = stack.pop()
        if literal:
            text = str(item)
        else:
            scalar = _scalar(item, limit - size)
            text = scalar if scalar is not None else _open(item, stack, limit - size)
        parts.append(text)
        size += len(text)
    # The loop stops early only once more than ``limit`` characters are written, so
    # clip() marks every cut preview.
    return clip("".join(parts), limit)


def _open(container: object, stack: list[tuple[bool, object]], budget: int) -> str:
    """Push a list's or dict's parts (at most as many as could be shown) onto the
    stack; return its opening bracket."""
    shown: list[tuple[bool, object]] = []
    if isinstance(container, dict):
        opening, closing = "{", "}"
        for n, (key, item) in enumerate(container.items()):
            if n >= budget:
                shown.append((True, ", " + _ELLIPSIS))
                break
            if n:
                shown.append((True, ", "))
            shown.extend(((False, key), (True, ": "), (False, item)))
    else:
        assert isinstance(container, list | tuple)
        opening, closing = ("[", "]") if isinstance(container, list) else ("(", ")")
        for n, item in enumerate(container):
            if n >= budget:
                shown.append((True, ", " + _ELLIPSIS))
                break
            if n:
                shown.append((True, ", "))
            shown.append((False, item))
    stack.append((True, closing))
    stack.extend(reversed(shown))
    return opening
