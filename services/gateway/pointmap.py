"""The point map: which external point is which twin entity and quantity, and how to
convert it. YAML, validated by pydantic; every error names the file, line and field.

    sources:
      bms: {kind: bms, transport: nats}            # nats-server's MQTT listener
      gpus: {kind: dcgm, urls: ["http://node-a:9400/metrics"], interval_s: 15}
    hosts:                                         # host -> fields for entity templates
      node-a: {slot: 0, cdu: 0}
    points:
      - source: bms
        match: 'BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu(?P<cdu>\\d+)/supply'
        entity: 'cdu/{cdu}'
        quantity: supply_temperature_c
        unit: degC
        range: [5, 60]
        stale_s: 300
      - source: gpus
        match: 'DCGM_FI_DEV_POWER_USAGE/(?P<host>[^/]+)/(?P<gpu>\\d+)'
        entity: 'rack/{slot}/{cdu}'                # slot, cdu from the host table
        quantity: rack_power_w
        aggregate: sum                             # rack = sum of its GPUs ...
        aggregate_scale: 1.25                      # ... x (1 + non-GPU share) ...
        aggregate_offset: 3000                     # ... + fixed W (switches, fans)
        stale_s: 45

A point is named exactly (``point``) or by a regular expression (``match``, full match,
named groups feed the ``entity`` template); when a group is called ``host``, the host
table's fields of that host are template fields too. Conversion: ``raw * scale + offset``
in ``unit`` (or the unit the source declares), then to the quantity's unit; ``range`` is
in the quantity's unit.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.gateway.units import Unit, converter, quantity_unit
from twin.telemetry.v1 import telemetry_pb2

BMS_REPUBLISH_S = 100.0  # BMS Event Bus: unchanged values are republished every 100 s
# Quantity names of the point map: the proto enum names, lower case, without QUANTITY_.
QUANTITIES: dict[str, int] = {
    name.removeprefix("QUANTITY_").lower(): number
    for name, number in telemetry_pb2.Quantity.items()
    if number != telemetry_pb2.QUANTITY_UNSPECIFIED
}
QuantityName = Literal[tuple(QUANTITIES)]  # type: ignore[valid-type]


class PointMapError(ValueError):
    """A map that cannot be used; ``str()`` is one line: ``FILE:LINE: field: problem``."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------ sources


class BmsSource(Strict):
    """BMS Event Bus points over MQTT. ``transport: nats``: subscribe to the twin's own
    bus, where nats-server's MQTT listener puts what BMS clients publish (topic a/b/c is
    subject a.b.c); ``mqtt``: an external MQTT 3.1.1 broker."""

    kind: Literal["bms"]
    transport: Literal["nats", "mqtt"] = "nats"
    prefix: str = "BMS/v1/PUB"
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    tls: bool = False
    ca_file: str | None = None
    username: str | None = None
    password_env: str | None = None  # the variable holding the password (never the map)
    client_id: str = ""


class DcgmSource(Strict):
    """NVIDIA DCGM exporter endpoints (Prometheus text), scraped every ``interval_s``."""

    kind: Literal["dcgm"]
    urls: list[str] = Field(min_length=1)
    interval_s: float = Field(default=15.0, gt=0)
    timeout_s: float = Field(default=2.0, gt=0)
    max_backoff_s: float = Field(default=60.0, gt=0)
    # Scrapes under way (requested, or fetched and not yet read), at most: a page is
    # fetched only when it will be read soon, so its values are not minutes old by then.
    max_in_flight: int = Field(default=16, ge=1)


class ModbusRegister(Strict):
    """One value in a Modbus device: ``point`` is its id in the point map."""

    point: str
    device_id: int = Field(default=1, ge=0, le=255)
    table: Literal["holding", "input"] = "holding"
    address: int = Field(ge=0, le=65535)
    type: Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
    word_order: Literal["big", "little"] = "big"  # of multi-register values


class ModbusSource(Strict):
    """A Modbus TCP device (meter, UPS, switchgear), polled every ``interval_s``."""

    kind: Literal["modbus"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    interval_s: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=1.0, gt=0)
    max_backoff_s: float = Field(default=60.0, gt=0)
    registers: list[ModbusRegister] = Field(min_length=1)


