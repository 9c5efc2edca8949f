"""Protobuf payloads on the bus: encode, and decode without letting one bad message
take a service down.

A node that crashed on a garbled message would be restarted into the same message
(JetStream redelivers it), so ``decode`` logs the subject, counts the failure and
returns None; the caller skips the message (and ``term()``s it when it came from a
durable consumer, so it is not redelivered forever).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Protocol, TypeVar

from google.protobuf.message import DecodeError as _ProtobufDecodeError
from google.protobuf.message import Message

from services.runtime import metrics

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


class BusMessage(Protocol):
    """What ``decode_msg`` needs from a nats-py ``Msg``."""

    subject: str
    data: bytes


class PayloadError(ValueError):
    """A payload that does not parse as the expected message type."""

    def __init__(self, subject: str, type_name: str, reason: str) -> None:
        super().__init__(f"{subject}: not a valid {type_name}: {reason}")
        self.subject = subject
        self.type_name = type_name
        self.reason = reason


class DecodeStats:
    """Counts of payloads rejected, by message type or reason (thread safe): payloads that
    do not decode (``twin.power.v1.PowerState``) and decoded ones refused by a check
    (``Clock.start_invalid``, ``Measurement.value_not_finite`` ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def record(self, type_name: str) -> None:
        with self._lock:
            self._counts[type_name] += 1

    def count(self, type_name: str | None = None) -> int:
        with self._lock:
            return self._counts[type_name] if type_name else sum(self._counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def reject(
    stats: DecodeStats | None, reason: str, subject: str, detail: str, **extra: object
) -> None:
    """Count a decoded message refused by a check, and log one line saying why."""
    (stats or decode_errors).record(reason)
    metrics.bus_rejected.labels(reason).inc()
    log.warning(
        "rejected bus message",
        extra={"subject": subject, "reason": reason, "detail": detail, **extra},
    )


# One per process, for rejections no component counts itself (Prometheus counts them all:
# twin_bus_messages_garbled_total, twin_bus_messages_rejected_total).
decode_errors = DecodeStats()


def encode(message: Message) -> bytes:
    """Serialize deterministically, so equal messages give equal bytes (dedup, tests)."""
    return message.SerializeToString(deterministic=True)


def decode_or_raise(message_type: type[M], data: bytes, *, subject: str = "?") -> M:
    """Parse ``data`` as ``message_type``; raise PayloadError if it does not parse."""
    message = message_type()
    try:
        message.ParseFromString(data)
    except (_ProtobufDecodeError, ValueError, TypeError) as exc:
        raise PayloadError(subject, message_type.DESCRIPTOR.full_name, str(exc)) from exc
    return message


def decode(
    message_type: type[M],
    data: bytes,
    *,
    subject: str = "?",
    stats: DecodeStats | None = None,
) -> M | None:
    """Parse ``data``, or log a warning with the subject, count it and return None."""
    try:
        return decode_or_raise(message_type, data, subject=subject)
    except PayloadError as exc:
        (stats or decode_errors).record(exc.type_name)
        metrics.bus_garbled.labels(exc.type_name).inc()
        log.warning(
            "skipping undecodable payload",
            extra={
                "subject": subject,
                "type": exc.type_name,
                "size": len(data),
                "reason": exc.reason,
            },
        )
        return None


def decode_msg(
    message_type: type[M], msg: BusMessage, *, stats: DecodeStats | None = None
) -> M | None:
    """``decode`` for a nats-py message (subject taken from the message)."""
    return decode(message_type, msg.data, subject=msg.subject, stats=stats)
