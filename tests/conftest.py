"""Shared fixtures: float64 everywhere, and small sites built from tests/sites/small.yaml."""

from __future__ import annotations

from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

from twin_core.rollout import simulate  # noqa: E402
from twin_core.site import Site, load_site  # noqa: E402

# Session fixtures live in their own modules, loaded here as plugins: a fixture imported
# into a test module is redefined in that module, and a "session" fixture then starts
# once per module (a PostgreSQL cluster each time).
pytest_plugins = ["db_fixtures", "helm_binary"]

SITES = Path(__file__).parent / "sites"
SMALL = SITES / "small.yaml"
ROOT = Path(__file__).parent.parent
F64 = jnp.float64


def constant_weather(temp_c: float, rh: float = 0.5) -> dict:
    """Overrides for a flat ambient temperature (no diurnal swing, no noise)."""
    return {
        "weather.synthetic.monthly_mean_c": [temp_c] * 12,
        "weather.synthetic.monthly_diurnal_range_c": [0.0] * 12,
        "weather.synthetic.monthly_rh": [rh] * 12,
        "weather.synthetic.noise_std_c": 0.0,
    }


def steady_load(util: float) -> dict:
    """Overrides making the training job a constant load (same utilization in both phases)."""
    return {"workload.training.0.compute_util": util, "workload.training.0.comm_util": util}


def small_site(*parts: dict) -> Site:
    """The small test site with the given override dicts applied in order."""
    merged: dict = {}
    for part in parts:
        merged.update(part)
    return load_site(SMALL, merged)


def run64(site: Site, horizon_s: float, dt: float = 1.0, record_s: float | None = None, **kw):
    return simulate(site, horizon_s, dt, record_s, dtype=F64, **kw)


@pytest.fixture
def small() -> Site:
    return load_site(SMALL)


def pytest_configure(config: pytest.Config) -> None:
    # The controller (or a run without xdist) starts the container image's build now when
    # `make test` asks for it early (image_build.py); the workers inherit where it writes.
    if not hasattr(config, "workerinput"):
        from image_build import ROOT as image_root
        from image_build import start_early

        start_early(image_root / ".pytest_cache" / "image-build")