class RedfishSource(Strict):
    """A Redfish service (BMC, rack manager, PDU), polled every ``interval_s``: each
    chassis's ``Sensors``, ``PowerSubsystem`` and older ``Power`` resources. ``auth``:
    HTTP basic on every request, or a Redfish session (``X-Auth-Token``, logged out at
    stop). ``chassis``: the ids to read; default, every member of /redfish/v1/Chassis."""

    kind: Literal["redfish"]
    url: str = Field(pattern=r"^https?://[^/]+/?$")  # the service root's host, no path
    auth: Literal["basic", "session"] = "session"
    username: str = Field(min_length=1)
    password_env: str | None = None  # the variable holding the password (never the map)
    chassis: list[str] | None = None
    interval_s: float = Field(default=10.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)  # per request
    max_backoff_s: float = Field(default=60.0, gt=0)
    verify_tls: bool = True  # BMCs often ship self-signed certificates: prefer ca_file
    ca_file: str | None = None


Source = Annotated[
    BmsSource | DcgmSource | ModbusSource | RedfishSource, Field(discriminator="kind")
]
SOURCE_KINDS = ("bms", "dcgm", "modbus", "redfish")


# ------------------------------------------------------------------------------- points


def _template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class PointRule(Strict):
    source: str
    point: str | None = None  # an exact external point id
    match: str | None = None  # or a regular expression (full match, named groups)
    entity: str  # a twin entity, or a template of the groups / host fields
    quantity: QuantityName  # type: ignore[valid-type]
    unit: str | None = None  # default: the quantity's unit
    scale: float = 1.0
    offset: float = 0.0
    range: tuple[float, float] | None = None  # accepted values, in the quantity's unit
    stale_s: float = Field(gt=0)  # hold the last value this long, then the model's
    aggregate: Literal["last", "sum"] = "last"  # several points -> one entity
    aggregate_scale: float = 1.0
    aggregate_offset: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> PointRule:
        if (self.point is None) == (self.match is None):
            raise ValueError("give exactly one of point (an id) or match (a pattern)")
        if self.match is not None:
            try:
                re.compile(self.match)
            except re.error as exc:
                raise ValueError(f"match: not a regular expression ({exc})") from None
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"range: low {self.range[0]:g} must be below high {self.range[1]:g}")
        try:
            converter(self.source_unit, self.quantity)
        except ValueError as exc:
            raise ValueError(f"unit: {exc}") from None
        return self

    @property
    def source_unit(self) -> str:
        return self.unit or quantity_unit(self.quantity)

    @cached_property
    def pattern(self) -> re.Pattern[str] | None:
        return re.compile(self.match) if self.match is not None else None


