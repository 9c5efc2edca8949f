"""``twin plan capacity``: how many racks of a type (or a mix) a site can add, per
operating case, with the constraint that binds each answer (twin_core/capacity.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli.errors import console, fail, seconds

plan_app = typer.Typer(help="Planning questions answered by simulation.", no_args_is_help=True)

CONSTRAINT_HEADINGS = {
    "interconnect": "interconnect MW",
    "gpu_temp": "GPU °C",
    "cooling_n1": "N+1 GPU °C",
    "grid_ramp": "grid ramp MW/s",
    "cap_depth": "cap fraction",
    "hall_space": "hall space racks",
}


def _positive(option: str, value: float | None) -> None:
    if value is not None and not value > 0:
        fail(f"{option}: must be > 0, got {value:g}")


def plan_table(plan: dict[str, Any]) -> Table:
    """One row per case: the count, what binds it, each constraint's margin at it."""
    mix = ", ".join(f"{name} {share:.0%}" for name, share in plan["mix"].items())
    table = Table(
        title=f"capacity of {plan['site']} for {mix} "
        "(margin: room left at the answer; value in brackets)"
    )
    table.add_column("case")
    table.add_column("racks", justify="right")
    table.add_column("GPUs", justify="right")
    table.add_column("binding")
    names = [n for n in CONSTRAINT_HEADINGS if any(n in c["checks"] for c in plan["cases"])]
    for name in names:
        table.add_column(CONSTRAINT_HEADINGS[name], justify="right")
    for case in plan["cases"]:
        cells = []
        for name in names:
            check = case["checks"].get(name)
            cells.append("" if check is None else f"{check['margin']:.3g} ({check['value']:.4g})")
        table.add_row(
            case["case"],
            f"{case['racks']:,}",
            f"{case['gpus']:,}",
            ", ".join(case["binding"]),
            *cells,
        )
    return table


@plan_app.command("capacity")
def capacity(
    scenario: Annotated[str, typer.Argument(help="site file or seeded scenario name")],
    rack_type: Annotated[
        list[str],
        typer.Option(help="rack type to add; repeat with TYPE=share for a mix (e.g. A=1 B=3)"),
    ],
    case: Annotated[
        list[str] | None,
        typer.Option(help="uncapped, capped, smoothing, battery (default: all that apply)"),
    ] = None,
    space: Annotated[
        int | None, typer.Option(help="rack positions free for the new racks (default: no limit)")
    ] = None,
    racks_per_cdu: Annotated[
        int | None, typer.Option(help="racks per new CDU (default: the first hall's)")
    ] = None,
    max_gpu_temp: Annotated[
        float | None, typer.Option(help="GPU limit, °C (default: the lowest throttle start)")
    ] = None,
    max_ramp: Annotated[float | None, typer.Option(help="grid ramp limit, MW/s")] = None,
    min_cap: Annotated[float, typer.Option(help="capped case: lowest cap fraction allowed")] = 0.9,
    cap_overshoot: Annotated[
        float, typer.Option(help="capped case: share the peak may pass the limit by")
    ] = 0.01,
    n1: Annotated[bool, typer.Option(help="check N+1 cooling on the design day")] = True,
    battery_mw: Annotated[float | None, typer.Option(help="firming battery power, MW")] = None,
    battery_mwh: Annotated[float | None, typer.Option(help="firming battery energy, MWh")] = None,
    duration: Annotated[str, typer.Option(help="simulated design day")] = "24h",
    dt: Annotated[str, typer.Option(help="coupling interval")] = "10s",
    guess: Annotated[bool, typer.Option(help="start the search at the gradient estimate")] = True,
    x64: Annotated[bool, typer.Option(help="float64")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """The largest number of racks of a type (or a mix) the site's hall space,
    interconnect and cooling plant take, per case, and the constraint that binds it."""
    from services.scenario import site_by_name_or_file
    from twin_core.capacity import Limits, plan_capacity
    from twin_core.capacity_sites import CASES, Battery, CapacityError, parse_mix
    from twin_core.site import SiteError

    horizon = seconds("--duration", duration)
    step = seconds("--dt", dt)
    if space is not None and space < 0:
        fail(f"--space: must be >= 0, got {space}")
    if racks_per_cdu is not None and racks_per_cdu < 1:
        fail(f"--racks-per-cdu: must be >= 1, got {racks_per_cdu}")
    _positive("--max-gpu-temp", max_gpu_temp)
    _positive("--max-ramp", max_ramp)
    _positive("--battery-mw", battery_mw)
    _positive("--battery-mwh", battery_mwh)
    if (battery_mw is None) != (battery_mwh is None):
        fail("--battery-mw: give it with --battery-mwh (both size the firming battery)")
    battery = Battery(battery_mw, battery_mwh) if battery_mw and battery_mwh else None
    cases = case or [c for c in CASES if c != "battery" or battery is not None]
    try:
        site = site_by_name_or_file(scenario, "scenario")
        mix = parse_mix(rack_type, site)
        if x64:
            import jax

            jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        result = plan_capacity(
            site,
            mix,
            horizon_s=horizon,
            dt=step,
            cases=cases,
            limits=Limits(max_gpu_temp, max_ramp, min_cap, n1, cap_overshoot),
            space=space,
            racks_per_cdu=racks_per_cdu,
            battery=battery,
            guess=guess,
            dtype=jnp.float64 if x64 else jnp.float32,
            progress=lambda r, brackets: console.print(
                f"round {r}: " + ", ".join(f"{c} {lo}..{hi}" for c, lo, hi in brackets)
            ),
        )
    except (CapacityError, SiteError, ValueError) as exc:
        fail(str(exc))
    doc = result.to_dict()
    if json_out:
        typer.echo(json.dumps(doc, indent=2))
        return
    screen = Console()
    Console(width=screen.width if screen.is_terminal else 200).print(plan_table(doc))
