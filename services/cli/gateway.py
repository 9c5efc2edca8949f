"""``twin gateway``: check a point map against a site; read a running gateway's stats."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from services.cli.errors import fail, seconds
from services.cli.extras import need

gateway_app = typer.Typer(help="The field telemetry gateway.", no_args_is_help=True)
SHOWN = 10  # entries listed per problem; the rest are counted


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{title} ({len(items)}): {shown}{more}"


def _read_points(path: Path) -> list[tuple[str, str]]:
    """``SOURCE POINT`` per line (blank lines and ``#`` comments skipped)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"--points: {path}: cannot read ({exc.__class__.__name__})")
    points = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            fail(f"--points: {path}:{number}: expected 'SOURCE POINT'")
        points.append((parts[0], parts[1].strip()))
    return points


@gateway_app.command("check")
def check_cmd(
    point_map: Annotated[Path, typer.Argument(help="point map (YAML)")],
    site: Annotated[str, typer.Option(help="seeded site name or site file")],
    points: Annotated[
        Path | None,
        typer.Option(help="the points a site exposes, 'SOURCE POINT' per line: lists unknown ones"),
    ] = None,
) -> None:
    """Validate a point map against a site: unknown entities and points (exit 1), and the
    site's entities no rule feeds (the model's values are used there)."""
    from services.gateway.check import check
    from services.gateway.pointmap import PointMapError, load_pointmap
    from services.scenario import site_by_name_or_file
    from twin_core.site import SiteError

    try:
        pm = load_pointmap(point_map)
    except PointMapError as exc:
        fail(str(exc))
    try:
        the_site = site_by_name_or_file(site, "--site")
    except SiteError as exc:
        fail(str(exc))
    report = check(pm, the_site, _read_points(points) if points else None)
    out = Console(highlight=False, soft_wrap=True)
    out.print(
        escape(
            f"{point_map}: {len(pm.points)} rules, {len(pm.sources)} sources; site "
            f"{the_site.name}: {the_site.cdu_count} CDUs, {the_site.rack_count} racks"
        )
    )
    if report.unknown_entities:
        out.print(escape(_listing("unknown entities", report.unknown_entities)))
    if report.unknown_points:
        out.print(escape(_listing("unknown points", report.unknown_points)))
    for quantity, missing in report.unmapped_entities.items():
        out.print(escape(_listing(f"unmapped {quantity}", missing)))
    if report.not_assimilated:
        out.print(escape(_listing("not used by the twin yet", report.not_assimilated)))
    out.print("ok" if report.ok else "not ok")
    raise typer.Exit(0 if report.ok else 1)


def _bus_config():
    from services.runtime.config import ConfigError, RuntimeConfig

    try:
        return RuntimeConfig.from_env()
    except ConfigError as exc:
        fail(str(exc))


async def _connect(config, timeout_s: float):
    """The bus of TWIN_NATS_URL and the other TWIN_NATS_* settings, without retrying."""
    from services.runtime.service import _inbox_prefix, connect_bus

    async def noop() -> None:
        return None

    # As a NATS user (e.g. `observer` for stats), replies come on that identity's own
    # inbox prefix, the only one it may read (services/bus_permissions.py).
    prefix = _inbox_prefix(config.nats_user) if config.nats_user else None
    return await connect_bus(
        config, name="twin-cli", on_disconnect=noop, on_reconnect=noop,
        max_reconnect_attempts=0, connect_deadline_s=timeout_s, inbox_prefix=prefix,
    )  # fmt: skip


def _site_token(site: str) -> str:
    from services.runtime import bus

    try:
        bus.telemetry_subject(site)
    except ValueError as exc:
        fail(f"--site: {exc}")
    return site


@gateway_app.command("record")
def record_cmd(
    out: Annotated[Path, typer.Option(help="Parquet file to write")],
    site: Annotated[str, typer.Option(help="site id")] = "fairwater-wi",
    duration: Annotated[
        str | None, typer.Option(help="stop after, e.g. 10m (default: Ctrl-C)")
    ] = None,
    batches: Annotated[int | None, typer.Option(min=1, help="stop after this many batches")] = None,
) -> None:
    """Capture the normalised measurements on telemetry.<site>.> to Parquet."""
    from services.gateway.record import record

    duration_s = seconds("--duration", duration or None)
    if not out.parent.is_dir():
        fail(f"--out: {out.parent} is not a folder")
    config, site = _bus_config(), _site_token(site)

    async def main() -> int:
        nc = await _connect(config, 10.0)
        try:
            return await record(nc, site, out, duration_s=duration_s, max_batches=batches)
        finally:
            await nc.close()

    try:
        count = asyncio.run(main())
    except KeyboardInterrupt:  # the file was completed by record()'s cleanup
        count = -1
    except Exception as exc:
        fail(f"record: {exc.__class__.__name__} {exc}".strip())
    Console(stderr=True).print(escape(f"{out}: {count if count >= 0 else 'all'} measurements"))


def replay_cmd(
    recording: Annotated[Path, typer.Argument(help="a recording (twin gateway record)")],
    speed: Annotated[float, typer.Option(min=0, help="x real time; 0 = as fast as possible")] = 1.0,
    site: Annotated[str, typer.Option(help="site id to publish for")] = "fairwater-wi",
) -> None:
    """Play a recording back onto telemetry.<site>.<source> with its timing."""
    from services.gateway.record import RecordingError, read_recording, replay

    try:
        table = read_recording(recording)
    except RecordingError as exc:
        fail(str(exc))
    config, site = _bus_config(), _site_token(site)

    async def main() -> int:
        nc = await _connect(config, 10.0)
        try:
            return await replay(nc, site, table, speed)
        finally:
            await nc.close()

    try:
        sent = asyncio.run(main())
    except Exception as exc:
        fail(f"replay: {exc.__class__.__name__} {exc}".strip())
    Console(stderr=True).print(f"{sent} batches, {table.num_rows} measurements replayed")


@gateway_app.command("hosts")
def hosts_cmd(
    nodes_json: Annotated[
        Path | None, typer.Option(help="read a NodeList (kubectl get nodes -o json)")
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context")] = None,
    kubeconfig: Annotated[Path | None, typer.Option(help="kubeconfig file")] = None,
    skip_unknown: Annotated[
        bool, typer.Option(help="skip nodes with an unknown GPU product instead of failing")
    ] = False,
) -> None:
    """Print the point map's host table (host -> rack slot, CDU) from a cluster's Nodes,
    numbered like the halls `twin inventory from-k8s` writes (default labels)."""
    from services import inventory as inv_mod
    from services.gateway.hosts import hosts_from_inventory, hosts_yaml

    if nodes_json is not None and (context or kubeconfig):
        fail("give --nodes-json or a cluster (--context/--kubeconfig), not both")
    need("kubernetes", "k8s", "twin gateway hosts")
    try:
        if nodes_json is not None:
            nodes, source = inv_mod.read_nodes_json(nodes_json), f"file {nodes_json}"
        else:
            nodes, source = inv_mod.list_cluster_nodes(context, kubeconfig)
        options = inv_mod.Options(skip_unknown=skip_unknown)
        inv = inv_mod.build_inventory(nodes, inv_mod.rack_gpus(None), options)
    except inv_mod.InventoryError as exc:
        fail(str(exc))
    typer.echo(hosts_yaml(hosts_from_inventory(inv), source), nl=False)


@gateway_app.command("stats")
def stats_cmd(
    site: Annotated[str, typer.Option(help="site id")] = "fairwater-wi",
    timeout: Annotated[str, typer.Option(help="seconds to wait for the answer")] = "5s",
) -> None:
    """A running gateway's counters (NATS request on twin.<site>.gateway.stats; the bus
    from TWIN_NATS_URL and the other TWIN_NATS_* settings)."""
    from google.protobuf import json_format, struct_pb2

    from services.gateway.service import stats_subject

    timeout_s = seconds("--timeout", timeout) or 0.0  # a bare number is seconds, as before
    config, subject = _bus_config(), stats_subject(_site_token(site))

    async def ask() -> struct_pb2.Struct:
        nc = await _connect(config, timeout_s)
        try:
            reply = await nc.request(subject, b"", timeout=timeout_s)
        finally:
            await nc.close()
        return struct_pb2.Struct.FromString(reply.data)

    try:
        stats = asyncio.run(ask())
    except Exception as exc:  # no bus, or no gateway answering: one line
        fail(f"no gateway stats on {subject}: {exc.__class__.__name__} {exc}".strip())
    flat = json_format.MessageToDict(stats)
    out = Console(highlight=False)
    for key, value in flat.items():
        if isinstance(value, dict):
            for reason, count in value.items():
                out.print(f"{key}.{reason}: {int(count)}")
        else:
            out.print(f"{key}: {int(value)}")
