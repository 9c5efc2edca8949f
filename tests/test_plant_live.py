"""End to end: ``twin up --plant`` on tests/sites/small.yaml starts the twin, the plant
emulator and the gateway; the plant's readings arrive over all four protocols, the
gateway's accepted count grows, the historian stores them in ``measurements`` under the
right entities, and the twin's CDU supply temperature is the plant's reading."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import psycopg
import pytest
from conftest import ROOT, SMALL
from google.protobuf import struct_pb2

from services.gateway.service import stats_subject
from twin.cooling.v1 import cooling_pb2

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("plant-live")]
EXPECTED = {  # (entity, quantity, source) the plant's point map feeds
    ("cdu/0", "supply_temperature_c", "bms"), ("cdu/1", "supply_temperature_c", "bms"),
    ("cdu/0", "return_temperature_c", "bms"), ("weather", "ambient_temperature_c", "bms"),
    ("rack/0/0", "rack_power_w", "racks"), ("rack/3/1", "rack_power_w", "racks"),
    ("rack/0/0", "gpu_temperature_c", "gpus"), ("rack/0/0/gpus", "equipment_power_w", "gpus"),
    ("meter", "meter_power_w", "meter"), ("ups/0", "equipment_power_w", "meter"),
}  # fmt: skip


def stored(url: str, run_id: str) -> dict[tuple[str, str, str], list[float]]:
    with psycopg.connect(url, prepare_threshold=None) as conn:
        rows = conn.execute(
            "SELECT entity, quantity, source, value FROM measurements WHERE run_id = %s"
            " ORDER BY time",
            (run_id,),
        ).fetchall()
    out: dict[tuple[str, str, str], list[float]] = {}
    for entity, quantity, source, value in rows:
        out.setdefault((entity, quantity, source), []).append(value)
    return out


async def gateway_stats(nats_url: str) -> dict:
    """The gateway's counters (`twin gateway stats`): accepted, rejected by reason, ..."""
    nc = await nats.connect(nats_url)
    try:
        reply = await nc.request(stats_subject("small"), b"", timeout=10)
    finally:
        await nc.close()
    stats = struct_pb2.Struct.FromString(reply.data)
    out = dict(stats.items())
    rejected = out.pop("rejected")
    assert isinstance(rejected, struct_pb2.Struct)
    return {**out, **{f"rejected.{k}": v for k, v in rejected.items()}}


async def supply_states(nats_url: str, run_id: str, seconds: float) -> list[float]:
    """cdu/0's supply temperature in the twin's cooling states over ``seconds``."""
    nc = await nats.connect(nats_url)
    seen: list[float] = []

    async def keep(msg) -> None:
        state = cooling_pb2.CoolingState.FromString(msg.data)
        if state.run_id == run_id:
            seen.append(state.tcs_supply_c[0])

    await nc.subscribe("twin.small.cooling.state", cb=keep)
    await asyncio.sleep(seconds)
    await nc.close()
    return seen


def test_twin_up_plant_tracks_the_plant(tmp_path: Path, postgres_url: str):
    logs = tmp_path / "logs"
    up = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", str(SMALL), "--plant", "--base-port", "0",
         "--speed", "2", "--log-dir", str(logs)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TWIN_DATABASE_URL": postgres_url, "COLUMNS": "300"},
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert up.stdout is not None
        for line in up.stdout:
            lines.append(line)
            if "Ctrl-C stops everything." in line:
                break
        text = "".join(lines)
        assert up.poll() is None, text
        run = re.search(r"run ([0-9a-f]+)", text)
        nats_url = re.search(r"nats: (nats://\S+)", text)
        assert run and nats_url, text
        run_id, url = run.group(1), nats_url.group(1)
        assert f"plant: point map {logs / 'plant-pointmap.yaml'}" in text

        first = asyncio.run(gateway_stats(url))["accepted"]
        deadline = time.monotonic() + 240
        while not (rows := stored(postgres_url, run_id)).keys() >= EXPECTED:
            assert time.monotonic() < deadline, sorted(rows)
            time.sleep(1)
        deadline = time.monotonic() + 30  # measurements keep flowing (the rows may all be
        while (stats := asyncio.run(gateway_stats(url)))["accepted"] <= first:  # there at once)
            assert time.monotonic() < deadline, stats
            time.sleep(1)
        # Every point the plant serves is mapped and in range; what is rejected is the
        # plant's own dropouts (Redfish says so: bad quality) and slow polls on busy cores.
        assert (stats["rejected.unknown_point"], stats["rejected.out_of_range"]) == (0, 0), stats
        assert stats["rejected.malformed"] == stats["rejected.unit"] == 0, stats

        # Plausible values at the right entities: the small site's ~0.7 MW meter, ~30 degC
        # warm-water supply, racks of 72 GB200 at up to ~140 kW.
        assert all(4e5 < v < 1.5e6 for v in rows[("meter", "meter_power_w", "meter")])
        assert all(25 < v < 40 for v in rows[("cdu/0", "supply_temperature_c", "bms")])
        assert all(2e4 < v < 1.6e5 for v in rows[("rack/0/0", "rack_power_w", "racks")])
        # The twin uses the plant's cdu/0 reading as its supply temperature.
        # (The readings are read back after the states: the ones the twin used in those
        # 8 s reach the table in the same seconds.)
        states = asyncio.run(supply_states(url, run_id, 8.0))
        assert states
        deadline = time.monotonic() + 30
        while True:
            measured = stored(postgres_url, run_id)[("cdu/0", "supply_temperature_c", "bms")]
            used = [s for s in states if any(abs(s - m) < 1e-4 for m in measured)]
            if used or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert used, (states, measured[-5:])

        truth = json.loads((logs / "plant-truth.json").read_text())
        assert truth["parameters"]["cooling.cdu.ua_w_per_k"] == 150000.0
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=120)
    assert up.returncode == 0, out
    assert out.rstrip().endswith("stopped")
    assert "Traceback" not in (logs / "plant.log").read_text()
