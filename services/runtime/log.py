"""One-line, logfmt-ish logging for every service.

One record is one line (``ts level logger msg key=value ...``) so that ``kubectl logs``,
Loki and grep see whole records; tracebacks are folded into an ``exc=`` field. The request
id of the gRPC call being served (a context variable set by the interceptor) is added to
every record logged while serving it, so a request can be followed across log lines.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any, TextIO

from services.runtime.redact import redact

# Set by the request-id interceptor for the duration of an RPC.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "twin_request_id", default=None
)

# Attributes every LogRecord has; anything else came from ``extra=`` and is printed.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_HANDLER_MARK = "_twin_runtime_handler"


def _value(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


class OneLineFormatter(logging.Formatter):
    """``2025-07-01T12:00:00.123Z INFO twin.runtime.grpc msg key=value ...``"""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        request_id = request_id_var.get()
        if request_id is not None:
            fields.setdefault("request_id", request_id)
        message = record.getMessage().replace("\n", "\\n")
        parts = [self.formatTime(record), record.levelname, record.name, message]
        parts += [f"{key}={_value(value)}" for key, value in fields.items()]
        if record.exc_info:
            parts.append(f"exc={_value(self.formatException(record.exc_info))}")
        # The last line of defence: a URL with a password in a library's error text.
        return redact(" ".join(parts))


def setup_logging(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Install the one-line handler on the root logger at ``level`` (idempotent: a second
    call replaces the handler it installed, other handlers are left alone)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(OneLineFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter at INFO (grpc's cython layer, asyncio, JAX's probe of platforms it
    # does not find: "Unable to initialize backend 'tpu'") is noise for operators.
    for noisy in ("asyncio", "grpc._cython.cygrpc", "jax._src.xla_bridge"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler
