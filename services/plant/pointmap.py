"""The point map of a running plant: its four sources (with the ports it bound) and a
rule for each kind of point it serves, so that the gateway maps every reading to the
twin entity it measures. ``twin gateway check`` accepts it for the plant's site.

DCGM's energy counter and engine activity (served only when asked: ``--dcgm-fields``)
are not mapped: the twin has no quantity for them, and the gateway counts them as
``unknown_point``. Ranges are in the quantity's unit (W, degC).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import yaml

from services.plant import bms as bms_points
from services.plant.modbus import DEVICE_ID, REGISTERS
from services.plant.truth import Layout

PASSWORD_ENV = "TWIN_PLANT_REDFISH_PASSWORD"  # the gateway reads the password from it


@dataclass(frozen=True)
class Endpoints:
    """Where the plant serves, and how often the gateway should read it."""

    dcgm_url: str  # http://127.0.0.1:PORT/metrics
    redfish_url: str  # http(s)://127.0.0.1:PORT
    modbus_host: str
    modbus_port: int
    bms_transport: str = "nats"  # the gateway reads BMS from the twin's bus (MQTT listener)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    redfish_user: str = "twin-monitor"
    redfish_ca_file: str | None = None  # the self-signed certificate, when over TLS
    dcgm_interval_s: float = 5.0
    redfish_interval_s: float = 5.0
    modbus_interval_s: float = 1.0


def _stale(interval_s: float) -> float:
    return max(3 * interval_s, 10.0)  # three missed reads


def build(layout: Layout, site: str, e: Endpoints) -> dict[str, Any]:
    bms: dict[str, Any] = {"kind": "bms", "transport": e.bms_transport}
    if e.bms_transport == "mqtt":
        bms |= {"host": e.mqtt_host, "port": e.mqtt_port}
    redfish: dict[str, Any] = {
        "kind": "redfish", "url": e.redfish_url, "auth": "session", "username": e.redfish_user,
        "password_env": PASSWORD_ENV, "interval_s": e.redfish_interval_s, "timeout_s": 5.0,
    }  # fmt: skip
    if e.redfish_ca_file:
        redfish["ca_file"] = e.redfish_ca_file
    registers = [
        {"point": point, "device_id": DEVICE_ID, "table": table, "address": address,
         "type": "float32", "word_order": "big"}
        for point, table, address, _ in REGISTERS
    ]  # fmt: skip
    value = f"{bms_points.PREFIX}/Value"
    points: list[dict[str, Any]] = [
        {"source": "bms", "match": value + r"/CDU/LiquidTemperature/[^/]+/cdu(?P<cdu>\d+)/supply",
         "entity": "cdu/{cdu}", "quantity": "supply_temperature_c", "unit": "degC",
         "range": [5, 60], "stale_s": 250},
        {"source": "bms", "match": value + r"/CDU/LiquidTemperature/[^/]+/cdu(?P<cdu>\d+)/return",
         "entity": "cdu/{cdu}", "quantity": "return_temperature_c", "unit": "degC",
         "range": [5, 80], "stale_s": 250},
        {"source": "bms", "point": value + "/Weather/AirTemperature/site/outdoor",
         "entity": "weather", "quantity": "ambient_temperature_c", "unit": "degC",
         "range": [-50, 60], "stale_s": 250},
        {"source": "gpus", "match": r"DCGM_FI_DEV_POWER_USAGE/(?P<host>[^/]+)/(?P<gpu>\d+)",
         "entity": "rack/{slot}/{cdu}/gpus", "quantity": "equipment_power_w",
         "range": [0, 2000], "aggregate": "sum", "stale_s": _stale(e.dcgm_interval_s)},
    ]  # fmt: skip
    # A rack's GPU temperature: the mean of its GPUs (sum x 1/count), per GPU count.
    by_count: dict[int, list[str]] = defaultdict(list)
    for rack in layout.racks:
        by_count[rack.gpus].append(rack.host)
    for count, hosts in sorted(by_count.items()):
        points.append({
            "source": "gpus",
            "match": rf"DCGM_FI_DEV_GPU_TEMP/(?P<host>{'|'.join(hosts)})/(?P<gpu>\d+)",
            "entity": "rack/{slot}/{cdu}", "quantity": "gpu_temperature_c", "range": [0, 120],
            "aggregate": "sum", "aggregate_scale": 1.0 / count,
            "stale_s": _stale(e.dcgm_interval_s),
        })  # fmt: skip
    points += [
        {"source": "racks", "match": r"rack-(?P<slot>\d+)-(?P<cdu>\d+)/Sensors/PowerConsumption",
         "entity": "rack/{slot}/{cdu}", "quantity": "rack_power_w", "range": [0, 500000],
         "stale_s": _stale(e.redfish_interval_s)},
        {"source": "meter", "point": "meter/active_power_kw", "entity": "meter",
         "quantity": "meter_power_w", "unit": "kW", "range": [0, 1e9],
         "stale_s": _stale(e.modbus_interval_s)},
        {"source": "meter", "point": "ups/output_power_kw", "entity": "ups/0",
         "quantity": "equipment_power_w", "unit": "kW", "range": [0, 1e9],
         "stale_s": _stale(e.modbus_interval_s)},
    ]  # fmt: skip
    return {
        "site": site,
        "sources": {
            "bms": bms,
            "gpus": {
                "kind": "dcgm",
                "urls": [e.dcgm_url],
                "interval_s": e.dcgm_interval_s,
                "timeout_s": 5.0,
            },
            "racks": redfish,
            "meter": {
                "kind": "modbus",
                "host": e.modbus_host,
                "port": e.modbus_port,
                "interval_s": e.modbus_interval_s,
                "registers": registers,
            },
        },
        "hosts": {r.host: {"slot": r.slot, "cdu": r.cdu} for r in layout.racks},
        "points": points,
    }


def render(layout: Layout, site: str, e: Endpoints) -> str:
    header = (
        f"# The point map of a `twin plant` emulator of site {site}, written at its start\n"
        "# (services/plant/pointmap.py).\n"
    )
    return header + yaml.safe_dump(build(layout, site, e), sort_keys=False, width=100)
