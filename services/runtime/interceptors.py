"""``grpc.aio`` server interceptors: request ids, the twin instance id, one access-log
line per RPC, and Prometheus metrics per method.

Both wrap the method handler's behaviour rather than the call details, because only the
behaviour sees the servicer context (to send metadata and read the final status code).
The four RPC shapes are wrapped once here, so each interceptor writes just a
``before``/``after`` pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from services.runtime import metrics
from services.runtime.log import request_id_var

log = logging.getLogger("twin.runtime.grpc")

REQUEST_ID_KEY = "x-request-id"
# The twin instance a service belongs to: sent back on every response (health included);
# a caller that names another instance is refused, so two twins on one host never mix.
INSTANCE_KEY = "x-twin-instance"
_MAX_REQUEST_ID = 128
# Kubelet probes and grpcurl listings would drown the access log at INFO.
QUIET_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")

# around(context, method) -> finish(error) : entered before the behaviour, finish after it.
Finish = Callable[[BaseException | None], None]
Around = Callable[[aio.ServicerContext, str], Awaitable[Finish]]


OnError = Callable[[aio.ServicerContext, str, BaseException], Awaitable[None]]


async def _reraise(context: aio.ServicerContext, method: str, error: BaseException) -> None:
    raise error


def _replaced(
    handler: grpc.RpcMethodHandler, field: str, behaviour: Callable
) -> grpc.RpcMethodHandler:
    """``handler`` with its ``field`` behaviour replaced. grpc builds method handlers as
    namedtuples (``grpc.unary_unary_rpc_method_handler`` and friends); its stubs declare an
    abstract class without ``_replace``."""
    return handler._replace(**{field: behaviour})  # pyright: ignore[reportAttributeAccessIssue]


def _wrap(
    handler: grpc.RpcMethodHandler, method: str, around: Around, on_error: OnError = _reraise
) -> grpc.RpcMethodHandler:
    """The same handler with ``around`` run around its behaviour, whatever its shape;
    ``on_error`` sees what the behaviour raised (and raises it, or another)."""
    if handler.unary_unary or handler.stream_unary:
        field = "unary_unary" if handler.unary_unary else "stream_unary"
        inner = getattr(handler, field)

        async def unary_response(request: Any, context: aio.ServicerContext) -> Any:
            finish = await around(context, method)
            try:
                try:
                    response = await inner(request, context)
                except BaseException as exc:
                    await on_error(context, method, exc)
                    raise
            except BaseException as exc:
                finish(exc)
                raise
            finish(None)
            return response

        return _replaced(handler, field, unary_response)

    field = "unary_stream" if handler.unary_stream else "stream_stream"
    inner = getattr(handler, field)
    if inspect.isasyncgenfunction(inner):
        # A generator behaviour must stay a generator: grpc iterates it for the responses.
        async def stream_response(request: Any, context: aio.ServicerContext) -> AsyncIterator:
            finish = await around(context, method)
            try:
                try:
                    async for response in inner(request, context):
                        yield response
                except BaseException as exc:
                    await on_error(context, method, exc)
                    raise
            except BaseException as exc:
                finish(exc)
                raise
            finish(None)

        return _replaced(handler, field, stream_response)

    # A coroutine behaviour that answers with context.write(): stays a coroutine.
    async def write_response(request: Any, context: aio.ServicerContext) -> None:
        finish = await around(context, method)
        try:
            try:
                await inner(request, context)
            except BaseException as exc:
                await on_error(context, method, exc)
                raise
        except BaseException as exc:
            finish(exc)
            raise
        finish(None)

    return _replaced(handler, field, write_response)


class _WrappingInterceptor(aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED itself
            return handler
        return _wrap(handler, handler_call_details.method, self.around, self.on_error)

    async def around(self, context: aio.ServicerContext, method: str) -> Finish:
        return lambda error: None

    async def on_error(
        self, context: aio.ServicerContext, method: str, error: BaseException
    ) -> None:
        raise error


def _valid_request_id(value: str | bytes | None) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if value and len(value) <= _MAX_REQUEST_ID and value.isascii() and value.isprintable():
        return value
    return None


class RequestIdInterceptor(_WrappingInterceptor):
    """Take ``x-request-id`` from the caller (or make one), expose it to the servicer and
    to every log line through ``request_id_var``, and send it back in the initial
    metadata, which the client receives whatever the final status.

    Servicers must not send initial metadata themselves (it can be sent only once).
    With ``instance_id`` the twin instance id goes into the same initial metadata.
    """

    def __init__(self, instance_id: str | None = None) -> None:
        self.instance_id = instance_id

    async def around(self, context: aio.ServicerContext, method: str) -> Finish:
        metadata = dict(context.invocation_metadata() or ())
        request_id = _valid_request_id(metadata.get(REQUEST_ID_KEY)) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        initial = [(REQUEST_ID_KEY, request_id)]
        if self.instance_id is not None:
            initial.append((INSTANCE_KEY, self.instance_id))
        await context.send_initial_metadata(tuple(initial))

        def finish(error: BaseException | None) -> None:
            # Each RPC runs in its own task (own context copy); resetting is tidiness, and
            # a generator finalised from another context must not fail the call.
            with contextlib.suppress(ValueError):
                request_id_var.reset(token)

        return finish


def status_of(context: aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status the client will see: set by abort()/set_code(), else from the outcome."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class LoggingInterceptor(_WrappingInterceptor):
    """One line per RPC: method, status code, duration (and the request id, via the log
    formatter). Health and reflection calls log at DEBUG; failures with a traceback."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger

    async def around(self, context: aio.ServicerContext, method: str) -> Finish:
        start = time.perf_counter()
        quiet = method.lstrip("/").split("/")[0] in QUIET_SERVICES

        def finish(error: BaseException | None) -> None:
            code = status_of(context, error)
            fields = {
                "method": method,
                "code": code.name,
                "duration_ms": round((time.perf_counter() - start) * 1e3, 3),
            }
            unexpected = error is not None and code is grpc.StatusCode.UNKNOWN
            if unexpected:
                self.logger.error("rpc failed", extra=fields, exc_info=error)
            else:
                self.logger.log(logging.DEBUG if quiet else logging.INFO, "rpc", extra=fields)

        return finish


