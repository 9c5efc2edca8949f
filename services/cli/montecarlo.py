"""``twin whatif --monte-carlo N`` and ``--sweep n-1|n-2``: failure studies, run here (or
their chunks on Dask) or on a twin service, printed as tables and written as
``DIR/montecarlo.json``."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.cli.errors import fail, rpc_failed
from services.cli.files import write_all_atomic
from services.cli.progress import progress_bar

HEADINGS = {
    "throttled_gpu_hours": "throttled GPU h",
    "lost_eflop": "lost EFLOP",
    "max_supply_c": "peak supply °C",
    "hours_above_throttle_start": "h above throttle start",
}
SWEEPS = ("n-1", "n-2")
_ENUM = {
    "monte_carlo": "FAILURE_SWEEP_MONTE_CARLO",
    "n-1": "FAILURE_SWEEP_N_MINUS_1",
    "n-2": "FAILURE_SWEEP_N_MINUS_2",
}


def parse_rate(text: str) -> tuple[str, dict[str, float]]:
    """``chiller=4380:24`` -> ("chiller", {"mtbf_h": 4380, "mttr_h": 24}); fails naming
    the option."""
    from twin_core.reliability import CLASSES

    name, sep, rest = text.partition("=")
    name = name.strip()
    if name not in CLASSES:
        fail(f"--rate {text!r}: unknown equipment class {name!r} (known: {', '.join(CLASSES)})")
    parts = rest.split(":")
    if not sep or len(parts) != 2:
        fail(f"--rate {text!r}: expected class=mtbf_h:mttr_h (e.g. chiller=4380:24)")
    values = {}
    for key, part in zip(("mtbf_h", "mttr_h"), parts, strict=True):
        try:
            value = float(part)
        except ValueError:
            fail(f"--rate {name}: {key} {part!r} is not a number")
        if not value > 0 or value == float("inf"):
            fail(f"--rate {name}: {key} must be a finite number > 0, got {part}")
        values[key] = value
    return name, values


def document(
    samples: int | None,
    sweep: str | None,
    seed: int,
    rates: list[str],
    classes: str | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The failure study's document from the options; fails naming the option."""
    from twin_core.reliability import CLASSES

    if samples is not None and sweep is not None:
        fail("--monte-carlo: give --monte-carlo N or --sweep, not both")
    if samples is not None and samples < 1:
        fail(f"--monte-carlo: must be >= 1 sample, got {samples}")
    if sweep is not None and sweep not in SWEEPS:
        fail(f"--sweep: {sweep!r} is not one of {', '.join(SWEEPS)}")
    if seed < 0:
        fail(f"--seed: must be >= 0, got {seed}")
    doc: dict[str, Any] = {"sweep": sweep or "monte_carlo", "seed": seed}
    if samples is not None:
        doc["samples"] = samples
    doc.update({k: v for k, v in options.items() if v is not None})
    doc["rates"] = dict(parse_rate(r) for r in rates)
    if classes is not None:
        names = [c.strip() for c in classes.split(",") if c.strip()]
        for name in names:
            if name not in CLASSES:
                fail(f"--classes: unknown equipment class {name!r} (known: {', '.join(CLASSES)})")
        doc["classes"] = names
    return doc


def run_local(
    scenario: str, doc: dict[str, Any], x64: bool, chunk: int | None, dask: str | None
) -> dict[str, Any]:
    """Run the failure study here (or its chunks on the Dask cluster ``dask`` names)."""
    from services.scenario import site_by_name_or_file
    from twin_core.montecarlo import parse_monte_carlo, run_monte_carlo

    spec = parse_monte_carlo(doc)
    if x64:
        import jax

        jax.config.update("jax_enable_x64", True)
        spec = spec.model_copy(update={"precision": "float64"})
    site = site_by_name_or_file(scenario, "scenario")
    label = f"{spec.name}: {spec.samples} samples" if spec.sweep == "monte_carlo" else spec.sweep
    with progress_bar() as bar, ExitStack() as stack:
        task = bar.add_task(label, total=None)

        def advance(done: float, total: int) -> None:
            bar.update(task, completed=done, total=total)

        kwargs: dict[str, Any] = {"chunk": chunk, "progress": advance, "segments": 10}
        if dask is not None:
            from services.study_cluster import DaskRunner, open_client, parse_target

            kwargs["runner"] = DaskRunner(stack.enter_context(open_client(parse_target(dask))))
        start = time.perf_counter()
        result = run_monte_carlo(site, spec, **kwargs)
    return {**result.to_dict(), "wall_s": time.perf_counter() - start}


