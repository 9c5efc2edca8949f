"""A Kubernetes NodeList -> the compute section (``halls``) of a site file.

The site schema describes compute as halls of CDUs with the same number of racks of one
rack type each. A cluster knows nodes (compute trays); the NVIDIA GPU operator labels
them with the GPU product and the NVLink domain (``nvidia.com/gpu.clique``), which on an
NVL72 system is one rack. So: nodes -> racks (rack label) -> rows (row label, one CDU per
row) -> halls (the rows of one rack type with the same rack count).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from twin_core.site import Site, build_site, load_catalog

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
COUNT_LABEL = "nvidia.com/gpu.count"
CLIQUE_LABEL = "nvidia.com/gpu.clique"
RACK_LABELS = ("topology.kubernetes.io/rack", CLIQUE_LABEL)
ROW_LABEL = "topology.kubernetes.io/zone"
PRODUCTS = {"NVIDIA-GB200": "GB200_NVL72", "NVIDIA-GB300": "GB300_NVL72"}
DEFAULT_BASE = Path(__file__).resolve().parent.parent / "scenarios" / "fairwater-wi.yaml"
NO_ROW = "no-row"
PAGE = 500


class InventoryError(ValueError):
    """Nodes that cannot be read or mapped; ``str()`` is one readable line."""


@dataclass(frozen=True)
class Options:
    rack_labels: tuple[str, ...] = RACK_LABELS
    row_label: str = ROW_LABEL
    products: Mapping[str, str] = field(default_factory=lambda: dict(PRODUCTS))
    skip_unknown: bool = False


@dataclass
class Rack:
    key: str  # "label=value", or "<row>/<product>#i" for nodes with no rack label
    rack_type: str
    product: str
    row: str
    capacity: int  # GPUs of a whole rack of this type (catalog)
    nodes: list[str] = field(default_factory=list)
    gpus: int = 0

    @property
    def partial(self) -> bool:
        return self.gpus < self.capacity

    @property
    def counted(self) -> bool:
        # Rounded to the nearest whole rack: the schema has no rack with fewer GPUs than
        # its type, and a hall's racks all share one type and count.
        return 2 * self.gpus >= self.capacity


@dataclass
class Hall:
    name: str
    rack_type: str
    product: str
    rows: list[str]
    racks_per_cdu: int
    racks: list[Rack]


@dataclass
class Inventory:
    options: Options
    nodes_read: int = 0
    racks: list[Rack] = field(default_factory=list)
    halls: list[Hall] = field(default_factory=list)
    cpu_only: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    cordoned: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def rack_count(self) -> int:
        return sum(len(h.rows) * h.racks_per_cdu for h in self.halls)


# --------------------------------------------------------------------------- reading


def node_list(data: Any, where: str) -> list[Any]:
    """Items of a NodeList in the API's JSON format, as the client's own V1Node models."""
    from kubernetes.client import ApiClient

    if not isinstance(data, dict) or data.get("kind") != "NodeList":
        raise InventoryError(f"{where}: not a NodeList (kind: {_kind(data)})")
    if data.get("apiVersion") != "v1":
        raise InventoryError(f"{where}: apiVersion {data.get('apiVersion')!r}, expected 'v1'")
    try:
        # The private deserializer takes the parsed dict and has kept its (data, klass)
        # signature across client releases; the public deserialize() changed from a
        # response object (v31) to (text, type, content_type) (v33+).
        nodes = ApiClient()._ApiClient__deserialize(data, "V1NodeList")  # type: ignore[attr-defined]
    except (ValueError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()
        raise InventoryError(f"{where}: not a valid NodeList ({' '.join(first[:2])})") from None
    return list(nodes.items or [])


def _kind(data: Any) -> str:
    return repr(data.get("kind")) if isinstance(data, dict) else type(data).__name__


def read_nodes_json(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InventoryError(f"{path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InventoryError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"
        ) from None
    return node_list(data, str(path))


def list_cluster_nodes(
    context: str | None, kubeconfig: Path | None, timeout_s: float = 30
) -> tuple[list[Any], str]:
    """All Nodes of a cluster (paged), and a description of where they came from."""
    from kubernetes import config
    from kubernetes.client import ApiClient, Configuration, CoreV1Api
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError, MaxRetryError

    config_file = str(kubeconfig) if kubeconfig else None
    cfg = Configuration()
    try:
        config.load_kube_config(config_file=config_file, context=context, client_configuration=cfg)
        if context is None:
            context = config.list_kube_config_contexts(config_file)[1]["name"]
    except (config.ConfigException, OSError, KeyError, TypeError) as exc:
        raise InventoryError(f"kubeconfig {config_file or '(default)'}: {exc}") from None
    cfg.retries = 1  # fail fast; urllib3's retries would each log a warning line
    source = f"context {context} (server {cfg.host})"
    api = CoreV1Api(ApiClient(cfg))
    items: list[Any] = []
    token: str | None = None
    try:
        while True:
            page = api.list_node(limit=PAGE, _continue=token, _request_timeout=timeout_s)
            items += page.items or []
            meta = page.metadata
            # Field name differs across client releases (v31 `_continue`, v33+ `var_continue`).
            token = getattr(meta, "var_continue", None) or getattr(meta, "_continue", None)
            if not token:
                return items, source
    except ApiException as exc:
        raise InventoryError(f"{source}: list nodes: {exc.status} {exc.reason}") from None
    except (HTTPError, OSError) as exc:
        reason = exc.reason if isinstance(exc, MaxRetryError) else exc
        text = str(reason).rsplit(">: ", 1)[-1]  # drop urllib3's "<Connection object at 0x..>"
        raise InventoryError(f"{source}: cannot reach the API server ({text})") from None


# --------------------------------------------------------------------------- mapping


def _int(node: str, where: str, text: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise InventoryError(f"node {node}: {where}={text!r} is not a whole number") from None
    if value < 0:
        raise InventoryError(f"node {node}: {where}={text!r} is negative")
    return value


def _rack_type(product: str, products: Mapping[str, str]) -> str | None:
    # GPU feature discovery appends "-SHARED" (time slicing) or "-MIG-..." to the product.
    for known, rack_type in products.items():
        if product == known or product.startswith(known + "-"):
            return rack_type
    return None


def build_inventory(
    nodes: Iterable[Any], rack_gpus: Mapping[str, int], options: Options = Options()
) -> Inventory:
    """Group GPU nodes into racks, rows and halls; ``rack_gpus`` is GPUs per rack type."""
    inv = Inventory(options)
    racks: dict[str, Rack] = {}
    rows_seen: dict[str, Counter[str]] = defaultdict(Counter)
    pooled: dict[tuple[str, str, str], list[tuple[str, int]]] = defaultdict(list)
    for node in nodes:
        inv.nodes_read += 1
        name = node.metadata.name
        labels = node.metadata.labels or {}
        capacity = (node.status.capacity if node.status else None) or {}
        if GPU_RESOURCE in capacity:
            gpus = _int(name, f"status.capacity {GPU_RESOURCE}", capacity[GPU_RESOURCE])
            if COUNT_LABEL in labels and labels[COUNT_LABEL] != str(gpus):
                inv.warnings.append(
                    f"node {name}: {COUNT_LABEL}={labels[COUNT_LABEL]} but capacity "
                    f"{GPU_RESOURCE}={gpus}; using the capacity"
                )
        else:  # device plugin not (yet) reporting: trust feature discovery's count
            gpus = _int(name, COUNT_LABEL, labels.get(COUNT_LABEL, "0"))
        if gpus == 0:
            inv.cpu_only.append(name)
            continue
        product: str = labels.get(PRODUCT_LABEL) or ""  # "": no label (or an empty one)
        rack_type = _rack_type(product, options.products) if product else None
        if rack_type is None or rack_type not in rack_gpus:
            if not product:
                message = f"node {name}: {gpus} GPUs but no {PRODUCT_LABEL} label"
            elif rack_type is None:
                known = ", ".join(sorted(options.products))
                message = (
                    f"node {name}: unknown GPU product {PRODUCT_LABEL}={product} (known: {known})"
                )
            else:
                known = ", ".join(sorted(rack_gpus))
                message = (
                    f"node {name}: {PRODUCT_LABEL}={product} maps to unknown rack type "
                    f"{rack_type} (known: {known})"
                )
            if not options.skip_unknown:
                raise InventoryError(message)
            inv.unknown.append(name)
            inv.warnings.append(f"skipped {message}")
            continue
        if node.spec and node.spec.unschedulable:
            inv.cordoned.append(name)  # still racked, cooled and powered: counted
        row = labels.get(options.row_label, NO_ROW)
        rack_label = next((k for k in options.rack_labels if labels.get(k)), None)
        if rack_label is None:
            pooled[(row, rack_type, product)].append((name, gpus))
            continue
        key = f"{rack_label}={labels[rack_label]}"
        rack = racks.setdefault(key, Rack(key, rack_type, product, row, rack_gpus[rack_type]))
        if rack.rack_type != rack_type:
            raise InventoryError(
                f"rack {key}: node {name} is {PRODUCT_LABEL}={product}, "
                f"node {rack.nodes[0]} is {rack.product}"
            )
        rack.nodes.append(name)
        rack.gpus += gpus
        rows_seen[key][row] += 1
    for rack in racks.values():
        if rack.gpus > rack.capacity:
            raise InventoryError(
                f"rack {rack.key}: {rack.gpus} GPUs, more than the {rack.capacity} "
                f"of a {rack.rack_type} rack"
            )
        rack.row = rows_seen[rack.key].most_common(1)[0][0]
        if len(rows_seen[rack.key]) > 1:
            inv.warnings.append(
                f"rack {rack.key}: nodes in several rows ({', '.join(sorted(rows_seen[rack.key]))})"
                f"; placed in {options.row_label}={rack.row}"
            )
    inv.racks = sorted(racks.values(), key=lambda r: (r.rack_type, r.row, r.key))
    inv.racks += _pool(inv, pooled, rack_gpus)
    for rack in inv.racks:
        if rack.partial:
            what = f"counted as a whole {rack.rack_type} rack" if rack.counted else "left out"
            inv.warnings.append(
                f"partial rack {rack.key}: {rack.gpus} of {rack.capacity} GPUs "
                f"({len(rack.nodes)} nodes); {what}"
            )
    if inv.cordoned:
        inv.warnings.append(f"{len(inv.cordoned)} cordoned nodes counted: {_names(inv.cordoned)}")
    inv.halls = _halls([r for r in inv.racks if r.counted])
    if not inv.halls:
        raise InventoryError(
            f"no GPU racks found in {inv.nodes_read} nodes ({len(inv.cpu_only)} without GPUs, "
            f"{len(inv.unknown)} unknown products, partial racks under half a rack left out)"
        )
    return inv


def _pool(
    inv: Inventory,
    pooled: Mapping[tuple[str, str, str], list[tuple[str, int]]],
    rack_gpus: Mapping[str, int],
) -> list[Rack]:
    """Nodes with no rack label fill whole racks of their type in node-name order."""
    racks: list[Rack] = []
    for (row, rack_type, product), nodes in sorted(pooled.items()):
        inv.warnings.append(
            f"{len(nodes)} {product} nodes in {row} have none of the labels "
            f"{', '.join(inv.options.rack_labels)}; grouped in name order into racks of "
            f"{rack_gpus[rack_type]} GPUs"
        )
        rack: Rack | None = None
        for name, gpus in sorted(nodes):
            if rack is None or rack.gpus + gpus > rack.capacity:
                key = f"{row}/{product}#{len(racks) + 1}"
                rack = Rack(key, rack_type, product, row, rack_gpus[rack_type])
                racks.append(rack)
            rack.nodes.append(name)
            rack.gpus += gpus
    return racks


def _halls(racks: list[Rack]) -> list[Hall]:
    per_row: dict[tuple[str, str], list[Rack]] = defaultdict(list)
    for rack in racks:
        per_row[(rack.rack_type, rack.row)].append(rack)
    # One hall per (rack type, racks per row): the schema gives every CDU of a hall the
    # same rack count and type, and a row is one CDU.
    shapes: dict[tuple[str, int], list[str]] = defaultdict(list)
    for (rack_type, row), row_racks in sorted(per_row.items()):
        shapes[(rack_type, len(row_racks))].append(row)
    halls = []
    for (rack_type, count), rows in sorted(shapes.items(), key=lambda s: (s[0][0], -s[0][1])):
        members = [r for row in rows for r in per_row[(rack_type, row)]]
        short = rack_type.split("_")[0].lower()
        name = f"{rows[0]}-{short}" if len(rows) == 1 else f"{short}-{len(rows)}-rows-of-{count}"
        halls.append(Hall(name, rack_type, members[0].product, rows, count, members))
    return halls


def _names(names: list[str], most: int = 5) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(sorted(names)[:most]) + more


# --------------------------------------------------------------------------- writing


def compute_section(inv: Inventory) -> dict[str, Any]:
    """The ``halls`` list as the site schema takes it."""
    return {
        "halls": [
            {
                "name": h.name,
                "cdus": len(h.rows),
                "racks_per_cdu": h.racks_per_cdu,
                "rack_type": h.rack_type,
            }
            for h in inv.halls
        ]
    }


def halls_yaml(inv: Inventory) -> str:
    """The ``halls:`` block, every number with the nodes and labels it came from."""
    opts = inv.options
    lines = ["halls:                     # imported: one hall per rack type and racks per row"]
    for h in inv.halls:
        nodes = sum(len(r.nodes) for r in h.racks)
        gpus = sum(r.gpus for r in h.racks)
        partial = sum(r.partial for r in h.racks)
        rack_source = _rack_source(h.racks)
        lines += [
            f"  - name: {h.name}",
            f"    cdus: {len(h.rows)}  # {opts.row_label} values {_names(h.rows, 3)}: "
            "one CDU per row (assumed)",
            f"    racks_per_cdu: {h.racks_per_cdu}  # from {len(h.racks)} racks ({rack_source}): "
            f"{nodes} nodes, {gpus} GPUs with {PRODUCT_LABEL}={h.product}"
            + (f"; {partial} partial racks rounded to whole" if partial else ""),
            f"    rack_type: {h.rack_type}  # {PRODUCT_LABEL}={h.product}",
        ]
    return "\n".join(lines) + "\n"


def _rack_source(racks: list[Rack]) -> str:
    labels = sorted({r.key.split("=", 1)[0] for r in racks if "=" in r.key})
    pooled = sum("=" not in r.key for r in racks)
    parts = [f"{label} values" for label in labels]
    if pooled:
        parts.append(f"{pooled} grouped from unlabelled nodes")
    return ", ".join(parts)


def header(inv: Inventory, source: str, now: datetime | None = None) -> str:
    when = (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
    gpu_nodes = sum(len(r.nodes) for r in inv.racks)
    lines = [
        f"# Imported by `twin inventory from-k8s` from {source} at {when}.",
        f"# {inv.nodes_read} nodes read: {gpu_nodes} GPU nodes in {len(inv.racks)} racks, "
        f"{len(inv.cpu_only)} without GPUs skipped, {len(inv.unknown)} unknown GPU products "
        f"skipped, {len(inv.cordoned)} cordoned (counted).",
        f"# The twin has {inv.rack_count} racks; partial racks (fewer GPUs than the rack type) "
        "are rounded to the nearest whole rack.",
    ]
    lines += [f"# warning: {w}" for w in inv.warnings]
    return "\n".join(lines) + "\n"


def compute_yaml(inv: Inventory, source: str, site_id: str | None, now: datetime | None) -> str:
    """The compute section on its own: header, optional name, halls."""
    name = f"name: {site_id}  # --site-id\n" if site_id else ""
    return header(inv, source, now) + name + halls_yaml(inv)


def _replace_block(text: str, key: str, block: str) -> str:
    """Swap one top-level YAML key (with its indented lines) in ``text``, keeping the rest
    of the file and its source comments as written."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{key}:")), None)
    if start is None:
        return text.rstrip("\n") + "\n" + block
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def _fit_workload(inv: Inventory, base: dict[str, Any], base_name: str) -> str | None:
    """The base's workload scaled to the cluster's racks, or None when it already fits."""
    workload = base.get("workload") or {}
    kinds = {k: list(workload.get(k) or []) for k in ("training", "inference")}
    assigned = sum(j.get("racks", 0) for jobs in kinds.values() for j in jobs)
    if assigned <= inv.rack_count:
        return None
    lines = ["workload:"]
    for kind, jobs in kinds.items():
        kept = []
        for job in jobs:
            racks = job["racks"] * inv.rack_count // assigned
            if racks == 0:
                inv.warnings.append(f"workload {job['name']} from {base_name} dropped: 0 racks")
                continue
            flow = yaml.safe_dump(
                {**job, "racks": racks}, default_flow_style=True, sort_keys=False, width=10_000
            ).strip()
            inv.warnings.append(
                f"workload {job['name']} from {base_name}: racks scaled {job['racks']} -> {racks}"
            )
            kept.append(
                f"    - {flow}  # from {base_name}: racks scaled {job['racks']} -> {racks} "
                f"(the base assigns {assigned}, the cluster has {inv.rack_count})"
            )
        if kept:
            lines += [f"  {kind}:", *kept]
    return "\n".join(lines if len(lines) > 1 else ["workload: {}"]) + "\n"


