"""Serve ``grpc.aio`` servicers from a background thread, so that tests can call them
with plain synchronous clients (and the CLI's own channels)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from services.runtime.grpc_server import GrpcServer


@contextmanager
def served(register: Callable[[GrpcServer], object]) -> Iterator[str]:
    """``register(server)`` adds servicers (on the server's own loop); yields host:port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server: GrpcServer | None = None

    async def start() -> int:
        nonlocal server
        server = GrpcServer("127.0.0.1:0")  # created on its loop
        register(server)
        return await server.start()

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.stop(0.5), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
