"""Limits on text that arrives from outside: YAML size and nesting, echoed values.

YAML is scanned as events first (PyYAML's parser is iterative, its composer recursive),
so a document nested 50,000 levels deep is refused in one line instead of overflowing
the stack; values echoed into error messages are clipped so a 1 MB id is never sent back.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_YAML_DEPTH = 64
MAX_YAML_ALIASES = 1000
ECHO_CHARS = 80


def clip(value: Any, limit: int = ECHO_CHARS) -> str:
    """``value`` as text of at most ``limit`` characters (an ellipsis marks the cut)."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_yaml(text: str, field: str, error: type[ValueError] = ValueError) -> Any:
    """``yaml.safe_load(text)`` within the size, depth and alias limits; every problem is
    ``error("<field>: ...")`` in one line."""
    if len(text) > MAX_YAML_BYTES:
        raise error(f"{field}: {len(text)} characters, at most {MAX_YAML_BYTES}")
    depth = aliases = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise error(f"{field}: nested deeper than {MAX_YAML_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_YAML_ALIASES:
                    raise error(f"{field}: more than {MAX_YAML_ALIASES} aliases")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = clip(getattr(exc, "problem", None) or exc)
        raise error(f"{field}: invalid YAML{where} ({problem})") from None
    except (RecursionError, MemoryError):  # past the checks above only by a parser bug
        raise error(f"{field}: document too complex") from None
