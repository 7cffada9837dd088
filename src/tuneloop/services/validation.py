"""Pydantic's validation errors in the words a client uses: the field as `messages[0].content` (not
`body.messages.0.content.str`), and a message that starts with it."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from tuneloop.services import ServiceError

_UNION_TAG = re.compile(r"^[a-z][\w-]*\[.*\]$|^(str|int|float|bool|none|list|dict|bytes)$|^\[key\]$")
"""Pydantic names the member of a union in an error's location (`content.str`, `x.list[int]`), and a
mapping's key (`metadata.k.[key]`): not fields."""
_PLACES = {"body", "query", "path", "header", "cookie"}


def param_of(loc: tuple[Any, ...]) -> str | None:
    out = ""
    for part in loc:
        if part in _PLACES and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _UNION_TAG.match(str(part)):
            out += f".{part}" if out else str(part)
    return out or None


def describe(error: dict[str, Any]) -> tuple[str, str | None]:
    """(message, param) of one validation error; bad JSON apart (its location is a character offset)."""
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return f"the request body is not valid JSON{': ' + str(reason) if reason else ''}", None
    param = param_of(tuple(error.get("loc", ())))
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{param or 'request'}: {message}", param


def invalid(e: ValidationError) -> ServiceError:
    message, param = describe(e.errors()[0])
    return ServiceError(400, message, param, "invalid_request")
