"""Resolve a run's scenario: a seeded site by name, or YAML text, plus overrides.

Sites that reach a server from a client may name weather and series files only inside
the allow-listed data directories (the seeded ``scenarios/`` folder, the bundled weather
library and ``TWIN_DATA_DIR``),
checked on the fully merged site: a client never makes a server read another file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from services.runtime.config import RuntimeConfig
from twin.twin.v1 import clock_pb2
from twin_core.inputs import clip, load_yaml
from twin_core.site import (
    WEATHER_LIBRARY,
    Site,
    SiteError,
    build_site,
    load_site,
    parse_overrides,
    resolve_file,
    site_files,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
DATA_DIR_ENV = RuntimeConfig.env_name("data_dir")


def data_dirs() -> tuple[Path, ...]:
    """The folders a client's site may name files in: seeded scenarios, TWIN_DATA_DIR
    (read now, not at import: the CLI sets it for the services it starts)."""
    extra: Path | None = RuntimeConfig.read("data_dir")
    return (SCENARIOS, WEATHER_LIBRARY, extra.resolve()) if extra else (SCENARIOS, WEATHER_LIBRARY)


def inline_base_dir() -> Path:
    """Where relative file names of a site sent as YAML text resolve: the data directory."""
    return data_dirs()[-1]


def check_files(site: Site, field: str, trusted: Iterable[Path] = ()) -> Site:
    """``site`` unchanged if every file it names is a regular file inside a data directory
    (symlinks resolved) or one of ``trusted`` (the files of the operator's own site);
    otherwise SiteError naming ``field.<path>``, never what the file holds."""
    dirs, trusted = data_dirs(), set(trusted)
    for path, name in site_files(site):
        resolved = resolve_file(site, name).resolve()
        inside = resolved in trusted or any(resolved.is_relative_to(d) for d in dirs)
        if not inside:
            raise SiteError(
                f"{field}{path}: {clip(name)!r} is outside the data directory "
                f"(a site may name files only under scenarios/ or {DATA_DIR_ENV})"
            )
        if not resolved.is_file():
            raise SiteError(f"{field}{path}: no file {clip(name)!r} in the data directory")
    return site


def trusted_files(site: Site | None) -> frozenset[Path]:
    """The resolved files the operator's own site names (allowed whatever their folder)."""
    if site is None:
        return frozenset()
    return frozenset(resolve_file(site, name).resolve() for _, name in site_files(site))


def seeded_site(name: str, field: str, overrides: dict | None = None) -> Site:
    """A seeded scenario by name; SiteError naming ``field`` lists the known ones."""
    path = SCENARIOS / f"{name}.yaml"
    if not name or "/" in name or "\0" in name or not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.yaml")))
        raise SiteError(f"{field}: unknown scenario {clip(name)!r} (known: {known})")
    return load_site(path, overrides)


def is_site_file(text: str) -> bool:
    """Whether ``text`` names a site file (else it is a seeded scenario's name)."""
    path = Path(text)
    return path.suffix in (".yaml", ".yml") or path.exists()


def site_by_name_or_file(text: str, field: str) -> Site:
    """A site file by path, or a seeded scenario by name (SiteError naming ``field``)."""
    return load_site(text) if is_site_file(text) else seeded_site(text, field)


def site_from_yaml(text: str, field: str, overrides: dict | None = None) -> Site:
    """A whole site file given as YAML text; relative file names resolve in the data
    directory."""
    doc = load_yaml(text, field, SiteError)
    if not isinstance(doc, dict):
        raise SiteError(f"{field}: must be a site document (a mapping)")
    return build_site(doc, overrides, inline_base_dir())


def site_from_spec(spec: clock_pb2.RunSpec) -> Site:
    """The site a run spec names, with every file it names checked; raises SiteError
    naming the problem."""
    overrides = parse_overrides(list(spec.overrides), "spec.overrides")
    which = spec.WhichOneof("scenario")
    if which == "scenario_name":
        site = seeded_site(spec.scenario_name, "spec.scenario_name", overrides)
    elif which == "scenario_yaml":
        site = site_from_yaml(spec.scenario_yaml, "spec.scenario_yaml", overrides)
    else:
        raise SiteError("spec.scenario: give scenario_name or scenario_yaml")
    return check_files(site, "spec.")


MAX_RUN_HORIZON_S = 10 * 365 * 86400.0  # a decade of simulated time


def validate_run_spec(spec: clock_pb2.RunSpec) -> Site:
    """Everything a run needs, checked before any run is touched: the site (files
    included), dt, horizon, and the domain model built from them (params only, nothing
    compiled). Raises SiteError naming the field."""
    import jax.numpy as jnp

    from twin_core import build_params, load_drivers
    from twin_core.params import steps_per_hour

    dt = spec.dt_s or 1.0
    try:
        steps_per_hour(dt)
    except SiteError as exc:
        raise SiteError(f"spec.{exc}") from None
    if not 0 <= spec.horizon_s <= MAX_RUN_HORIZON_S:  # NaN and infinity too
        raise SiteError(
            f"spec.horizon_s: {spec.horizon_s:g} is out of range (0, meaning open-ended, "
            f"to {MAX_RUN_HORIZON_S:g} s)"
        )
    site = site_from_spec(spec)
    horizon = spec.horizon_s or 3600.0  # an open run's drivers cover the first hour
    try:
        build_params(site, load_drivers(site), horizon_s=horizon, dt=dt, dtype=jnp.float32)
    except SiteError as exc:
        raise SiteError(f"spec: {exc}") from None
    return site
