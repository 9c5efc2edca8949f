"""A threaded HTTP server for the gateway's fake field devices that stays quiet when a
client hangs up mid-response (the gateway's timeouts do that on purpose). The standard
``handle_error`` prints a traceback to ``sys.stderr``, which, from a daemon thread that
outlives its test, lands in whatever a later test is capturing."""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any


class QuietThreadingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client timed out and closed: expected, not a server fault
        super().handle_error(request, client_address)
