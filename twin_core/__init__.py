"""AI Factory Twin's model: the public API.

Import from here; the modules behind it (``twin_core.site``, ``twin_core.rollout``, ...)
may move. A typical run::

    from twin_core import load_site, simulate

    site = load_site("scenarios/fairwater.yaml")
    result = simulate(site, 86400, 10.0)
    result.kpis["pue"]

Files are read only at the edge: ``load_site`` reads the site file, ``load_drivers`` the
weather and series files it names; ``build_params(site, drivers, ...)`` and everything
after it is pure.

Names are loaded on first use, so importing a light module of the package (``inputs``,
``durations``) does not import JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # sites: the schema and loading (reads the site file)
    "Site": "twin_core.site",
    "SiteError": "twin_core.site",
    "load_site": "twin_core.site",
    "build_site": "twin_core.site",
    "with_overrides": "twin_core.site",
    # drivers: the weather and series files a site names, read once
    "DriverData": "twin_core.drivers",
    "DriverCache": "twin_core.drivers",
    "load_drivers": "twin_core.drivers",
    # parameters: site + drivers -> arrays (pure)
    "Params": "twin_core.params",
    "Layout": "twin_core.params",
    "Granularity": "twin_core.params",
    "Equipment": "twin_core.contract",
    "NO_LIMIT": "twin_core.params",
    "build_params": "twin_core.params",
    "layout_of": "twin_core.params",
    # the coupled model
    "TwinState": "twin_core.coupling",
    "init_state": "twin_core.coupling",
    "coupled_step": "twin_core.coupling",
    # rollouts and gradients
    "Result": "twin_core.rollout",
    "TUNABLE": "twin_core.rollout",
    "simulate": "twin_core.rollout",
    "plan": "twin_core.rollout",
    "set_param": "twin_core.rollout",
    "get_param": "twin_core.rollout",
    "kpi_model": "twin_core.rollout",
    "kpi_value_and_grad": "twin_core.rollout",
    "simulate_batch": "twin_core.batch",
    "KPI_UNITS": "twin_core.kpis",
    # what-if studies
    "StudySpec": "twin_core.study",
    "StudyError": "twin_core.study",
    "Constraints": "twin_core.study",
    "ConstraintCheck": "twin_core.study",
    "VariantResult": "twin_core.study",
    "StudyResult": "twin_core.study",
    "parse_spec": "twin_core.study",
    "parse_spec_yaml": "twin_core.study",
    "run_study": "twin_core.study",
    # failure studies: Monte Carlo and N-1 / N-2 sweeps
    "MonteCarloSpec": "twin_core.montecarlo",
    "MonteCarloResult": "twin_core.montecarlo",
    "parse_monte_carlo": "twin_core.montecarlo",
    "run_monte_carlo": "twin_core.montecarlo",
    # planning by gradients
    "Objective": "twin_core.gradients",
    "Sensitivities": "twin_core.gradients",
    "OptimizeStep": "twin_core.gradients",
    "OptimizeResult": "twin_core.gradients",
    "sensitivities": "twin_core.gradients",
    "optimize": "twin_core.gradients",
}

# Spelled out for type checkers and linters; tests/test_api.py keeps it equal to _EXPORTS.
__all__ = [
    "KPI_UNITS",
    "NO_LIMIT",
    "TUNABLE",
    "ConstraintCheck",
    "Constraints",
    "DriverCache",
    "DriverData",
    "Equipment",
    "Granularity",
    "Layout",
    "MonteCarloResult",
    "MonteCarloSpec",
    "Objective",
    "OptimizeResult",
    "OptimizeStep",
    "Params",
    "Result",
    "Sensitivities",
    "Site",
    "SiteError",
    "StudyError",
    "StudyResult",
    "StudySpec",
    "TwinState",
    "VariantResult",
    "build_params",
    "build_site",
    "coupled_step",
    "get_param",
    "init_state",
    "kpi_model",
    "kpi_value_and_grad",
    "layout_of",
    "load_drivers",
    "load_site",
    "optimize",
    "parse_monte_carlo",
    "parse_spec",
    "parse_spec_yaml",
    "plan",
    "run_monte_carlo",
    "run_study",
    "sensitivities",
    "set_param",
    "simulate",
    "simulate_batch",
    "with_overrides",
]

if TYPE_CHECKING:  # what type checkers and editors see; at run time, __getattr__
    from twin_core.batch import simulate_batch
    from twin_core.contract import Equipment
    from twin_core.coupling import TwinState, coupled_step, init_state
    from twin_core.drivers import DriverCache, DriverData, load_drivers
    from twin_core.gradients import (
        Objective,
        OptimizeResult,
        OptimizeStep,
        Sensitivities,
        optimize,
        sensitivities,
    )
    from twin_core.kpis import KPI_UNITS
    from twin_core.montecarlo import (
        MonteCarloResult,
        MonteCarloSpec,
        parse_monte_carlo,
        run_monte_carlo,
    )
    from twin_core.params import (
        NO_LIMIT,
        Granularity,
        Layout,
        Params,
        build_params,
        layout_of,
    )
    from twin_core.rollout import (
        TUNABLE,
        Result,
        get_param,
        kpi_model,
        kpi_value_and_grad,
        plan,
        set_param,
        simulate,
    )
    from twin_core.site import Site, SiteError, build_site, load_site, with_overrides
    from twin_core.study import (
        ConstraintCheck,
        Constraints,
        StudyError,
        StudyResult,
        StudySpec,
        VariantResult,
        parse_spec,
        parse_spec_yaml,
        run_study,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'twin_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
