"""Reading a request's fields: every problem is a BadInput naming the field (HTTP 400)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.requests import Request

RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TEXT = 1_000_000  # a site file as YAML text


class BadInput(ValueError):
    """A request field is missing or wrong; the message starts with the field's name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


async def json_body(request: Request) -> dict[str, Any]:
    """The JSON object of a POST (an empty body is an empty object)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadInput("body", "is not JSON") from None
    if not isinstance(body, dict):
        raise BadInput("body", "must be a JSON object")
    return body


def number(
    data: Any,
    field: str,
    *,
    default: float | None = None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float:
    """A finite number (a JSON number, or a numeric string from a query or a form)."""
    value = data.get(field) if hasattr(data, "get") else None
    if value is None or value == "":
        if default is None:
            raise BadInput(field, "required")
        return default
    if isinstance(value, bool):
        raise BadInput(field, f"must be a number, not {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise BadInput(field, f"must be a number, not {str(value)[:40]!r}") from None
    if not math.isfinite(x):
        raise BadInput(field, "must be finite")
    if lo is not None and (x <= lo if lo_open else x < lo):
        raise BadInput(field, f"must be {'>' if lo_open else '>='} {lo:g}")
    if hi is not None and x > hi:
        raise BadInput(field, f"must be at most {hi:g}")
    return x


def text(data: Any, field: str, *, default: str | None = None, limit: int = 200) -> str:
    value = data.get(field) if hasattr(data, "get") else None
    if value is None:
        if default is None:
            raise BadInput(field, "required")
        return default
    if not isinstance(value, str):
        raise BadInput(field, "must be a string")
    if len(value) > limit:
        raise BadInput(field, f"longer than {limit} characters")
    return value.strip()


def flag(data: Any, field: str) -> bool:
    value = data.get(field, False)
    if not isinstance(value, bool):
        raise BadInput(field, "must be true or false")
    return value


def run_id(data: Any, field: str, *, required: bool = False) -> str:
    value = text(data, field, default="" if not required else None, limit=64)
    if required and not value:
        raise BadInput(field, "required")
    if value and not RUN_ID_RE.match(value):
        raise BadInput(field, f"{value!r} is not a run id")
    return value


def names(data: Any, field: str, *, allowed: tuple[str, ...], default: list[str]) -> list[str]:
    """A comma-separated list (query) or a JSON list of names, each one of ``allowed``."""
    value = data.get(field)
    if value is None or value == "" or value == []:
        return list(default)
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise BadInput(field, "must be a list of names")
    out = [i.strip() for i in items if i.strip()]
    for name in out:
        if name not in allowed:
            raise BadInput(field, f"{name[:40]!r} is not a known metric")
    return out or list(default)
