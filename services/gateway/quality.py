"""Data quality and alignment to twin ticks.

``offer(reading)`` checks one reading and keeps it or rejects it with a reason; every
rejection is counted per reason, none is used. ``flush(now)`` (once per twin tick) gives
each mapped entity its value for the tick: the last accepted value within the tick, else
the held last value while it is younger than the rule's ``stale_s`` (counted as held);
after that nothing is sent for the entity, so the model's own value takes over (counted
as substituted, once per tick and entity).

Checks, in order (the first that fails names the reason):
  malformed      the adapter could not decode the message
  unreachable    an endpoint did not answer (adapters report it; no point involved)
  timeout        an endpoint answered too slowly
  unknown_point  no rule of the point map names the point (or its host is not placed)
  bad_quality    the source's quality flag says the value is not trustworthy
  non_finite     no value, NaN or infinite
  unit           the unit the source declared does not fit the quantity
  out_of_range   outside the rule's range (after conversion)
  duplicate      the same timestamp and value as the point's last sample (a republish:
                 it keeps the held value alive, but is not a new sample)
  late           older than the point's last accepted sample (out of order)
  stale          older than ``stale_s`` when it arrives
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from services.gateway.pointmap import PointRule, Resolver
from services.gateway.reading import Reading, Scan
from services.gateway.units import Unit

Slot = tuple[str, int]  # (entity, quantity)


_NONE: dict = {}  # the points of a source not seen yet


class Reason(StrEnum):
    MALFORMED = "malformed"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    UNKNOWN_POINT = "unknown_point"
    BAD_QUALITY = "bad_quality"
    NON_FINITE = "non_finite"
    UNIT = "unit"
    OUT_OF_RANGE = "out_of_range"
    DUPLICATE = "duplicate"
    LATE = "late"
    STALE = "stale"


@dataclass(slots=True, eq=False)
class _Rule:
    """What the points of one rule share, worked out once when the map is loaded (not at
    the first sight of each of a site's ~10^5 points)."""

    rule: PointRule
    index: int  # in the map's points
    factor: float  # raw -> quantity unit in the map's unit (no declared unit)
    offset: float
    low: float  # the rule's range (infinite when it has none)
    high: float
    conversions: dict[str | None, Unit | None]  # declared unit -> conversion (None: unfit)

    @classmethod
    def of(cls, resolver: Resolver, index: int) -> _Rule:
        rule = resolver.map.points[index]
        conv = resolver.conversion(index, None)  # the map checked it
        low, high = rule.range if rule.range is not None else (-math.inf, math.inf)
        return cls(rule, index, conv.factor, conv.offset, low, high, {None: conv})


@dataclass(slots=True, eq=False)
class _Point:
    """A mapped point: where it goes, how it converts, and its last accepted sample
    (``heard_s`` < 0 until the first). One dict lookup per reading finds all of it."""

    rule: _Rule
    slot: Slot
    entity: _Entity
    factor: float  # the rule's, here to save a lookup per reading
    offset: float
    low: float
    high: float
    stale_s: float
    lo: float  # the range within the finite floats: lo <= x <= hi means finite and in it
    hi: float
    value: float = 0.0  # in the quantity's unit
    time_s: float = -math.inf  # source time
    heard_s: float = -1.0  # when it (or a duplicate of it) last arrived, gateway clock


@dataclass(slots=True, eq=False)
class _Entity:
    """What feeds one (entity, quantity). ``live``: the points whose samples were fresh
    at the last scan, with their running ``total``; ``oldest_heard`` is at most the
    oldest of their arrival times, so while it is within ``stale_s`` every live sample
    is fresh and a tick costs O(1), not a pass over (for a rack) its 72 GPUs."""

    rule: PointRule
    slot: Slot
    fed: bool = False  # in the aligner's slots (flushed at every tick) once fed
    live: set[_Point] = field(default_factory=set)
    total: float = 0.0
    oldest_heard: float = math.inf
    newest_time: float = -math.inf


class Aligned(NamedTuple):
    """One entity's value for a tick (a named tuple: ~10^4 a tick at a site's size)."""

    source: str
    entity: str
    quantity: int
    value: float
    time_s: float  # the newest source time that went into the value


@dataclass
class Stats:
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    published: int = 0  # entity values sent (fresh + held)
    held: int = 0  # of which no new sample arrived within the tick
    substituted: int = 0  # entity-ticks left to the model (all its points stale)
    ticks: int = 0
    ahead: int = 0  # entity values sent between ticks (``Aligner.ahead``)

    def as_dict(self) -> dict[str, float | dict[str, float]]:
        return {
            "accepted": self.accepted,
            "rejected": {r.value: self.rejected.get(r.value, 0) for r in Reason},
            "published": self.published,
            "held": self.held,
            "substituted": self.substituted,
            "ticks": self.ticks,
            "ahead": self.ahead,
        }


class Aligner:
    def __init__(self, resolver: Resolver, clock: Callable[[], float] = time.time) -> None:
        self.resolver = resolver
        self.clock = clock
        self.stats = Stats()
        self._points: dict[str, dict[str, _Point]] = {}  # source -> point id -> point
        self._slots: dict[Slot, _Entity] = {}  # fed: flushed at every tick
        self._unfed: dict[Slot, _Entity] = {}  # seen, never fed
        self._new: set[_Entity] = set()  # with a new sample since the last flush
        self._ahead: set[_Entity] = set()  # ... since the last flush or ``ahead()``
        self._rules = [_Rule.of(resolver, i) for i in range(len(resolver.map.points))]
        self.known_points = 0  # points seen and mapped so far

    def reject(self, reason: Reason) -> Reason:
        self.stats.rejected[reason.value] += 1
        return reason

    def _point(self, source: str, point_id: str) -> _Point | None:
        """A point the first time it is offered; None when no rule maps it."""
        target = self.resolver.resolve(source, point_id, remember=False)  # kept here
        if target is None:
            return None
        slot = (target.entity, target.quantity)
        entity = self._slots.get(slot) or self._unfed.get(slot)
        rule = self._rules[target.rule]
        if entity is None:
            entity = self._unfed[slot] = _Entity(rule.rule, slot)
        low, high, stale_s = rule.low, rule.high, rule.rule.stale_s
        point = _Point(
            rule, slot, entity, rule.factor, rule.offset, low, high, stale_s,
            max(low, -sys.float_info.max), min(high, sys.float_info.max),
        )  # fmt: skip
        self._points.setdefault(source, {})[point_id] = point
        self.known_points += 1
        return point

    def _conversion(self, p: _Point, unit: str | None) -> Unit | None:
        conversions = p.rule.conversions
        try:
            return conversions[unit]
        except KeyError:
            pass
        try:
            conv: Unit | None = self.resolver.conversion(p.rule.index, unit)
        except ValueError:
            conv = None
        if len(conversions) < 8:  # a source that makes up units must not fill memory
            conversions[unit] = conv
        return conv

    def emit(self, item: Reading | Scan) -> None:
        """What adapters call (``Emit``)."""
        if isinstance(item, Scan):
            self.offer_scan(item)
        else:
            self.offer(item)

    def offer(self, r: Reading) -> Reason | None:
        """Check and keep ``r``; the reason when it is rejected."""
        if r.problem is not None:
            try:
                return self.reject(Reason(r.problem))
            except ValueError:
                return self.reject(Reason.MALFORMED)
        p = self._points.get(r.source, _NONE).get(r.point)
        if p is None and (p := self._point(r.source, r.point)) is None:
            return self.reject(Reason.UNKNOWN_POINT)
        if not r.good:
            return self.reject(Reason.BAD_QUALITY)
        value, time_s = r.value, r.time_s
        if value is None or not math.isfinite(value) or not math.isfinite(time_s):
            return self.reject(Reason.NON_FINITE)
        if r.unit is None:
            value = value * p.factor + p.offset
        elif (conv := self._conversion(p, r.unit)) is None:
            return self.reject(Reason.UNIT)
        else:
            value = value * conv.factor + conv.offset
        return self._accept(p, value, time_s, self.clock())

    def offer_scan(self, scan: Scan) -> int:
        """``offer`` of every reading of ``scan``, without building them; the number
        accepted."""
        source, time_s = scan.source, scan.time_s
        if not math.isfinite(time_s):  # every reading is refused: count each
            return sum(self.offer(Reading(source, k, v, time_s)) is None for k, v in scan.points)
        points, accept, now = self._points.get(source, _NONE), self._accept, self.clock()
        new, ahead = self._new.add, self._ahead.add
        accepted = fast = 0
        for point, value in scan.points:
            p = points.get(point)
            if p is None:
                if (p := self._point(source, point)) is None:
                    self.reject(Reason.UNKNOWN_POINT)
                    continue
                points = self._points[source]
            value = value * p.factor + p.offset
            entity = p.entity
            # ``_accept`` inlined for the common case (~all of a scan): a new, fresh sample
            # in range (so finite) of a point whose last sample is live.
            if (
                p.lo <= value <= p.hi
                and time_s > p.time_s
                and now - time_s <= p.stale_s
                and p in entity.live
            ):
                entity.total += value - p.value
                p.value, p.time_s, p.heard_s = value, time_s, now
                if time_s > entity.newest_time:
                    entity.newest_time = time_s
                new(entity)
                ahead(entity)
                fast += 1
            else:
                accepted += accept(p, value, time_s, now) is None
        self.stats.accepted += fast
        return accepted + fast

    def _accept(self, p: _Point, value: float, time_s: float, now: float) -> Reason | None:
        """The checks after conversion; keep the sample."""
        if not math.isfinite(value):  # a finite raw value can overflow when scaled
            return self.reject(Reason.NON_FINITE)
        if not p.low <= value <= p.high:
            return self.reject(Reason.OUT_OF_RANGE)
        heard = p.heard_s >= 0
        if heard and time_s == p.time_s and value == p.value:
            p.heard_s = now
            self._feed(p, None)  # a held value lives on
            return self.reject(Reason.DUPLICATE)
        if heard and time_s <= p.time_s:
            return self.reject(Reason.LATE)
        if now - time_s > p.stale_s:
            return self.reject(Reason.STALE)
        old = p.value if heard else None
        p.value, p.time_s, p.heard_s = value, time_s, now
        entity = p.entity
        if not entity.fed:
            entity.fed = True
            self._slots[p.slot] = self._unfed.pop(p.slot)
        if old is not None and p in entity.live:  # ``_feed``, inlined: the common case
            entity.total += value - old
            if time_s > entity.newest_time:
                entity.newest_time = time_s
        else:
            self._feed(p, old)
        self._new.add(entity)
        self._ahead.add(entity)
        self.stats.accepted += 1
        return None

    @staticmethod
    def _feed(p: _Point, old: float | None) -> None:
        """``p``'s sample (new, or the same heard again) into its entity; ``old``: the
        value it replaces."""
        entity = p.entity
        if p in entity.live:
            if old is not None:  # a new sample replaces the point's old one in the total
                entity.total += p.value - old
        else:
            entity.live.add(p)
            entity.total += p.value
            if p.heard_s < entity.oldest_heard:
                entity.oldest_heard = p.heard_s
        if p.time_s > entity.newest_time:
            entity.newest_time = p.time_s

    @staticmethod
    def _rescan(entity: _Entity, now: float, stale_s: float) -> None:
        """Drop the points gone stale; recompute the total (which also sheds the
        rounding of the running sum)."""
        live = {p for p in entity.live if now - p.heard_s <= stale_s}
        entity.live = live
        entity.total = math.fsum(p.value for p in live)
        entity.oldest_heard = min((p.heard_s for p in live), default=math.inf)
        entity.newest_time = max((p.time_s for p in live), default=-math.inf)

    def _value(self, entity: _Entity, now: float) -> float | None:
        """The entity's value now; None when all its points are stale."""
        rule = entity.rule
        if entity.live and now - entity.oldest_heard > rule.stale_s:
            self._rescan(entity, now, rule.stale_s)
        if not entity.live:
            return None
        if rule.aggregate == "sum":
            return entity.total * rule.aggregate_scale + rule.aggregate_offset
        return max(entity.live, key=lambda p: p.time_s).value

    def flush(self) -> list[Aligned]:
        """The value of every measured entity for the tick that is starting now."""
        now = self.clock()
        out: list[Aligned] = []
        new, stats = self._new, self.stats
        for (entity_id, quantity), entity in self._slots.items():
            value = self._value(entity, now)
            if value is None:
                stats.substituted += 1
                continue
            out.append(Aligned(entity.rule.source, entity_id, quantity, value, entity.newest_time))
            stats.published += 1
            if entity not in new:
                stats.held += 1
        new.clear()
        self._ahead.clear()
        stats.ticks += 1
        return out

    def ahead(self) -> list[Aligned]:
        """The value of every entity with a new sample since the last ``flush`` or
        ``ahead``: sent between ticks, so that a domain node has it at its next tick
        instead of one tick later (``flush`` sends it again, with the held ones)."""
        now = self.clock()
        out: list[Aligned] = []
        for entity in self._ahead:
            if (value := self._value(entity, now)) is not None:
                (entity_id, quantity), source = entity.slot, entity.rule.source
                out.append(Aligned(source, entity_id, quantity, value, entity.newest_time))
        self._ahead.clear()
        self.stats.ahead += len(out)
        return out
