"""``twin inventory``: start a site file from a real cluster's shape."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from services.cli.errors import console, fail
from services.cli.extras import need
from services.cli.files import write_atomic

if TYPE_CHECKING:
    from services.inventory import Inventory

inventory_app = typer.Typer(help="Import a real cluster's inventory.", no_args_is_help=True)


@inventory_app.command("from-k8s")
def from_k8s(
    out: Annotated[Path, typer.Option(help="site file to write (YAML)")],
    context: Annotated[
        str | None, typer.Option(help="kubeconfig context (default: current)")
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    ] = None,
    nodes_json: Annotated[
        Path | None, typer.Option(help="read a NodeList (kubectl get nodes -o json) instead")
    ] = None,
    site_id: Annotated[str | None, typer.Option(help="site name to write")] = None,
    base: Annotated[
        Path | None,
        typer.Option(help="site to merge into: write a whole site file, not just the halls"),
    ] = None,
    rack_label: Annotated[
        list[str] | None,
        typer.Option(help="node label naming the rack (repeatable; first present wins)"),
    ] = None,
    row_label: Annotated[str, typer.Option(help="node label naming the row (one CDU)")] = (
        "topology.kubernetes.io/zone"
    ),
    product: Annotated[
        list[str] | None,
        typer.Option(help="extra GPU product mapping, e.g. NVIDIA-GB200-XL=GB200_NVL72"),
    ] = None,
    skip_unknown: Annotated[
        bool, typer.Option(help="skip nodes with an unknown GPU product instead of failing")
    ] = False,
) -> None:
    """Read a cluster's Nodes and write the compute section (halls) of a site file."""
    from services import inventory as inv_mod
    from twin_core.site import SiteError

    if nodes_json is not None and (context or kubeconfig):
        fail("give --nodes-json or a cluster (--context/--kubeconfig), not both")
    products = dict(inv_mod.PRODUCTS)
    for item in product or []:
        name, sep, rack_type = item.partition("=")
        if not sep or not name or not rack_type:
            fail(f"--product {item!r}: expected PRODUCT=RACK_TYPE, e.g. NVIDIA-GB200=GB200_NVL72")
        products[name] = rack_type
    options = inv_mod.Options(
        rack_labels=tuple(rack_label) if rack_label else inv_mod.RACK_LABELS,
        row_label=row_label,
        products=products,
        skip_unknown=skip_unknown,
    )
    need("kubernetes", "k8s", "twin inventory from-k8s")
    try:
        if nodes_json is not None:
            nodes, source = inv_mod.read_nodes_json(nodes_json), f"file {nodes_json}"
        else:
            nodes, source = inv_mod.list_cluster_nodes(context, kubeconfig)
        inv = inv_mod.build_inventory(nodes, inv_mod.rack_gpus(base), options)
        if base is not None:
            text = inv_mod.site_yaml(inv, source, base, site_id)
            inv_mod.validate(text, base.parent.resolve())
        else:
            text = inv_mod.compute_yaml(inv, source, site_id, None)
            # A compute section alone is not a site: check it inside the seeded site, on a
            # copy so that base-only warnings (workload scaling) stay out of this output.
            check = dataclasses.replace(inv, warnings=list(inv.warnings))
            base_path = inv_mod.DEFAULT_BASE
            inv_mod.validate(inv_mod.site_yaml(check, source, base_path), base_path.parent)
    except (inv_mod.InventoryError, SiteError) as exc:
        fail(str(exc))
    try:
        write_atomic(out, text)
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}")
    _print_summary(inv, source, out)


def _print_summary(inv: Inventory, source: str, out: Path) -> None:
    from services.inventory import summary_rows

    for warning in inv.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    table = Table(title=f"inventory from {escape(source)}")
    for column in ("rack type", "racks", "partial", "nodes", "GPUs seen", "GPUs in twin"):
        table.add_column(column, justify="left" if column == "rack type" else "right")
    table.add_column("cordoned", justify="right")
    for row in summary_rows(inv):
        table.add_row(*(str(v) for v in row))
    Console().print(table)
    Console().print(
        f"wrote {out}: {len(inv.halls)} halls, {inv.rack_count} racks "
        f"({len(inv.cpu_only)} nodes without GPUs skipped)",
        soft_wrap=True,
    )
