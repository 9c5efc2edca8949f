"""`twin inventory from-k8s`: a NodeList (real API JSON) -> the halls of a site file."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from services.cli.main import app
from services.inventory import (
    InventoryError,
    Options,
    build_inventory,
    compute_section,
    compute_yaml,
    node_list,
    rack_gpus,
    read_nodes_json,
    site_yaml,
    summary_rows,
)
from twin_core.site import load_site

HERE = Path(__file__).parent
CLUSTER = HERE / "k8s" / "small-cluster.json"
MALFORMED = HERE / "k8s" / "malformed.json"
SMALL = HERE / "sites" / "small.yaml"
GB200_RACK_2 = "0f3b9c1e-5d2a-4e8f-9b7c-1a2d3e4f5a6b.2"

# The fixture: zone-a has two full GB200 cliques (one node cordoned), zone-b one GB300
# rack (topology.kubernetes.io/rack label) and a GB200 clique of 10 trays (40 GPUs), plus
# three nodes without GPUs.
EXPECTED_HALLS = [
    {"name": "zone-a-gb200", "cdus": 1, "racks_per_cdu": 2, "rack_type": "GB200_NVL72"},
    {"name": "zone-b-gb200", "cdus": 1, "racks_per_cdu": 1, "rack_type": "GB200_NVL72"},
    {"name": "zone-b-gb300", "cdus": 1, "racks_per_cdu": 1, "rack_type": "GB300_NVL72"},
]


def raw() -> dict[str, Any]:
    return json.loads(CLUSTER.read_text())


def inventory(data: dict[str, Any] | None = None, **options: Any):
    nodes = node_list(data, "test") if data is not None else read_nodes_json(CLUSTER)
    return build_inventory(nodes, rack_gpus(None), Options(**options))


def test_counts_racks_rows_and_partial_racks() -> None:
    inv = inventory()
    assert compute_section(inv) == {"halls": EXPECTED_HALLS}
    assert inv.nodes_read == 67
    assert sorted(inv.cpu_only) == ["cp-1", "cp-2", "cpu-worker-1"]
    assert inv.cordoned == ["gb200-a1-t07"]
    assert inv.rack_count == 4
    # rack type, racks, partial, nodes, GPUs seen, GPUs in the twin, cordoned
    assert summary_rows(inv) == [
        ("GB200_NVL72", 3, 1, 46, 184, 216, 1),
        ("GB300_NVL72", 1, 0, 18, 72, 72, 0),
    ]
    assert any(
        w.startswith("partial rack nvidia.com/gpu.clique=") and "40 of 72 GPUs (10 nodes)" in w
        for w in inv.warnings
    )


def test_partial_rack_under_half_is_left_out() -> None:
    data = raw()
    keep = ("gb200-b2-t01", "gb200-b2-t02")  # 8 of the partial clique's 40 GPUs
    data["items"] = [
        i
        for i in data["items"]
        if not i["metadata"]["name"].startswith("gb200-b2-") or i["metadata"]["name"] in keep
    ]
    inv = inventory(data)
    assert [h["name"] for h in compute_section(inv)["halls"]] == ["zone-a-gb200", "zone-b-gb300"]
    assert any("8 of 72 GPUs (2 nodes); left out" in w for w in inv.warnings)


def test_rows_with_the_same_shape_share_a_hall() -> None:
    data = raw()
    for item in data["items"]:
        labels = item["metadata"]["labels"]
        if labels.get("nvidia.com/gpu.clique") == GB200_RACK_2:
            labels["topology.kubernetes.io/zone"] = "zone-c"
    halls = compute_section(inventory(data))["halls"]
    assert halls[0] == {
        "name": "gb200-3-rows-of-1",
        "cdus": 3,
        "racks_per_cdu": 1,
        "rack_type": "GB200_NVL72",
    }


def test_rack_label_option_and_unlabelled_nodes() -> None:
    # Only topology.kubernetes.io/rack: the GB200 nodes have none, so they fill racks of
    # 72 GPUs per row in name order (36 zone-a trays -> 2 racks; 10 zone-b -> 1 partial).
    inv = inventory(rack_labels=("topology.kubernetes.io/rack",))
    assert compute_section(inv) == {"halls": EXPECTED_HALLS}
    assert any("none of the labels topology.kubernetes.io/rack" in w for w in inv.warnings)


def test_output_loads_with_the_site_loader(tmp_path: Path) -> None:
    inv = inventory()
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml(inv, "file test", SMALL, site_id="imported"))
    site = load_site(path)
    assert site.name == "imported"
    assert (site.rack_count, site.gpu_count) == (4, 288)
    assert [h.model_dump() for h in site.halls] == EXPECTED_HALLS
    # small.yaml assigns 8 racks; scaled to the cluster's 4.
    assert [j.racks for j in site.workload.training] == [4]
    text = path.read_text()
    assert text.startswith("# Imported by `twin inventory from-k8s` from file test at ")
    assert "# from 2 racks (nvidia.com/gpu.clique values): 36 nodes, 144 GPUs" in text
    assert "cooling:\n  supply_c: 30                 # estimate" in text  # base comments kept


def test_compute_section_alone_is_commented_yaml() -> None:
    text = compute_yaml(inventory(), "context prod (server https://k8s:6443)", "prod", None)
    assert yaml.safe_load(text) == {"name": "prod", "halls": EXPECTED_HALLS}
    assert "from context prod (server https://k8s:6443) at " in text.splitlines()[0]
    for line in text.splitlines():
        if any(key in line for key in ("cdus:", "racks_per_cdu:")):
            assert "  # " in line, line  # every number says where it came from


def test_unknown_product_names_node_and_label() -> None:
    data = raw()
    data["items"][0]["metadata"]["labels"]["nvidia.com/gpu.product"] = "NVIDIA-H100-80GB-HBM3"
    with pytest.raises(InventoryError) as err:
        inventory(data)
    assert str(err.value) == (
        "node gb200-a1-t01: unknown GPU product nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3 "
        "(known: NVIDIA-GB200, NVIDIA-GB300)"
    )
    inv = inventory(copy.deepcopy(data), skip_unknown=True)
    assert inv.unknown == ["gb200-a1-t01"]
    assert summary_rows(inv)[0][:3] == ("GB200_NVL72", 3, 2)  # its rack is now partial


def test_gpu_feature_discovery_suffixes_map_to_the_rack_type() -> None:
    data = raw()
    for item in data["items"]:
        labels = item["metadata"]["labels"]
        if labels.get("nvidia.com/gpu.product") == "NVIDIA-GB200":
            labels["nvidia.com/gpu.product"] = "NVIDIA-GB200-SHARED"
    assert compute_section(inventory(data)) == {"halls": EXPECTED_HALLS}


def test_not_a_node_list() -> None:
    with pytest.raises(InventoryError, match=r"^test: not a NodeList \(kind: 'PodList'\)$"):
        node_list({"apiVersion": "v1", "kind": "PodList", "items": []}, "test")
    with pytest.raises(InventoryError, match=r"^test: not a valid NodeList"):
        node_list({"apiVersion": "v1", "kind": "NodeList", "items": "nodes"}, "test")


runner = CliRunner()


def test_cli_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "cluster.yaml"
    args = ["inventory", "from-k8s", "--nodes-json", str(CLUSTER), "--site-id", "lab"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text()) == {"name": "lab", "halls": EXPECTED_HALLS}
    assert "GB200_NVL72" in result.stdout and "wrote" in result.stdout
    full = tmp_path / "site.yaml"
    result = runner.invoke(app, [*args, "--base", str(SMALL), "--out", str(full)])
    assert result.exit_code == 0, result.output
    assert load_site(full).rack_count == 4


def test_cli_malformed_json_is_one_error_line(tmp_path: Path) -> None:
    out = tmp_path / "cluster.yaml"
    result = runner.invoke(
        app, ["inventory", "from-k8s", "--nodes-json", str(MALFORMED), "--out", str(out)]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert f"{MALFORMED}: invalid JSON at line" in lines[0]
    assert not out.exists()


def test_cli_unreachable_cluster_is_one_error_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "dead", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "me", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "dead-ctx", "context": {"cluster": "dead", "user": "me"}}],
                "current-context": "dead-ctx",
            }
        )
    )
    out = tmp_path / "cluster.yaml"
    result = runner.invoke(
        app, ["inventory", "from-k8s", "--kubeconfig", str(kubeconfig), "--out", str(out)]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "error: context dead-ctx (server https://127.0.0.1:1): cannot reach the API server"
    ), lines[0]
    assert "Traceback" not in result.output


def test_cluster_nodes_are_read_page_by_page(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from kubernetes.client import CoreV1Api

    from services.inventory import list_cluster_nodes

    items = read_nodes_json(CLUSTER)
    calls: list[tuple[int, str | None]] = []

    def list_node(self, limit: int, _continue: str | None, **_: Any) -> SimpleNamespace:
        calls.append((limit, _continue))
        start = int(_continue or 0)
        token = str(start + 50) if start + 50 < len(items) else None
        return SimpleNamespace(
            items=items[start : start + 50], metadata=SimpleNamespace(var_continue=token)
        )

    monkeypatch.setattr(CoreV1Api, "list_node", list_node)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
        "clusters: [{name: c, cluster: {server: 'https://10.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: lab, context: {cluster: c, user: u}}, "
        "{name: other, context: {cluster: c, user: u}}]\n"
    )
    nodes, source = list_cluster_nodes("other", kubeconfig)
    assert source == "context other (server https://10.0.0.1:6443)"
    assert calls == [(500, None), (500, "50")]
    assert [n.metadata.name for n in nodes] == [n.metadata.name for n in items]


def test_rack_larger_than_its_type_fails() -> None:
    data = raw()
    for item in data["items"]:
        labels = item["metadata"]["labels"]
        if labels.get("nvidia.com/gpu.clique", "").endswith(".3"):
            labels["nvidia.com/gpu.clique"] = GB200_RACK_2
    with pytest.raises(InventoryError) as err:
        inventory(data)
    assert str(err.value) == (
        f"rack nvidia.com/gpu.clique={GB200_RACK_2}: 112 GPUs, more than the 72 "
        "of a GB200_NVL72 rack"
    )
