"""``twin whatif``: a study of many variants of a site, run here in one batched rollout or
on a twin service (``--server``), printed as a comparison table and written as
``DIR/study.json`` and ``DIR/comparison.png``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
import yaml
from rich.console import Console
from rich.table import Table

from services.cli.errors import console, fail, rpc_failed, seconds
from services.cli.extras import installed, need
from services.cli.files import write_all_atomic
from services.cli.progress import progress_bar

# KPIs in the comparison table, with short headings (all KPIs are in study.json).
TABLE_KPIS = {
    "pue": "PUE",
    "facility_energy_mwh": "facility MWh",
    "peak_facility_mw": "peak MW",
    "max_gpu_temp_c": "GPU max °C",
    "chiller_hours": "chiller h",
    "throttled_gpu_hours": "throttled GPU h",
    "max_grid_ramp_mw_per_s": "grid ramp MW/s",
    "cost_usd": "cost USD",
}
PLOT_KPIS = ("pue", "facility_energy_mwh", "peak_facility_mw", "max_gpu_temp_c")


def study_document(
    scenario: str | None,
    study_file: Path | None,
    vary: list[str],
    variants: list[str],
    set_: list[str],
    options: dict[str, Any],
) -> dict[str, Any]:
    """The study as a document: ``--study`` file first, then the options on top."""
    from twin_core.site import parse_overrides
    from twin_core.study import StudyError, parse_variant_option

    doc: dict[str, Any] = {}
    if study_file is not None:
        try:
            doc = yaml.safe_load(study_file.read_text()) or {}
        except OSError as exc:
            raise StudyError(f"--study {study_file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise StudyError(f"--study {study_file}: invalid YAML ({exc})") from None
        if not isinstance(doc, dict):
            raise StudyError(f"--study {study_file}: must be a mapping of study fields")
    if scenario is not None:
        doc.pop("site", None)
        doc["scenario"] = scenario
    doc.update({k: v for k, v in options.items() if v is not None})
    if set_:
        doc["base"] = {**doc.get("base", {}), **parse_overrides(set_)}
    for item in vary:
        path, sep, values = item.partition("=")
        if not sep or not path.strip():
            raise StudyError(f"--vary {item!r}: expected path=lo:hi:count or path=a,b,c")
        doc.setdefault("vary", {})[path.strip()] = values
    for item in variants:
        v = parse_variant_option(item)
        doc.setdefault("variants", []).append({"name": v.name, "set": v.set})
    return doc


def _local_base(spec, where: str):
    """The base site for a local run: a seeded name or a path."""
    from services.scenario import site_by_name_or_file
    from twin_core.site import build_site

    if spec.site is not None:
        return build_site(spec.site)
    if spec.scenario is None:
        from twin_core.study import StudyError

        raise StudyError(f"{where}: give a scenario (a site file or a seeded name)")
    return site_by_name_or_file(spec.scenario, where)


def run_local(
    doc: dict[str, Any],
    x64: bool,
    chunk: int | None = None,
    dask: str | None = None,
    option: str = "--dask",
) -> dict[str, Any]:
    """Run the study here, or in chunks of ``chunk`` variants on the Dask cluster ``dask``
    names (``local:N`` or a scheduler address; ``option``: where it came from, for errors);
    study.json's form of its ``StudyResult``, with ``wall_s``."""
    from twin_core import parse_spec
    from twin_core.study import prepare

    spec = parse_spec(doc)
    if x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    site = _local_base(spec, "scenario")
    variants = prepare(site, spec)
    with progress_bar() as bar, _study_runner(dask, option) as run:
        task = bar.add_task(f"{spec.name}: {len(variants)} variants", total=len(variants))
        start = time.perf_counter()
        result = run(
            site,
            spec,
            progress=lambda done, total: bar.update(task, completed=done),
            chunk=chunk,
            segments=10,
            variants=variants,
        )
    return {**result.to_dict(), "wall_s": time.perf_counter() - start}


