"""The host table from Kubernetes Nodes agrees with the site `twin inventory` writes
from the same Nodes: every rack of the site is fed, nothing unknown."""

from __future__ import annotations

import yaml
from conftest import ROOT
from typer.testing import CliRunner

from services import inventory as inv_mod
from services.cli.main import app
from services.gateway.check import check
from services.gateway.hosts import hosts_from_inventory
from services.gateway.pointmap import parse_pointmap
from twin_core.site import build_site

CLUSTER = ROOT / "tests" / "k8s" / "small-cluster.json"
RULE = r"""
sources:
  gpus: {kind: dcgm, urls: ["http://127.0.0.1:9400/metrics"]}
points:
  - source: gpus
    match: 'DCGM_FI_DEV_POWER_USAGE/(?P<host>[^/]+)/(?P<gpu>\d+)'
    entity: 'rack/{slot}/{cdu}'
    quantity: rack_power_w
    aggregate: sum
    stale_s: 45
"""


def test_host_table_feeds_every_rack_of_the_inventory_site():
    options = inv_mod.Options(skip_unknown=True)
    inv = inv_mod.build_inventory(
        inv_mod.read_nodes_json(CLUSTER), inv_mod.rack_gpus(None), options
    )
    text = inv_mod.site_yaml(inv, "test", inv_mod.DEFAULT_BASE)
    site = build_site(yaml.safe_load(text), None, inv_mod.DEFAULT_BASE.parent.resolve())
    hosts = hosts_from_inventory(inv)
    assert hosts["gb200-a2-t07"] == {"slot": 1, "cdu": 0}
    assert hosts["gb300-b1-t18"] == {"slot": 0, "cdu": 2}
    pm = parse_pointmap(RULE + "hosts:\n" + "".join(
        f"  {h}: {{slot: {p['slot']}, cdu: {p['cdu']}}}\n" for h, p in hosts.items()
    ))  # fmt: skip
    report = check(pm, site)
    assert report.unknown_entities == []
    # every rack fed; only the CDU temperatures (no BMS rule here) left to the model
    assert report.unmapped_entities == {"supply_temperature_c": ["cdu/0", "cdu/1", "cdu/2"]}


def test_twin_gateway_hosts_prints_the_table():
    result = CliRunner().invoke(
        app, ["gateway", "hosts", "--nodes-json", str(CLUSTER), "--skip-unknown"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        f"# host -> rack slot and CDU, from file {CLUSTER}",
        "hosts:",
        "  gb200-a1-t01: {slot: 0, cdu: 0}",
    ]
    assert yaml.safe_load(result.stdout)["hosts"]["gb200-b2-t10"] == {"slot": 0, "cdu": 1}
