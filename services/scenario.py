"""Resolve a run's scenario: a seeded site by name, or YAML text, plus overrides."""

from __future__ import annotations

from pathlib import Path

import yaml

from twin.twin.v1 import clock_pb2
from twin_core.site import Site, SiteError, build_site, load_site, parse_overrides

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def seeded_site(name: str, field: str, overrides: dict | None = None) -> Site:
    """A seeded scenario by name; SiteError naming ``field`` lists the known ones."""
    path = SCENARIOS / f"{name}.yaml"
    if not name or "/" in name or not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.yaml")))
        raise SiteError(f"{field}: unknown scenario {name!r} (known: {known})")
    return load_site(path, overrides)


def is_site_file(text: str) -> bool:
    """Whether ``text`` names a site file (else it is a seeded scenario's name)."""
    path = Path(text)
    return path.suffix in (".yaml", ".yml") or path.exists()


def site_by_name_or_file(text: str, field: str) -> Site:
    """A site file by path, or a seeded scenario by name (SiteError naming ``field``)."""
    return load_site(text) if is_site_file(text) else seeded_site(text, field)


def site_from_yaml(text: str, field: str, overrides: dict | None = None) -> Site:
    """A whole site file given as YAML text."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SiteError(f"{field}: invalid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise SiteError(f"{field}: must be a site document (a mapping)")
    return build_site(doc, overrides)


def site_from_spec(spec: clock_pb2.RunSpec) -> Site:
    """The site a run spec names; raises SiteError naming the problem."""
    overrides = parse_overrides(list(spec.overrides), "spec.overrides")
    which = spec.WhichOneof("scenario")
    if which == "scenario_name":
        return seeded_site(spec.scenario_name, "spec.scenario_name", overrides)
    if which == "scenario_yaml":
        return site_from_yaml(spec.scenario_yaml, "spec.scenario_yaml", overrides)
    raise SiteError("spec.scenario: give scenario_name or scenario_yaml")