def site_yaml(
    inv: Inventory,
    source: str,
    base: Path,
    site_id: str | None = None,
    now: datetime | None = None,
) -> str:
    """A whole site file: ``base`` with its halls (and name) replaced by the cluster's."""
    try:
        text = base.read_text()
        doc = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise InventoryError(f"--base {base}: cannot read ({exc})") from None
    if not isinstance(doc, dict):
        raise InventoryError(f"--base {base}: top level must be a mapping")
    text = _replace_block(text, "halls", halls_yaml(inv))
    if site_id:
        text = _replace_block(text, "name", f"name: {site_id}  # --site-id\n")
    if (workload := _fit_workload(inv, doc, base.name)) is not None:
        text = _replace_block(text, "workload", workload)
    note = (
        f"# Compute imported; everything else from {base} (sized for that site, not for "
        "this cluster).\n"
    )
    return header(inv, source, now) + note + "#\n" + text


def rack_gpus(base: Path | None) -> dict[str, int]:
    """GPUs per rack of every rack type the catalog (and the base site) defines."""
    types = load_catalog()
    if base is not None:
        try:
            doc = yaml.safe_load(base.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InventoryError(f"--base {base}: cannot read ({exc})") from None
        extra = doc.get("rack_types") if isinstance(doc, dict) else None
        for name, fields in (extra or {}).items():
            types[name] = {**types.get(name, {}), **(fields or {})}
    return {name: int(t["gpus"]) for name, t in types.items() if "gpus" in t}


def validate(text: str, base_dir: Path) -> Site:
    """The written site text, loaded as ``twin`` will load it (raises ``SiteError``)."""
    return build_site(yaml.safe_load(text), base_dir=base_dir)


def summary_rows(inv: Inventory) -> list[tuple[str, int, int, int, int, int, int]]:
    """Per rack type: racks in the twin, partial racks, nodes, GPUs seen, GPUs in the twin,
    cordoned nodes."""
    rows = []
    cordoned = set(inv.cordoned)
    for rack_type in sorted({r.rack_type for r in inv.racks}):
        racks = [r for r in inv.racks if r.rack_type == rack_type]
        counted = [r for r in racks if r.counted]
        nodes = [n for r in racks for n in r.nodes]
        rows.append(
            (
                rack_type,
                len(counted),
                sum(r.partial for r in racks),
                len(nodes),
                sum(r.gpus for r in racks),
                sum(r.capacity for r in counted),
                sum(n in cordoned for n in nodes),
            )
        )
    return rows
