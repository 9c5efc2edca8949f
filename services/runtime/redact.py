"""Credentials out of log lines and error messages.

A NATS or PostgreSQL URL may carry a user and password (``nats://svc:secret@host:4222``),
a token (``nats://token@host``), and a libpq conninfo a ``password=...``; any of them can
reach a log line through a URL we log, an exception text from a library or a traceback.
``redact`` replaces the secret part with ``***`` and keeps the rest (scheme, user, host),
which is what an operator needs to see which server was meant.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://userinfo@ ; userinfo is user:password, or a lone token/user.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^\s/@]+)@")
_CONNINFO_PASSWORD = re.compile(r"(?i)\b(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)")


def _userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["info"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


def redact(text: str) -> str:
    """``text`` with the secrets of every URL userinfo and conninfo password masked."""
    text = _USERINFO.sub(_userinfo, text)
    return _CONNINFO_PASSWORD.sub(lambda m: m[1] + MASK, text)
