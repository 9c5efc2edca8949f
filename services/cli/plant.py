"""``twin plant SCENARIO``: run the plant emulator (services/plant) until Ctrl-C, or for
``--duration`` of simulated time."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from services.cli.errors import console, fail, seconds

MQTT_PASSWORD_ENV = "TWIN_PLANT_MQTT_PASSWORD"


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader that waits for the file never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def plant(
    scenario: Annotated[str, typer.Argument(help="seeded site name or site file")],
    truth: Annotated[
        Path | None,
        typer.Option(help="truth file (YAML; default: services/plant/default_truth.yaml)"),
    ] = None,
    dt: Annotated[str, typer.Option(help="simulated time per step, e.g. 1s")] = "1s",
    speed: Annotated[float, typer.Option(help="real-time factor (> 0)")] = 1.0,
    duration: Annotated[
        str | None, typer.Option(help="simulated time, then stop (default: until Ctrl-C)")
    ] = None,
    mqtt: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT of the MQTT broker for BMS points (the twin's nats-server "
            "MQTT listener, or a broker); none: no BMS"
        ),
    ] = None,
    mqtt_user: Annotated[
        str | None, typer.Option(help=f"MQTT username (password from ${MQTT_PASSWORD_ENV})")
    ] = None,
    bms_transport: Annotated[
        str, typer.Option(help="how the point map has the gateway read BMS: nats or mqtt")
    ] = "nats",
    host: Annotated[str, typer.Option(help="address every server binds")] = "127.0.0.1",
    dcgm_port: Annotated[int, typer.Option(help="DCGM exporter port; 0: a free one")] = 0,
    redfish_port: Annotated[int, typer.Option(help="Redfish port; 0: a free one")] = 0,
    modbus_port: Annotated[int, typer.Option(help="Modbus TCP port; 0: a free one")] = 0,
    redfish_tls: Annotated[
        bool, typer.Option(help="Redfish over HTTPS with a self-signed certificate")
    ] = False,
    dcgm_fields: Annotated[
        str,
        typer.Option(
            help="DCGM fields served, of power,temp,energy,util (energy and util "
            "have no twin quantity: the gateway counts them as unknown points)"
        ),
    ] = "power,temp",
    poll: Annotated[
        str, typer.Option(help="how often the point map has the gateway read DCGM and Redfish")
    ] = "5s",
    pointmap_out: Annotated[
        Path | None, typer.Option(help="write the gateway's point map for this plant here")
    ] = None,
    truth_out: Annotated[
        Path | None, typer.Option(help="write the truth record (JSON) here")
    ] = None,
) -> None:
    """Run a "true" plant: the site with the truth file's parameters (which the twin does
    not know), its sensors' bias, noise and dropouts, and injected faults, served over
    MQTT (BMS), a DCGM exporter, Redfish and Modbus TCP."""
    import asyncio
    import signal

    from services.plant.pointmap import PASSWORD_ENV
    from services.plant.run import Plant, PlantOptions
    from services.plant.truthfile import TruthError, load_truth
    from services.scenario import site_by_name_or_file
    from twin_core.site import SiteError

    step_s = seconds("--dt", dt)
    horizon_s = seconds("--duration", duration)
    poll_s = seconds("--poll", poll)
    if not speed > 0:
        fail("--speed: must be > 0")
    if bms_transport not in ("nats", "mqtt"):
        fail(f"--bms-transport: {bms_transport!r} is not one of nats, mqtt")
    from services.plant.dcgm import FIELDS

    fields = tuple(f.strip() for f in dcgm_fields.split(",") if f.strip())
    if unknown := sorted(set(fields) - set(FIELDS)) or ([] if fields else ["(none)"]):
        fail(f"--dcgm-fields: {', '.join(unknown)} is not one of {', '.join(FIELDS)}")
    if redfish_tls and importlib.util.find_spec("cryptography") is None:
        fail("--redfish-tls: needs the cryptography package (pip install cryptography)")
    mqtt_host, mqtt_port = "127.0.0.1", None
    if mqtt is not None:
        mqtt_host, _, port_text = mqtt.rpartition(":")
        if not mqtt_host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            fail(f"--mqtt: {mqtt!r} is not HOST:PORT")
        mqtt_port = int(port_text)
    try:
        base = site_by_name_or_file(scenario, "scenario")
        the_truth, name = load_truth(truth)
        options = PlantOptions(
            dt=step_s, speed=speed, host=host, dcgm_port=dcgm_port, redfish_port=redfish_port,
            modbus_port=modbus_port, mqtt_host=mqtt_host, mqtt_port=mqtt_port,
            mqtt_username=mqtt_user, mqtt_password=os.environ.get(MQTT_PASSWORD_ENV),
            bms_transport=bms_transport,
            redfish_password=os.environ.get(PASSWORD_ENV) or "plant",
            redfish_tls=redfish_tls, tls_dir=(pointmap_out or Path(".")).parent / "plant-tls"
            if redfish_tls and pointmap_out else None,
            dcgm_fields=fields, dcgm_interval_s=poll_s, redfish_interval_s=poll_s,
        )  # fmt: skip
        the_plant = Plant(base, the_truth, name, options)
    except (SiteError, TruthError) as exc:
        fail(str(exc))
    steps = None if horizon_s is None else round(horizon_s / step_s)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await the_plant.start()
        except OSError as exc:
            await the_plant.close()
            fail(f"plant did not start: {exc}")
        try:
            if truth_out is not None:
                _write(truth_out, json.dumps(the_plant.truth_record(), indent=2) + "\n")
            if pointmap_out is not None:
                _write(pointmap_out, the_plant.pointmap_text())
            e = the_plant.endpoints()
            console.print(
                f"plant {the_plant.site.name} ({name}): dt {step_s:g} s at {speed:g}x\n"
                f"  DCGM     {e.dcgm_url}\n  Redfish  {e.redfish_url} (user {e.redfish_user}, "
                f"password from ${PASSWORD_ENV})\n"
                f"  Modbus   {e.modbus_host}:{e.modbus_port}\n"
                f"  BMS      {'mqtt://' + mqtt if mqtt else 'off (no --mqtt)'}\n"
                + (f"  point map {pointmap_out}\n" if pointmap_out else "")
                + (f"  truth     {truth_out}\n" if truth_out else ""),
                highlight=False, soft_wrap=True, end="",
            )  # fmt: skip
            await the_plant.run(stop, steps)
        finally:
            await the_plant.close()
        console.print(f"plant stopped at step {the_plant.model.step} "
                      f"({the_plant.model.time_s:g} s simulated)")  # fmt: skip

    asyncio.run(main())
