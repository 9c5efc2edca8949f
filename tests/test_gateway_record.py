"""``twin gateway record`` and ``twin replay``: Parquet capture of telemetry batches and
playback with their timing, on a real nats-server."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time

import nats
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from services.gateway.record import RecordingError, read_recording, record
from services.runtime.nats_server import NatsServer
from twin.telemetry.v1 import telemetry_pb2 as tm


def batch(source: str, *measurements: tuple[str, int, float, float]) -> bytes:
    b = tm.MeasurementBatch(site_id="small", source=source)
    for entity, quantity, time_s, value in measurements:
        b.measurements.add(
            site_id="small", entity=entity, quantity=quantity, time_s=time_s, value=value
        )
    return b.SerializeToString()


SENT = [
    ("bms", batch("bms", ("cdu/0", tm.QUANTITY_SUPPLY_TEMPERATURE_C, 100.0, 31.5))),
    ("gpus", batch("gpus", ("rack/0/0", tm.QUANTITY_RACK_POWER_W, 101.0, 1.2e5),
                   ("rack/1/0", tm.QUANTITY_RACK_POWER_W, 101.0, 1.3e5))),
    ("bms", batch("bms", ("cdu/1", tm.QUANTITY_SUPPLY_TEMPERATURE_C, 102.0, 30.25))),
]  # fmt: skip
GAP_S = 0.4


def test_record_then_replay_with_timing(tmp_path):
    out = tmp_path / "rec.parquet"

    async def main(server: NatsServer) -> None:
        nc = await nats.connect(server.url)
        ready = asyncio.Event()
        task = asyncio.create_task(
            record(nc, "small", out, duration_s=20, max_batches=3, ready=ready.set)
        )
        await ready.wait()
        await nc.publish("telemetry.other-site.bms", SENT[0][1])  # another site: not recorded
        for i, (source, data) in enumerate(SENT):
            if i:
                await asyncio.sleep(GAP_S)
            await nc.publish(f"telemetry.small.{source}", data)
        assert await asyncio.wait_for(task, 10) == 4
        table = pq.read_table(out)
        assert not (tmp_path / "rec.parquet.partial").exists()
        rows = table.select(["batch", "source", "entity", "quantity", "time_s", "value"])
        assert rows.to_pylist() == [
            {"batch": 0, "source": "bms", "entity": "cdu/0",
             "quantity": "supply_temperature_c", "time_s": 100.0, "value": 31.5},
            {"batch": 1, "source": "gpus", "entity": "rack/0/0", "quantity": "rack_power_w",
             "time_s": 101.0, "value": 1.2e5},
            {"batch": 1, "source": "gpus", "entity": "rack/1/0", "quantity": "rack_power_w",
             "time_s": 101.0, "value": 1.3e5},
            {"batch": 2, "source": "bms", "entity": "cdu/1",
             "quantity": "supply_temperature_c", "time_s": 102.0, "value": 30.25},
        ]  # fmt: skip

        # Replay at 2x through the CLI: the same batches, gaps halved.
        got: list[tuple[float, str, bytes]] = []

        async def keep(msg) -> None:
            got.append((time.monotonic(), msg.subject, msg.data))

        await nc.subscribe("telemetry.small.>", cb=keep)
        await nc.flush()
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.cli", "replay", str(out), "--speed", "2",
             "--site", "small"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "TWIN_NATS_URL": server.url},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == "3 batches, 4 measurements replayed"
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert [(s, d) for _, s, d in got] == [(f"telemetry.small.{s}", d) for s, d in SENT]
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(got)]
        assert all(GAP_S / 2 - 0.1 < g < GAP_S / 2 + 0.15 for g in gaps), gaps
        await nc.close()

    with NatsServer() as server:
        asyncio.run(main(server))


def test_bad_recordings_are_one_line(tmp_path):
    with pytest.raises(RecordingError, match=r"rec\.parquet: no such file$"):
        read_recording(tmp_path / "rec.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(RecordingError, match=r"junk\.parquet: not a Parquet recording"):
        read_recording(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"batch": [0]}), tmp_path / "thin.parquet")
    with pytest.raises(
        RecordingError,
        match=r"thin\.parquet: missing columns received_s, source, entity, quantity, time_s, "
        r"value$",
    ):
        read_recording(tmp_path / "thin.parquet")
