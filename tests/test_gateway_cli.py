"""``twin gateway check``: a point map against tests/sites/small.yaml."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT
from typer.testing import CliRunner

from services.cli.main import app

SMALL = str(ROOT / "tests" / "sites" / "small.yaml")
CDU_RULE = r"""
  - source: bms
    match: 'BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu(?P<cdu>\d+)/supply'
    entity: 'cdu/{cdu}'
    quantity: supply_temperature_c
    stale_s: 300
"""
RACK_RULE = r"""
  - source: gpus
    match: 'DCGM_FI_DEV_POWER_USAGE/(?P<host>[^/]+)/(?P<gpu>\d+)'
    entity: 'rack/{slot}/{cdu}'
    quantity: rack_power_w
    aggregate: sum
    stale_s: 45
"""
HEAD = """
sources:
  bms: {kind: bms}
  gpus: {kind: dcgm, urls: ["http://127.0.0.1:9400/metrics"]}
hosts:
%s
points:
"""


def run(tmp_path, text: str, *extra: str):
    path = tmp_path / "map.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["gateway", "check", str(path), "--site", SMALL, *extra])
    return result, str(path)


def hosts(n_cdus: int, racks: int) -> str:
    rows = [f"  node-{c}-{s}: {{slot: {s}, cdu: {c}}}" for c in range(n_cdus) for s in range(racks)]
    return "\n".join(rows)


def test_a_complete_map_is_ok(tmp_path):
    result, path = run(tmp_path, HEAD % hosts(2, 4) + CDU_RULE + RACK_RULE)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{path}: 2 rules, 2 sources; site small: 2 CDUs, 8 racks",
        "ok",
    ]


def test_unknown_entities_points_and_unmapped_are_listed(tmp_path):
    # host table places a rack at slot 4 (the site has 4 per CDU) and leaves 3 unfed
    table = hosts(2, 4).replace("node-1-3: {slot: 3, cdu: 1}", "node-1-3: {slot: 4, cdu: 1}")
    points = tmp_path / "points.txt"
    points.write_text(
        "# what the site exposes\n"
        "bms BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu2/supply\n"
        "bms BMS/v1/PUB/Value/HX/LiquidTemperature/x\n"
        "gpus DCGM_FI_DEV_POWER_USAGE/node-9-9/0\n"
    )
    result, path = run(tmp_path, HEAD % table + CDU_RULE + RACK_RULE, "--points", str(points))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{path}: 2 rules, 2 sources; site small: 2 CDUs, 8 racks",
        "unknown entities (2): points.0: cdu/2 (supply_temperature_c) from "
        "BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu2/supply, "
        "points.1: rack/4/1 (rack_power_w)",
        "unknown points (2): bms: BMS/v1/PUB/Value/HX/LiquidTemperature/x, "
        "gpus: DCGM_FI_DEV_POWER_USAGE/node-9-9/0",
        "unmapped rack_power_w (1): rack/3/1",
        "not ok",
    ]


def test_a_bad_map_is_one_line_with_its_line_number(tmp_path):
    result, path = run(tmp_path, HEAD % hosts(1, 1) + CDU_RULE.replace("300", "60"))
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (
        f"error: {path}:13: points.0.stale_s: 60 s must exceed the BMS republish period of 100 s"
    )


def test_an_unknown_site_is_one_line(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text(HEAD % hosts(1, 1) + CDU_RULE)
    result = CliRunner().invoke(app, ["gateway", "check", str(path), "--site", "nowhere.yaml"])
    assert result.exit_code == 2
    assert result.output == "error: nowhere.yaml: no such scenario file\n"


def test_the_example_map_covers_the_small_site():
    example = ROOT / "services" / "gateway" / "examples" / "small.yaml"
    result = CliRunner().invoke(app, ["gateway", "check", str(example), "--site", SMALL])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "ok"


def serve_gateway(env: dict[str, str]) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "serve", "gateway"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**environ, "TWIN_SITE": "small", "TWIN_NATS_URL": "nats://127.0.0.1:1", **env},
    )  # fmt: skip


def test_serve_gateway_refuses_a_missing_or_bad_map_before_connecting(tmp_path):
    # nats://127.0.0.1:1 would take 30 s to give up: the map is checked before that.
    done = serve_gateway({})
    assert (done.returncode, done.stderr) == (2, "error: TWIN_POINT_MAP: Field required\n")
    bad = tmp_path / "map.yaml"
    bad.write_text(HEAD % hosts(1, 1) + CDU_RULE.replace("quantity:", "quantty:"))
    done = serve_gateway({"TWIN_POINT_MAP": str(bad)})
    assert done.returncode == 2
    assert (
        done.stderr
        == f"error: TWIN_POINT_MAP: {bad}:9: points.0.quantity: Field required (and 1 more)\n"
    )


def test_modbus_registers_no_rule_maps_are_unknown_points(tmp_path):
    text = (HEAD % hosts(2, 4) + CDU_RULE + RACK_RULE).replace(
        "sources:\n",
        "sources:\n  meter: {kind: modbus, host: 127.0.0.1, registers: [\n"
        "    {point: main/kw, address: 0, type: float32},\n"
        "    {point: main/kvar, address: 2, type: float32}]}\n",
    ) + (
        "  - {source: meter, point: main/kw, entity: meter, quantity: meter_power_w, "
        "unit: kW, stale_s: 5}\n"
    )
    result, path = run(tmp_path, text)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{path}: 3 rules, 3 sources; site small: 2 CDUs, 8 racks",
        "unknown points (1): meter: main/kvar",
        "not used by the twin yet (1): points.2: meter_power_w",
        "not ok",
    ]