def rpc_type(handler: grpc.RpcMethodHandler) -> str:
    """The RPC's shape, as grpc-prometheus names it (``grpc_type``)."""
    if handler.unary_unary:
        return "unary"
    if handler.unary_stream:
        return "server_stream"
    return "client_stream" if handler.stream_unary else "bidi_stream"


class MetricsInterceptor(_WrappingInterceptor):
    """Prometheus, per method: RPCs started, RPCs handled by final status code, and the
    latency to that status (the grpc_server_* families of services/runtime/metrics.py)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        service, _, name = method.lstrip("/").rpartition("/")
        labels = (service, name, rpc_type(handler))

        async def around(context: aio.ServicerContext, method: str) -> Finish:
            start = time.perf_counter()
            metrics.grpc_started.labels(*labels).inc()

            def finish(error: BaseException | None) -> None:
                code = status_of(context, error)
                metrics.grpc_handled.labels(*labels, code.name).inc()
                metrics.grpc_seconds.labels(*labels).observe(time.perf_counter() - start)

            return finish

        return _wrap(handler, method, around, self.on_error)


class InstanceInterceptor(_WrappingInterceptor):
    """Refuse (FAILED_PRECONDITION, naming both ids) a call whose ``x-twin-instance``
    names another twin instance than this one; calls that name none pass."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

    async def around(self, context: aio.ServicerContext, method: str) -> Finish:
        metadata = dict(context.invocation_metadata() or ())
        named = metadata.get(INSTANCE_KEY)
        if isinstance(named, bytes):
            named = named.decode("ascii", "replace")
        if named is not None and named != self.instance_id:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"wrong twin: this is instance {self.instance_id}, the call is for instance "
                f"{named[:64]!r}",
            )
        return lambda error: None


INTERNAL_MESSAGE = "internal error (logged on the server with the request id)"


class InternalErrorInterceptor(_WrappingInterceptor):
    """An exception a servicer did not turn into a status becomes INTERNAL with a fixed
    message: its text (file contents, paths, SQL) is logged, never sent to the client,
    and a bug is never the client's UNKNOWN."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger

    async def on_error(
        self, context: aio.ServicerContext, method: str, error: BaseException
    ) -> None:
        expected = isinstance(error, aio.AbortError | asyncio.CancelledError | GeneratorExit)
        set_already = isinstance(context.code(), grpc.StatusCode)
        if expected or not isinstance(error, Exception) or set_already:
            raise error
        self.logger.error("rpc raised", extra={"method": method}, exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def default_interceptors(instance_id: str | None = None) -> list[aio.ServerInterceptor]:
    """Request ids outermost, so the access-log line carries the id; metrics beside the
    access log (the same status); then the instance check, so refused calls are logged and
    counted too; unexpected errors become INTERNAL innermost, so
    the access log shows the status the client saw."""
    chain: list[aio.ServerInterceptor] = [
        RequestIdInterceptor(instance_id),
        LoggingInterceptor(),
        MetricsInterceptor(),
    ]
    if instance_id is not None:
        chain.append(InstanceInterceptor(instance_id))
    chain.append(InternalErrorInterceptor())
    return chain
