"""Resolve a run's scenario: a seeded site by name, or YAML text, plus overrides."""

from __future__ import annotations

from pathlib import Path

import yaml

from twin.twin.v1 import clock_pb2
from twin_core.site import Site, SiteError, build_site, load_site, parse_overrides

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def site_from_spec(spec: clock_pb2.RunSpec) -> Site:
    """The site a run spec names; raises SiteError naming the problem."""
    overrides = parse_overrides(list(spec.overrides), "spec.overrides")
    which = spec.WhichOneof("scenario")
    if which == "scenario_name":
        name = spec.scenario_name
        path = SCENARIOS / f"{name}.yaml"
        if not name or "/" in name or not path.is_file():
            known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.yaml")))
            raise SiteError(f"spec.scenario_name: unknown scenario {name!r} (known: {known})")
        return load_site(path, overrides)
    if which == "scenario_yaml":
        try:
            doc = yaml.safe_load(spec.scenario_yaml)
        except yaml.YAMLError as exc:
            raise SiteError(f"spec.scenario_yaml: invalid YAML ({exc})") from None
        return build_site(doc, overrides)
    raise SiteError("spec.scenario: give scenario_name or scenario_yaml")
