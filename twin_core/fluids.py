"""Coolant density and specific heat, from CoolProp where a site names a CoolProp fluid.

Evaluated once per fluid and temperature while params are built; the jitted steps only
see the resulting heat capacities. The seeded fluids are tabulated from CoolProp every
1 K (``catalog/coolprop_liquids.json``, written by ``python -m twin_core.fluids``; a test
checks it against CoolProp): importing CoolProp initialises every fluid it knows, 5-20 s
on a 2-core machine, which every service that builds params would pay at start-up.
Another fluid or temperature imports CoolProp on first use.
"""

from __future__ import annotations

import json
import math
import sys
from functools import lru_cache
from pathlib import Path

from twin_core.inputs import clip
from twin_core.site import Fluid, SiteError

TABLE = Path(__file__).resolve().parent / "catalog" / "coolprop_liquids.json"
TABULATED = {"Water": (1.0, 95.0), "INCOMP::MPG[0.25]": (1.0, 95.0)}  # name: (from, to) C
TABLE_STEP_C = 1.0

# The loops run a little above atmospheric pressure; liquid properties barely depend on it
# (and CoolProp's incompressible fluids not at all).
PRESSURE_PA = 101325.0


def fluid_properties(fluid: Fluid, field: str, default_c: float) -> tuple[float, float]:
    """(density kg/m3, specific heat J/(kg K)) of ``fluid``: its fixed values, or CoolProp's
    at ``fluid.at_c`` (else ``default_c``). SiteError names ``field`` when CoolProp has no
    such fluid, or none at that temperature."""
    if fluid.coolprop is None:
        assert fluid.density_kg_per_m3 is not None and fluid.cp_j_per_kg_k is not None
        return fluid.density_kg_per_m3, fluid.cp_j_per_kg_k
    at_c = default_c if fluid.at_c is None else fluid.at_c
    return _coolprop(fluid.coolprop, float(at_c), field)


@lru_cache(maxsize=64)
def _coolprop(name: str, t_c: float, field: str) -> tuple[float, float]:
    found = _tabulated(name, t_c)
    return found if found is not None else _evaluate(name, t_c, field)


@lru_cache(maxsize=1)
def _table() -> dict[str, dict]:
    return json.loads(TABLE.read_text())


def _tabulated(name: str, t_c: float) -> tuple[float, float] | None:
    """Linear between the table's 1 K points (exactly CoolProp's value on one): within
    1e-5 of CoolProp (water near its 4 C density maximum is the worst); None outside
    the table."""
    if name not in TABULATED:
        return None
    entry = _table()[name]
    x = (t_c - entry["from_c"]) / entry["step_c"]
    i, rho, cp = math.floor(x), entry["density_kg_per_m3"], entry["cp_j_per_kg_k"]
    if not 0 <= i < len(rho):
        return None
    f = x - i
    if f == 0.0:
        return rho[i], cp[i]
    if i + 1 >= len(rho):
        return None
    return rho[i] + f * (rho[i + 1] - rho[i]), cp[i] + f * (cp[i + 1] - cp[i])


def _evaluate(name: str, t_c: float, field: str) -> tuple[float, float]:
    from CoolProp.CoolProp import PropsSI

    try:
        rho = PropsSI("D", "T", t_c + 273.15, "P", PRESSURE_PA, name)
        cp = PropsSI("C", "T", t_c + 273.15, "P", PRESSURE_PA, name)
    except ValueError:
        raise SiteError(
            f"{field}.coolprop: CoolProp has no liquid {clip(name)!r} at {t_c:g} C"
        ) from None
    if not (200.0 < rho < 5000.0 and 500.0 < cp < 10000.0):  # steam, or a failed evaluation
        raise SiteError(f"{field}.coolprop: {clip(name)!r} is not a liquid at {t_c:g} C")
    return float(rho), float(cp)


def write_table(path: Path = TABLE) -> None:
    """The tabulated fluids from CoolProp (run after a CoolProp upgrade)."""
    import CoolProp

    out: dict[str, dict] = {
        "_source": {"coolprop": CoolProp.__version__, "pressure_pa": PRESSURE_PA}
    }
    for name, (lo, hi) in TABULATED.items():
        n = round((hi - lo) / TABLE_STEP_C) + 1
        values = [_evaluate(name, lo + k * TABLE_STEP_C, name) for k in range(n)]
        out[name] = {
            "from_c": lo,
            "step_c": TABLE_STEP_C,
            "density_kg_per_m3": [v[0] for v in values],
            "cp_j_per_kg_k": [v[1] for v in values],
        }
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    write_table(Path(sys.argv[1]) if len(sys.argv) > 1 else TABLE)
