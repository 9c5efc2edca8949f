"""How deviations travel on ``twin.<site>.events`` and are stored in ``events``: shared by
the monitor (publisher) and the historian (reader), which must not confuse them with the
clock's START and STOP (Clock messages, published there without a type header)."""

from __future__ import annotations

from twin.twin.v1 import deviation_pb2

TYPE_HEADER = "Twin-Message"  # names the protobuf type of a message on the events subject
DEVIATION_TYPE = deviation_pb2.Deviation.DESCRIPTOR.full_name  # twin.twin.v1.Deviation
KINDS = {
    deviation_pb2.DEVIATION_STATUS_RAISED: "deviation.raised",
    deviation_pb2.DEVIATION_STATUS_CLEARED: "deviation.cleared",
}


def deviation_headers(event: deviation_pb2.Deviation) -> dict[str, str]:
    """The headers of a published deviation; JetStream drops a second message with the
    same ``Nats-Msg-Id`` within its duplicate window."""
    return {TYPE_HEADER: DEVIATION_TYPE, "Nats-Msg-Id": event.event_id}


def is_deviation(headers: dict[str, str] | None) -> bool:
    return bool(headers) and headers.get(TYPE_HEADER) == DEVIATION_TYPE  # type: ignore[union-attr]