def run_remote(scenario: str, doc: dict[str, Any], address: str) -> dict[str, Any]:
    """The failure study on a twin service; a local site file travels inline."""
    import grpc

    from services.cli.channel import client_channel as open_channel
    from services.scenario import is_site_file
    from twin.whatif.v1 import whatif_pb2, whatif_pb2_grpc

    if is_site_file(scenario):
        try:
            where = whatif_pb2.Scenario(yaml=Path(scenario).read_text())
        except OSError as exc:
            fail(f"{scenario}: {exc.strerror}")
    else:
        where = whatif_pb2.Scenario(name=scenario)
    request = whatif_pb2.RunMonteCarloRequest(
        scenario=where,
        sweep={
            "monte_carlo": whatif_pb2.FAILURE_SWEEP_MONTE_CARLO,
            "n-1": whatif_pb2.FAILURE_SWEEP_N_MINUS_1,
            "n-2": whatif_pb2.FAILURE_SWEEP_N_MINUS_2,
        }[doc["sweep"]],
        samples=doc.get("samples", 100 if doc["sweep"] == "monte_carlo" else 0),
        seed=doc["seed"],
        duration=doc.get("duration") or "",
        dt=doc.get("dt") or "",
        classes=doc.get("classes", []),
        rates=[whatif_pb2.ClassRate(equipment=k, **v) for k, v in doc["rates"].items()],
    )
    with open_channel(address) as channel:
        try:
            reply = whatif_pb2_grpc.WhatIfServiceStub(channel).RunMonteCarlo(request, timeout=3600)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                rpc_failed(f"--server {address}", address, exc)
            fail(f"--server {address}: {exc.details() or exc.code().name}")
    return reply_to_dict(reply)


def reply_to_dict(reply) -> dict[str, Any]:
    """A RunMonteCarloResponse as ``MonteCarloResult.to_dict()`` gives it (no samples)."""
    from twin.whatif.v1 import whatif_pb2

    names = {v: k for k, v in _ENUM.items()}
    return {
        "name": reply.name,
        "site": reply.site_id,
        "sweep": names.get(whatif_pb2.FailureSweep.Name(reply.sweep), "monte_carlo"),
        "duration_s": reply.duration_s,
        "dt_s": reply.dt_s,
        "metric_units": {d.metric: d.unit for d in reply.distributions},
        "base": dict(reply.base),
        "distributions": {
            d.metric: {k: getattr(d, k) for k in ("mean", "ci95", "p50", "p95", "p99")}
            for d in reply.distributions
        },
        "contributions": [
            {
                k: getattr(c, k)
                for k in ("equipment", "throttled_gpu_hours", "lost_eflop", "unit_hours_down")
            }
            | {"share": c.share}
            for c in reply.contributions
        ],
        "unavailability": {
            u.equipment: {"sampled": u.sampled, "analytic": u.analytic}
            for u in reply.unavailability
        },
        "cases": [
            {
                "name": c.name,
                "failed": list(c.failed),
                "metrics": dict(c.metrics),
                "critical": c.critical,
            }
            for c in reply.cases
        ],
        "wall_s": reply.wall_s,
    }


def tables(result: dict[str, Any]) -> list[Table]:
    """The distributions and the ranked contributions (Monte Carlo), or the cases."""
    days = result["duration_s"] / 86400
    span = f"{days:g} days" if days >= 1 else f"{result['duration_s'] / 3600:g} h"
    if result["sweep"] != "monte_carlo":
        table = Table(title=f"{result['sweep']} on {result['site']}: {span} each")
        table.add_column("failed", overflow="fold")
        for heading in HEADINGS.values():
            table.add_column(heading, justify="right")
        table.add_column("critical")
        for case in result["cases"]:
            cells = [f"{case['metrics'][k]:.4g}" for k in HEADINGS]
            table.add_row(case["name"], *cells, "[red]yes[/]" if case["critical"] else "no")
        return [table]
    samples = len(next(iter(result.get("samples", {}).values()), [])) or "?"
    dist = Table(title=f"Monte Carlo on {result['site']}: {samples} samples x {span}")
    for heading in ("metric", "base", "mean ± 95 % CI", "P50", "P95", "P99"):
        dist.add_column(heading, justify="right")
    for metric, d in result["distributions"].items():
        base = result["base"][metric]
        dist.add_row(
            HEADINGS[metric],
            f"{base:.4g}",
            f"{d['mean']:.4g} ± {d['ci95']:.2g}",
            *(f"{d[q]:.4g}" for q in ("p50", "p95", "p99")),
        )
    rank = Table(title="what drives the risk (per sample, mean)")
    for heading in ("equipment", "throttled GPU h", "lost EFLOP", "unit-h down", "share"):
        rank.add_column(heading, justify="right")
    for c in result["contributions"]:
        rank.add_row(
            c["equipment"],
            f"{c['throttled_gpu_hours']:.4g}",
            f"{c['lost_eflop']:.4g}",
            f"{c['unit_hours_down']:.4g}",
            f"{c['share']:.1%}",
        )
    return [dist, rank]


def report(result: dict[str, Any], out: Path) -> None:
    """Write ``DIR/montecarlo.json`` and print the tables."""
    try:
        write_all_atomic(
            {out / "montecarlo.json": json.dumps(result, indent=2) + "\n"}, make_dirs=True
        )
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}")
    screen = Console()
    console = Console(width=screen.width if screen.is_terminal else 160)
    for table in tables(result):
        console.print(table)
    console.print(f"wrote {out}/montecarlo.json ({result.get('wall_s') or 0.0:.1f} s)")
