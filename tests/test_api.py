"""The public API of ``twin_core``: what it exports, that importing a light part of the
package stays light, and that driver files are read only by ``load_drivers``."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
from conftest import ROOT, SMALL

import twin_core
from twin_core import DriverCache, build_params, drivers, load_drivers, load_site


def test_every_exported_name_resolves_and_none_is_a_module():
    assert sorted(twin_core.__all__) == sorted(twin_core._EXPORTS)
    for name in twin_core.__all__:
        assert not isinstance(getattr(twin_core, name), types.ModuleType), name


def test_a_light_module_does_not_import_jax():
    code = "import sys, twin_core.inputs, twin_core.durations; print('jax' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_build_params_reads_no_file(tmp_path):
    (tmp_path / "price.csv").write_text("usd\n" + "".join(f"{h}\n" for h in range(24)))
    price = {"file": str(tmp_path / "price.csv"), "column": "usd"}
    site = load_site(SMALL, {"energy.grid.price_usd_per_mwh": price})
    loaded = load_drivers(site)
    (tmp_path / "price.csv").unlink()  # gone: only what was loaded counts now
    p = build_params(site, loaded, horizon_s=7200, dt=10.0, host=True)
    np.testing.assert_array_equal(np.asarray(p.hourly)[:, 2], [0.0, 1.0, 2.0, 3.0])


def test_driver_cache_loads_once_per_distinct_driver_inputs(small, monkeypatch):
    calls = []
    monkeypatch.setattr(drivers, "load_drivers", lambda s: calls.append(s) or load_drivers(s))
    cache = DriverCache()
    same = [
        small,
        load_site(SMALL, {"cooling.supply_c": 33}),
        load_site(SMALL, {"weather.offset_c": 5}),  # applied when a run is sliced
    ]
    assert len({id(cache(s)) for s in same}) == 1 and len(calls) == 1
    other = load_site(SMALL, {"weather.synthetic.seed": 7})
    assert cache(other) is not cache(small) and len(calls) == 2
