"""Record the normalised measurements on ``telemetry.<site>.>`` to Parquet, and replay a
recording onto the bus with its timing (backtests, demos).

One row per measurement: ``batch`` (the order of arrival), ``received_s`` (gateway
clock when it arrived), ``source``, ``entity``, ``quantity`` (the point map's name,
e.g. ``supply_temperature_c``), ``time_s`` (source time) and ``value``. The file is
written to ``FILE.partial`` and renamed when complete, so a crash leaves no half file.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS

from services.gateway.pointmap import QUANTITIES
from services.runtime import bus
from twin.telemetry.v1 import telemetry_pb2

SCHEMA = pa.schema(
    [
        ("batch", pa.int64()),
        ("received_s", pa.float64()),
        ("source", pa.string()),
        ("entity", pa.string()),
        ("quantity", pa.string()),
        ("time_s", pa.float64()),
        ("value", pa.float64()),
    ]
)
_NAMES = {number: name for name, number in QUANTITIES.items()}


class RecordingError(ValueError):
    """A recording that cannot be read; one line naming the file and the problem."""


async def record(
    nc: NATS,
    site: str,
    out: Path,
    *,
    duration_s: float | None = None,
    max_batches: int | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    """Record until ``duration_s`` passed, ``max_batches`` arrived or cancelled; the
    number of measurements written (the file is complete in every case)."""
    rows: dict[str, list] = {name: [] for name in SCHEMA.names}
    batches = 0
    done = asyncio.Event()

    async def on_batch(msg) -> None:
        nonlocal batches
        try:
            batch = telemetry_pb2.MeasurementBatch.FromString(msg.data)
        except DecodeError:  # not a batch: not ours to record
            return
        now = time.time()
        for m in batch.measurements:
            for name, value in zip(
                SCHEMA.names,
                (batches, now, batch.source, m.entity, _NAMES.get(m.quantity, ""), m.time_s,
                 m.value),
                strict=True,
            ):  # fmt: skip
                rows[name].append(value)
        batches += 1
        if max_batches is not None and batches >= max_batches:
            done.set()

    sub = await nc.subscribe(bus.telemetry_subject(site), cb=on_batch)
    await nc.flush()
    if ready is not None:
        ready()
    try:
        await asyncio.wait_for(done.wait(), duration_s)
    except TimeoutError:
        pass
    finally:  # also when cancelled (Ctrl-C): what arrived is written
        await sub.unsubscribe()
        partial = out.with_name(out.name + ".partial")
        pq.write_table(pa.table(rows, schema=SCHEMA), partial)
        os.replace(partial, out)
    return len(rows["batch"])


def read_recording(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such file") from None
    except (OSError, pa.ArrowException) as exc:
        raise RecordingError(f"{path}: not a Parquet recording ({exc})") from None
    if missing := [n for n in SCHEMA.names if n not in table.column_names]:
        raise RecordingError(f"{path}: missing columns {', '.join(missing)}")
    unknown = set(table.column("quantity").to_pylist()) - set(QUANTITIES)
    if unknown:
        raise RecordingError(f"{path}: unknown quantity {sorted(unknown)[0]!r}")
    return table.select(SCHEMA.names).sort_by([("batch", "ascending")])


async def replay(nc: NATS, site: str, table: pa.Table, speed: float) -> int:
    """Publish the recorded batches on ``telemetry.<site>.<source>``, spaced as they
    arrived divided by ``speed`` (0: as fast as possible); the number of batches."""
    columns = {name: table.column(name).to_pylist() for name in SCHEMA.names}
    groups: dict[tuple[int, str], telemetry_pb2.MeasurementBatch] = {}
    received: dict[int, float] = {}
    for i in range(table.num_rows):
        b, source = columns["batch"][i], columns["source"][i]
        received.setdefault(b, columns["received_s"][i])
        batch = groups.get((b, source))
        if batch is None:
            batch = groups[(b, source)] = telemetry_pb2.MeasurementBatch(
                site_id=site, source=source
            )
        batch.measurements.add(
            site_id=site, entity=columns["entity"][i],
            quantity=QUANTITIES[columns["quantity"][i]], time_s=columns["time_s"][i],
            value=columns["value"][i],
        )  # fmt: skip
    start_wall = time.monotonic()
    first = min(received.values(), default=0.0)
    for (b, source), batch in groups.items():
        if speed > 0:
            due = start_wall + (received[b] - first) / speed
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await nc.publish(bus.telemetry_subject(site, source), batch.SerializeToString())
    await nc.flush()
    return len(groups)
