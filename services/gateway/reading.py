"""What every adapter produces: a normalised reading of one external point.

Adapters (MQTT/BMS, DCGM, Redfish, Modbus, BACnet) only translate their protocol into
``Reading``s and hand them to ``emit``; mapping to twin entities, unit conversion and
quality checks happen once, downstream (services/gateway/quality.py), so a new adapter
adds a protocol and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable


class Reading(NamedTuple):
    """One value of one external point, as the source reported it (a named tuple: a
    gateway makes ~10^5 a second, and a tuple is built several times faster than a
    frozen dataclass).

    ``point``: the external point id, unique within its source (an MQTT topic, a
    ``metric/host/gpu`` path, a Redfish sensor URI, a Modbus ``unit/register``).
    ``time_s``: the source's timestamp (s since the Unix epoch, UTC), or the time of the
    scan when the protocol has none. ``good``: the source's own quality flag.
    ``unit``: the unit the source declared (e.g. BMS metadata ``engUnit``), which then
    wins over the point map's; None when the source says nothing.
    ``problem``: set by an adapter that could not decode the message (``malformed``);
    such a reading is only counted, never used.
    """

    source: str
    point: str
    value: float | None
    time_s: float
    good: bool = True
    unit: str | None = None
    problem: str | None = None


class Scan(NamedTuple):
    """Many readings of one source taken at one time, all good and in the point map's
    units (the source declares none): one scrape of a DCGM exporter. The same as a
    Reading per ``(point, value)`` pair, without building them."""

    source: str
    time_s: float
    points: list[tuple[str, float]]


Emit = Callable[[Reading | Scan], object]  # what it returns, if anything, is ignored


@runtime_checkable
class Adapter(Protocol):
    """A field protocol. ``run`` reads until cancelled and never returns on bad input:
    a dead or slow endpoint is retried with backoff, a bad message becomes a Reading with
    ``problem`` set. ``emit`` is synchronous and cheap (it only queues); it takes a
    Reading, or a Scan of many."""

    name: str  # the source name of the point map (also the bus subject's last token)

    async def run(self, emit: Emit) -> None: ...
