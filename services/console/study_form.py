"""The what-if page's form as a ``StudySpec``.

Variants are lines ``name: path=value; path=value`` and grid axes lines
``path = v1, v2, v3`` or ``path = lo:hi:count``, as ``twin whatif --variant`` and
``--vary`` take them; the twin checks paths and values, and names what it rejects."""

from __future__ import annotations

import re
from typing import Any

from services.console.inputs import BadInput, names, text
from twin.whatif.v1 import whatif_pb2
from twin_core import contract

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
PATH_RE = re.compile(r"^[A-Za-z0-9_.]{1,120}$")
SERIES = tuple(contract.SERIES)


def _override(field: str, part: str) -> whatif_pb2.Override:
    path, sep, value = part.partition("=")
    path, value = path.strip(), value.strip()
    if not sep or not path or not value:
        raise BadInput(field, f"{part.strip()[:60]!r} is not path=value")
    if not PATH_RE.match(path):
        raise BadInput(field, f"{path[:60]!r} is not a dotted path")
    return whatif_pb2.Override(path=path, value=value)


def parse_variants(source: str) -> list[whatif_pb2.Variant]:
    variants = []
    for number, line in enumerate(source.splitlines(), 1):
        if not line.strip():
            continue
        field = f"variants line {number}"
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or not rest.strip():
            raise BadInput(field, "expected name: path=value; path=value")
        if not NAME_RE.match(name) or name == "base":
            raise BadInput(field, f"{name[:40]!r} is not a variant name ('base' is reserved)")
        overrides = [_override(field, p) for p in rest.split(";") if p.strip()]
        variants.append(whatif_pb2.Variant(name=name, overrides=overrides))
    seen = [v.name for v in variants]
    if len(set(seen)) != len(seen):
        raise BadInput("variants", "names must be unique")
    return variants


def parse_grid(source: str) -> list[whatif_pb2.GridAxis]:
    axes = []
    for number, line in enumerate(source.splitlines(), 1):
        if not line.strip():
            continue
        field = f"grid line {number}"
        path, sep, values = line.partition("=")
        path, values = path.strip(), values.strip()
        if not sep or not values or not PATH_RE.match(path):
            raise BadInput(field, "expected path = v1, v2, ... or path = lo:hi:count")
        if re.fullmatch(r"[-+0-9.eE]+:[-+0-9.eE]+:\d+", values):
            axes.append(whatif_pb2.GridAxis(path=path, range=values))
        else:
            axes.append(
                whatif_pb2.GridAxis(path=path, values=[v.strip() for v in values.split(",")])
            )
    return axes


def study_spec(body: dict[str, Any]) -> whatif_pb2.StudySpec:
    spec = whatif_pb2.StudySpec(
        name=text(body, "name", default="console study", limit=80) or "console study",
        duration=text(body, "duration", default="", limit=20),
        dt=text(body, "dt", default="", limit=20),
        record_every=text(body, "record_every", default="", limit=20),
        series_every=text(body, "series_every", default="", limit=20),
        series=names(body, "series", allowed=SERIES, default=["facility_w"]),
    )
    scenario = text(body, "scenario", default="", limit=200)
    if scenario:  # else the twin's own (TWIN_SCENARIO)
        spec.scenario.name = scenario
    spec.variants.extend(parse_variants(text(body, "variants", default="", limit=20_000)))
    spec.vary.extend(parse_grid(text(body, "grid", default="", limit=20_000)))
    if not spec.variants and not spec.vary:
        raise BadInput("variants", "give at least one variant or grid axis")
    return spec
