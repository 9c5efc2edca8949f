"""``twin gateway check``: a point map against a site.

- unknown entities: what the map would send that the site does not have (the twin would
  drop it: an error);
- unmapped entities: what the twin can take measurements for but the map never feeds
  (the model's value is used there: a warning);
- unknown points (with a list of the points a site exposes): ids no rule maps.

A rule's entity is known exactly when it names no group, or when its groups all come
from the host table; a pattern's other groups are only known from real point ids, so
without a point list such a rule is checked by shape (its entity template against the
site's entities).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from services.gateway.pointmap import PointMap, Resolver
from twin_core.site import Site

# What the twin assimilates today (services/node.py MEASURED): quantity -> entity kind.
ASSIMILATED = {"rack_power_w": "rack", "supply_temperature_c": "cdu"}


def site_entities(site: Site) -> dict[str, set[str]]:
    """quantity name -> the site's entities the twin takes that quantity for."""
    racks: set[str] = set()
    row = 0
    for hall in site.halls:
        for cdu in range(row, row + hall.cdus):
            racks.update(f"rack/{slot}/{cdu}" for slot in range(hall.racks_per_cdu))
        row += hall.cdus
    cdus = {f"cdu/{i}" for i in range(site.cdu_count)}
    return {"rack_power_w": racks, "supply_temperature_c": cdus}


@dataclass
class Report:
    unknown_entities: list[str] = field(default_factory=list)  # "rule N: entity (quantity)"
    unmapped_entities: dict[str, list[str]] = field(default_factory=dict)  # quantity -> ids
    unknown_points: list[str] = field(default_factory=list)
    not_assimilated: list[str] = field(default_factory=list)  # rules for other quantities

    @property
    def ok(self) -> bool:
        return not self.unknown_entities and not self.unknown_points


def _template_regex(template: str) -> re.Pattern[str]:
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name:
            parts.append("[^/]+")
    return re.compile("".join(parts))


def _entities_of_rule(pm: PointMap, index: int, wanted: set[str]) -> set[str] | None:
    """The entities rule ``index`` can produce, when knowable from the map alone."""
    rule = pm.points[index]
    names = {n for _, n, _, _ in string.Formatter().parse(rule.entity) if n}
    if not names:
        return {rule.entity}
    host_fields = {k for fields in pm.hosts.values() for k in fields}
    if rule.pattern is not None and "host" in rule.pattern.groupindex and names <= host_fields:
        return {rule.entity.format(**f) for f in pm.hosts.values() if names <= set(f)}
    shape = _template_regex(rule.entity)
    return {e for e in wanted if shape.fullmatch(e)}  # by shape: only what fits the site


def configured_points(pm: PointMap) -> list[tuple[str, str]]:
    """Points the map's own sources name (Modbus registers): known without a list."""
    return [
        (name, register.point)
        for name, source in pm.sources.items()
        if source.kind == "modbus"
        for register in source.registers
    ]


def check(pm: PointMap, site: Site, points: list[tuple[str, str]] | None = None) -> Report:
    """``points``: (source, point id) a site exposes, if known (the map's Modbus
    registers are always checked)."""
    if configured := configured_points(pm):
        points = [*(points or []), *configured]
    entities = site_entities(site)
    report = Report()
    covered: dict[str, set[str]] = {q: set() for q in entities}
    for i, rule in enumerate(pm.points):
        if rule.quantity not in ASSIMILATED:
            report.not_assimilated.append(f"points.{i}: {rule.quantity}")
            continue
        made = _entities_of_rule(pm, i, entities[rule.quantity]) or set()
        for entity in sorted(made - entities[rule.quantity]):
            report.unknown_entities.append(f"points.{i}: {entity} ({rule.quantity})")
        covered[rule.quantity] |= made
    if points is not None:
        resolver = Resolver(pm)
        for source, point in points:
            target = resolver.resolve(source, point)
            if target is None:
                report.unknown_points.append(f"{source}: {point}")
                continue
            quantity = pm.points[target.rule].quantity
            if quantity in entities and target.entity not in entities[quantity]:
                report.unknown_entities.append(
                    f"points.{target.rule}: {target.entity} ({quantity}) from {point}"
                )
    for quantity, wanted in entities.items():
        if missing := sorted(wanted - covered[quantity], key=_natural):
            report.unmapped_entities[quantity] = missing
    report.unknown_entities = sorted(set(report.unknown_entities), key=_natural)
    return report


def _natural(text: str) -> list[int | str]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