class PointMap(Strict):
    site: str | None = None
    sources: dict[str, Source] = Field(min_length=1)
    hosts: dict[str, dict[str, str | int]] = {}
    points: list[PointRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> PointMap:
        for name in self.sources:  # the last token of telemetry.<site>.<source>
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ValueError(f"sources.{name}: a source name is letters, digits, '-', '_'")
        for i, rule in enumerate(self.points):
            where = f"points.{i}"
            if rule.source not in self.sources:
                raise ValueError(f"{where}.source: {rule.source!r} is not one of the sources")
            kind = self.sources[rule.source].kind
            if kind == "bms" and rule.stale_s <= BMS_REPUBLISH_S:
                raise ValueError(
                    f"{where}.stale_s: {rule.stale_s:g} s must exceed the BMS republish "
                    f"period of {BMS_REPUBLISH_S:g} s"
                )
            groups = set(rule.pattern.groupindex) if rule.pattern else set()
            if "host" in groups:
                groups |= {k for fields in self.hosts.values() for k in fields}
            if missing := _template_fields(rule.entity) - groups:
                raise ValueError(
                    f"{where}.entity: {', '.join(sorted(missing))} is neither a named group "
                    "of match nor a host table field"
                )
        return self

    @cached_property
    def exact(self) -> dict[tuple[str, str], int]:
        return {(r.source, r.point): i for i, r in enumerate(self.points) if r.point is not None}


# ---------------------------------------------------------------------------- resolving


@dataclass(frozen=True, slots=True)
class Target:
    """Where one external point goes."""

    rule: int  # index into PointMap.points
    entity: str
    quantity: int  # telemetry_pb2.Quantity


class Resolver:
    """External point -> Target, cached (a Fairwater map has ~10^5-10^6 points; each is
    matched against the patterns once)."""

    def __init__(
        self, pointmap: PointMap, cache_size: int = 2_000_000, unknown_cache_size: int = 100_000
    ) -> None:
        self.map = pointmap
        self._cache: dict[tuple[str, str], Target | None] = {}
        self._cache_size = cache_size
        self._unknown = 0  # cached misses: a flood of made-up ids must not fill memory
        self._unknown_size = unknown_cache_size
        # Per source, its pattern rules with the groups their entity template uses: a
        # point's Target is then shared by every point with the same such groups and
        # host (a host's GPUs all go to its rack), built once.
        self._patterns: dict[str, list[tuple[int, PointRule, re.Pattern[str], tuple]]] = {}
        for i, r in enumerate(pointmap.points):
            if (pattern := r.pattern) is not None:
                used = tuple(sorted(_template_fields(r.entity) & set(pattern.groupindex)))
                self._patterns.setdefault(r.source, []).append((i, r, pattern, used))
        self._targets: dict[tuple, Target] = {}

    def resolve(self, source: str, point: str, *, remember: bool = True) -> Target | None:
        """``remember=False``: for a caller that keeps what it resolved itself; only the
        misses are cached then (a flood of unknown ids is answered from the cache)."""
        key = (source, point)
        try:
            return self._cache[key]
        except KeyError:
            pass
        target = self._resolve(source, point)
        if target is None:
            if self._unknown >= self._unknown_size:
                return None
            self._unknown += 1
        elif not remember:
            return target
        if len(self._cache) < self._cache_size:
            self._cache[key] = target
        return target

    def _resolve(self, source: str, point: str) -> Target | None:
        if (i := self.map.exact.get((source, point))) is not None:
            rule = self.map.points[i]
            return Target(i, rule.entity, QUANTITIES[rule.quantity])
        for i, rule, pattern, used in self._patterns.get(source, ()):
            if (m := pattern.fullmatch(point)) is None:
                continue
            groups = m.groupdict()
            if (host := groups.get("host")) is not None and host not in self.map.hosts:
                continue  # a host the table does not place: not mapped
            key = (i, host, *(groups[g] for g in used))
            if (target := self._targets.get(key)) is None:
                fields: dict[str, Any] = dict(groups)
                if host is not None:
                    fields.update(self.map.hosts[host])
                entity = rule.entity.format(**fields)
                target = Target(i, entity, QUANTITIES[rule.quantity])
                if len(self._targets) < self._cache_size:
                    self._targets[key] = target
            return target
        return None

    def conversion(self, rule: int, unit: str | None) -> Unit:
        """raw -> quantity unit for ``rule``, from ``unit`` (declared by the source) or
        the rule's; ValueError when that unit does not fit the quantity."""
        r = self.map.points[rule]
        u = converter(unit or r.source_unit, r.quantity)
        return Unit(u.dimension, u.factor * r.scale, u.factor * r.offset + u.offset)


# ------------------------------------------------------------------------------ loading


def _lines(node: yaml.Node, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """The 1-based line of every mapping key and sequence item, by its path."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            lines.update(_lines(value, sub))
            lines[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_lines(item, (*path, str(i))))
    return lines


def _error_line(err: ValidationError, lines: dict[tuple[str, ...], int], name: str) -> str:
    first = err.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    # A model-level check names its field in the message ("points.3.stale_s: ...").
    if m := re.match(r"([A-Za-z_]+(?:\.[A-Za-z0-9_]+)*): (.*)", message):
        inner = tuple(m.group(1).split("."))
        if (*loc, *inner) in lines or inner in lines:
            loc = (*loc, *inner) if (*loc, *inner) in lines else inner
            message = m.group(2)
    # Pydantic adds the union member's tag ("sources.gpus.dcgm.urls"): not in the file.
    if len(loc) >= 3 and loc[0] == "sources" and loc[2] in SOURCE_KINDS:
        loc = (*loc[:2], *loc[3:])
    known = loc
    while known and known not in lines:  # a missing field: the line of its parent
        known = known[:-1]
    line = lines.get(known, 1)
    field = ".".join(loc)
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{name}:{line}: {field}: {message}{more}"


# libyaml when the wheel has it: a site's map (a host table of ~50,000 hosts) loads in
# seconds, not minutes.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_pointmap(text: str, name: str = "<point map>") -> PointMap:
    try:
        doc = yaml.load(text, Loader=_Loader)  # a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise PointMapError(
            f"{name}:{line}: invalid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    if not isinstance(doc, dict):
        raise PointMapError(f"{name}:1: the top level must be a mapping")
    try:
        return PointMap.model_validate(doc)
    except ValidationError as err:
        # The lines only now: composing a large map node by node takes a while.
        node = yaml.compose(text, Loader=_Loader)
        assert node is not None  # the text held a mapping
        raise PointMapError(_error_line(err, _lines(node), name)) from None


def load_pointmap(path: str | Path) -> PointMap:
    path = Path(path)
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise PointMapError(
            f"{path}: cannot read the point map ({exc.__class__.__name__})"
        ) from None
    return parse_pointmap(text, str(path))