@contextmanager
def _study_runner(dask: str | None, option: str = "--dask") -> Iterator[Callable[..., Any]]:
    """``run_study`` here, or bound to a Dask client (started and closed around the run)."""
    from twin_core import run_study

    if dask is None:
        yield run_study
        return
    from services.study_cluster import open_client, parse_target, run_study_on_dask

    with open_client(parse_target(dask, option), option) as client:
        yield partial(run_study_on_dask, client)


def run_remote(doc: dict[str, Any], address: str) -> dict[str, Any]:
    """Send the study to a twin service; a local site file travels inline."""
    import grpc

    from services.cli.channel import client_channel as open_channel
    from services.scenario import is_site_file
    from twin.whatif.v1 import whatif_pb2, whatif_pb2_grpc

    scenario = doc.get("scenario")
    if scenario and is_site_file(scenario):
        try:
            doc = {**doc, "site": yaml.safe_load(Path(scenario).read_text())}
        except OSError as exc:
            fail(f"{scenario}: {exc.strerror}")
        doc.pop("scenario")
    request = whatif_pb2.RunStudyRequest(study_yaml=yaml.safe_dump(doc, sort_keys=False))
    result = None
    with open_channel(address) as channel, progress_bar() as bar:
        task = None
        try:
            stream = whatif_pb2_grpc.WhatIfServiceStub(channel).RunStudy(request, timeout=3600)
            for message in stream:
                kind = message.WhichOneof("event")
                if kind == "accepted":
                    total = message.accepted.variants
                    name = f"study {message.accepted.study_id[:8]}: {total} variants"
                    task = bar.add_task(name, total=total)
                elif kind == "progress" and task is not None:
                    bar.update(task, completed=message.progress.variants_done)
                elif kind == "result":
                    result = study_to_dict(message.result)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                rpc_failed(f"--server {address}", address, exc)
            fail(f"--server {address}: {exc.details() or exc.code().name}")
    if result is None:
        fail(f"--server {address}: the stream ended without a result")
    return result


def study_to_dict(study) -> dict[str, Any]:
    """A twin.whatif.v1.Study as ``StudyResult.to_dict()`` gives it (study.json's format)."""
    from twin_core.site import parse_value

    def overrides(items) -> dict[str, Any]:
        return {o.path + ("+" if o.append else ""): parse_value(o.value) for o in items}

    return {
        "study_id": study.study_id,
        "name": study.name,
        "site": study.site_id,
        "duration_s": study.duration_s,
        "dt_s": study.dt_s,
        "kpi_units": dict(study.kpi_units),
        "wall_s": study.wall_s,
        "variants": [
            {
                "name": v.name,
                "overrides": overrides(v.overrides),
                "racks": v.racks,
                "gpus": v.gpus,
                "kpis": dict(v.kpis),
                "deltas": dict(v.deltas),
                "constraints": {
                    c.name: {"value": c.value, "limit": c.limit, "passed": c.passed}
                    for c in v.constraints
                },
                "passed": v.passed,
                **({"series": {s.name: list(s.values) for s in v.series}} if v.series else {}),
            }
            for v in study.variants
        ],
    }


def comparison_table(result: dict[str, Any]) -> Table:
    title = f"{result['name']} on {result['site']}: {len(result['variants'])} variants"
    table = Table(title=title + " (second line: change from base)")
    table.add_column("variant", overflow="fold")
    for heading in TABLE_KPIS.values():
        table.add_column(heading, justify="right")
    table.add_column("constraints", overflow="fold")
    for v in result["variants"]:
        cells = []
        for kpi in TABLE_KPIS:
            value, delta = v["kpis"][kpi], v["deltas"][kpi]
            text = f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
            if v["name"] != "base" and abs(delta) > 1e-9 * max(1.0, abs(value)):
                text += f"\n{delta:+.3g}"
            cells.append(text)
        failed = [n for n, c in v["constraints"].items() if not c["passed"]]
        verdict = "[green]pass[/]" if v["passed"] else "[red]fail:\n" + "\n".join(failed) + "[/]"
        table.add_row(v["name"], *cells, verdict)
    return table


