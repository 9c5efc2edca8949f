"""Viewers and operators: reading needs nothing; acting (run control, what-if studies)
needs the operator token as ``Authorization: Bearer <token>``, else 403."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from services.console.config import ConsoleConfig


class Forbidden(PermissionError):
    """The request may not act; the message says why."""


def presented(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def is_operator(request: Request, config: ConsoleConfig) -> bool:
    token = presented(request)
    secret = config.console_token
    if token is None or secret is None:
        return False
    return hmac.compare_digest(token.encode(), secret.get_secret_value().encode())


def require_operator(request: Request, config: ConsoleConfig) -> None:
    if config.console_token is None:
        raise Forbidden("the console is read-only: no operator token is configured")
    if presented(request) is None:
        raise Forbidden("operator token required (Authorization: Bearer <token>)")
    if not is_operator(request, config):
        raise Forbidden("the operator token is wrong")