def comparison_png(result: dict[str, Any], path: Path | BinaryIO) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = result["variants"]
    names = [v["name"] for v in variants]
    colors = ["tab:gray" if i == 0 else "tab:blue" for i in range(len(variants))]
    colors = [c if v["passed"] else "tab:red" for c, v in zip(colors, variants, strict=True)]
    height = max(3.0, 0.28 * len(variants) + 1.5)
    fig, axes = plt.subplots(1, len(PLOT_KPIS), figsize=(4.2 * len(PLOT_KPIS), height), sharey=True)
    for ax, kpi in zip(axes, PLOT_KPIS, strict=True):
        values = [v["kpis"][kpi] for v in variants]
        ax.barh(range(len(variants)), values, color=colors)
        ax.axvline(values[0], color="black", linewidth=0.8, linestyle="--")
        unit = result.get("kpi_units", {}).get(kpi, "")
        ax.set_title(f"{kpi}" + (f" [{unit}]" if unit else ""), fontsize=9)
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.15 or abs(hi) * 0.01 or 1.0
        ax.set_xlim(lo - pad, hi + pad)
    axes[0].set_yticks(range(len(variants)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(
        f"{result['name']} on {result['site']}: base dashed, failed constraints in red",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def whatif(
    scenario: Annotated[
        str | None, typer.Argument(help="site file or seeded scenario name")
    ] = None,
    study: Annotated[Path | None, typer.Option(help="study definition (YAML)")] = None,
    vary: Annotated[
        list[str] | None, typer.Option(help="grid axis: path=lo:hi:count or path=a,b,c")
    ] = None,
    variant: Annotated[
        list[str] | None, typer.Option(help="name:path=value,path+=item (+= appends)")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="base override for every variant")
    ] = None,
    duration: Annotated[str | None, typer.Option(help="simulated time (default 24h)")] = None,
    dt: Annotated[str | None, typer.Option(help="coupling interval (default 10s)")] = None,
    granularity: Annotated[str | None, typer.Option(help="rack or gpu")] = None,
    max_gpu_temp: Annotated[float | None, typer.Option(help="GPU limit, °C (85)")] = None,
    max_ramp: Annotated[float | None, typer.Option(help="grid ramp limit, MW/s")] = None,
    series: Annotated[list[str] | None, typer.Option(help="series to keep, downsampled")] = None,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/whatif"),
    server: Annotated[
        str | None, typer.Option(help="run on a twin service (host:port) instead of here")
    ] = None,
    x64: Annotated[bool, typer.Option(help="float64 (local runs)")] = False,
    chunk: Annotated[
        int | None, typer.Option(help="variants per compiled call (default: what fits)")
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            help="run the chunks on Dask: local:N workers, or tcp://scheduler:port "
            "(default: TWIN_DASK_SCHEDULER when set)"
        ),
    ] = None,
    monte_carlo: Annotated[
        int | None,
        typer.Option(help="a failure study: N Monte Carlo samples of failures and repairs"),
    ] = None,
    sweep: Annotated[
        str | None, typer.Option(help="a deterministic failure sweep: n-1 or n-2")
    ] = None,
    seed: Annotated[int, typer.Option(help="failure sampling seed")] = 0,
    rates: Annotated[
        list[str] | None,
        typer.Option(
            "--rate", help="class=mtbf_h:mttr_h, replacing the catalog's (e.g. pump=20000:8)"
        ),
    ] = None,
    classes: Annotated[
        str | None, typer.Option(help="equipment classes that fail (default all), a,b,c")
    ] = None,
) -> None:
    """Compare variants of a site: one batched rollout, a table, study.json, comparison.png.
    With --monte-carlo N or --sweep: a failure study, its tables and montecarlo.json."""
    from twin_core.site import SiteError
    from twin_core.study import StudyError

    # Checked here to fail naming the option; the study reads the text itself (it may
    # travel to a --server as it is).
    seconds("--duration", duration)
    seconds("--dt", dt)
    if chunk is not None and chunk < 1:
        fail(f"--chunk: must be >= 1, got {chunk}")
    if server and (dask or chunk is not None):
        fail(f"{'--dask' if dask else '--chunk'}: local runs only (the --server chunks its own)")
    if dask is None and not server:
        # A pod of a deployment with study workers runs its studies there (the chart).
        dask = os.environ.get("TWIN_DASK_SCHEDULER", "").strip() or None
        option = "TWIN_DASK_SCHEDULER"
    else:
        option = "--dask"
    if dask is not None:
        need("distributed", "dask", "--dask")
        from services.study_cluster import ClusterError, parse_target

        try:
            parse_target(dask, option)
        except ClusterError as exc:
            fail(str(exc))
    if monte_carlo is not None or sweep is not None:
        failure_study(
            scenario, monte_carlo, sweep, seed, rates or [], classes,
            {"duration": duration, "dt": dt, "granularity": granularity},
            out, server, x64, chunk, dask,
        )  # fmt: skip
        return
    constraints: dict[str, Any] = {}
    options: dict[str, Any] = {"duration": duration, "dt": dt, "granularity": granularity}
    try:
        doc = study_document(scenario, study, vary or [], variant or [], set_ or [], options)
        if max_gpu_temp is not None or max_ramp is not None:
            constraints = dict(doc.get("constraints") or {})
            if max_gpu_temp is not None:
                constraints["max_gpu_temp_c"] = max_gpu_temp
            if max_ramp is not None:
                constraints["max_ramp_mw_per_s"] = max_ramp
            doc["constraints"] = constraints
        if series:
            doc["series"] = series
        if x64:
            doc["precision"] = "float64"
        result = run_remote(doc, server) if server else run_local(doc, x64, chunk, dask, option)
    except (StudyError, SiteError) as exc:  # a ClusterError is a StudyError
        fail(str(exc))

    files: dict[Path, Any] = {out / "study.json": json.dumps(result, indent=2) + "\n"}
    if installed("matplotlib"):
        files[out / "comparison.png"] = lambda f: comparison_png(result, f)  # savefig's PNG
    else:  # the container image (no plot extra): the study is complete without its chart
        console.print("comparison.png skipped: matplotlib is not installed (the plot extra)")
    try:
        write_all_atomic(files, make_dirs=True)
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}")
    screen = Console()
    # Piped output has no width to honour: keep the table's rows on one line each.
    Console(width=screen.width if screen.is_terminal else 160).print(comparison_table(result))
    days = len(result["variants"]) * result["duration_s"] / 86400
    wall = result.get("wall_s") or 0.0
    rate = f", {days / wall * 60:,.0f} variant-days per minute" if wall > 0 else ""
    Console().print(f"wrote {out}/study.json and {out}/comparison.png ({wall:.1f} s{rate})")


def failure_study(
    scenario: str | None,
    samples: int | None,
    sweep: str | None,
    seed: int,
    rates: list[str],
    classes: str | None,
    options: dict[str, Any],
    out: Path,
    server: str | None,
    x64: bool,
    chunk: int | None,
    dask: str | None,
) -> None:
    """``--monte-carlo N`` / ``--sweep``: services/cli/montecarlo.py."""
    from services.cli import montecarlo
    from twin_core.site import SiteError
    from twin_core.study import StudyError

    doc = montecarlo.document(samples, sweep, seed, rates, classes, options)
    if scenario is None:
        fail("scenario: give a site file or a seeded scenario name")
    try:
        if server:
            result = montecarlo.run_remote(scenario, doc, server)
        else:
            result = montecarlo.run_local(scenario, doc, x64, chunk, dask)
    except (StudyError, SiteError) as exc:
        fail(str(exc))
    montecarlo.report(result, out)
