"""Rack and PDU power over Redfish (DMTF): each chassis is read every ``interval_s``.

Resources followed from the chassis (those it links; point ids in brackets):
  Sensors         every Sensor's ``Reading``            [<chassis>/Sensors/<sensor>]
  PowerSubsystem  ``CapacityWatts``, ``Allocation``     [<chassis>/PowerSubsystem/<field>]
                  each power supply's ``Metrics``       [.../PowerSupplies/<psu>/<field>]
  Power (older)   ``PowerControl[].PowerConsumedWatts`` [<chassis>/Power/PowerControl/<id>]
                  ``PowerSupplies[]``, ``Voltages[]``   [<chassis>/Power/PowerSupplies/<id>/<f>]
Array members are named by ``MemberId`` (their position when it is missing).

Units: a Sensor's ``ReadingUnits`` (UCUM: ``W``, ``Cel``, ``V``, ...; from
``ReadingType`` when absent) becomes the reading's unit, named as the point map names
it; fields with a fixed unit (``...Watts``, ``...Volts``) carry theirs. ``Status``:
``Health: Critical`` or ``State`` Absent/Disabled/UnavailableOffline is a bad-quality
reading. Redfish values carry no timestamps: a value's time is the poll's.

A resource that is not a JSON object (or a field that is not a number) becomes a
``malformed`` reading for that URI or point, and the poll goes on. A service that does not
answer (``unreachable``), answers an HTTP error, refuses the credentials (also
``unreachable``) or takes longer than ``timeout_s`` per request (``timeout``) fails the
poll; polls are then retried with backoff doubling up to ``max_backoff_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from services.gateway.pointmap import RedfishSource
from services.gateway.reading import Emit, Reading

log = logging.getLogger(__name__)

ROOT = "/redfish/v1"
SESSIONS = f"{ROOT}/SessionService/Sessions"
CONCURRENCY = 8  # requests in flight per service: BMCs are small computers
LOGOUT_TIMEOUT_S = 2.0

# UCUM (Redfish ReadingUnits) -> the gateway's unit names (services/gateway/units.py);
# others (V, A, kW.h, ...) pass through as they are.
UCUM = {
    "Cel": "degC",
    "[degF]": "degF",
    "K": "K",
    "W": "W",
    "kW": "kW",
    "mW": "mW",
    "%": "%",
    "L/min": "L/min",
    "L/s": "L/s",
    "m3/h": "m3/h",
    "[gal_us]/min": "gpm",
}
# Sensor ReadingType -> its fixed unit (UCUM), for a Sensor without ReadingUnits.
READING_TYPE_UNITS = {"Power": "W", "Temperature": "Cel", "Voltage": "V", "Current": "A",
                      "EnergykWh": "kW.h", "Percent": "%", "Humidity": "%",
                      "LiquidFlowLPM": "L/min", "LiquidFlow": "L/s"}  # fmt: skip
BAD_STATES = frozenset({"Absent", "Disabled", "UnavailableOffline"})

PSU_METRICS = {"InputPowerWatts": "W", "OutputPowerWatts": "W", "InputVoltage": "V",
               "InputCurrentAmps": "A", "EnergykWh": "kW.h"}  # fmt: skip
POWER_SUPPLY_FIELDS = {"PowerInputWatts": "W", "PowerOutputWatts": "W",
                       "LastPowerOutputWatts": "W", "LineInputVoltage": "V"}  # fmt: skip

Json = dict[str, Any]


class Malformed(ValueError):
    """A resource or field that is not what Redfish says it is."""


class PollFailed(Exception):
    """The service failed the poll; ``problem`` is the quality reason."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"{problem}: {detail}")
        self.problem = problem


# ------------------------------------------------------------------ resources -> readings


def good(resource: Json) -> bool:
    status = resource.get("Status")
    if not isinstance(status, dict):
        return True
    return status.get("Health") != "Critical" and status.get("State") not in BAD_STATES


def number(value: Any) -> float | None:
    """A Redfish number (null: no reading); Malformed for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"not a number: {value!r}")
    return float(value)


def unit_name(ucum: str) -> str:
    return UCUM.get(ucum, ucum)


def last_segment(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def link(resource: Json, name: str) -> str | None:
    ref = resource.get(name)
    if isinstance(ref, dict) and isinstance(uri := ref.get("@odata.id"), str):
        return uri
    return None


def members(collection: Json) -> list[str]:
    items = collection.get("Members")
    if not isinstance(items, list):
        raise Malformed("a collection without Members")
    uris = [item.get("@odata.id") for item in items if isinstance(item, dict)]
    return [uri for uri in uris if isinstance(uri, str)]


class Readings:
    """Builds the readings of one poll: all share the poll's time."""

    def __init__(self, source: str, now: float) -> None:
        self.source, self.now = source, now
        self.out: list[Reading] = []

    def add(self, point: str, value: Any, unit: str | None, ok: bool = True) -> None:
        try:
            v = number(value)
        except Malformed:
            self.out.append(Reading(self.source, point, None, self.now, False, problem="malformed"))
            return
        self.out.append(Reading(self.source, point, v, self.now, ok, unit))

    def malformed(self, uri: str) -> None:
        self.out.append(Reading(self.source, uri, None, self.now, False, problem="malformed"))

    def sensor(self, chassis: str, uri: str, doc: Json) -> None:
        sensor_id = doc.get("Id") if isinstance(doc.get("Id"), str) else last_segment(uri)
        units = doc.get("ReadingUnits")
        if not isinstance(units, str):
            units = READING_TYPE_UNITS.get(str(doc.get("ReadingType")))
        unit = unit_name(units) if units else None
        self.add(f"{chassis}/Sensors/{sensor_id}", doc.get("Reading"), unit, good(doc))

    def power_subsystem(self, chassis: str, doc: Json) -> None:
        base, ok = f"{chassis}/PowerSubsystem", good(doc)
        if "CapacityWatts" in doc:
            self.add(f"{base}/CapacityWatts", doc["CapacityWatts"], "W", ok)
        allocation = doc.get("Allocation")
        if isinstance(allocation, dict):
            for key in ("AllocatedWatts", "RequestedWatts"):
                if key in allocation:
                    self.add(f"{base}/Allocation/{key}", allocation[key], "W", ok)

    def supply_metrics(self, chassis: str, psu: str, doc: Json, ok: bool) -> None:
        base = f"{chassis}/PowerSubsystem/PowerSupplies/{psu}"
        ok = ok and good(doc)
        for key, unit in PSU_METRICS.items():
            excerpt = doc.get(key)  # a SensorExcerpt: {"Reading": ..., "DataSourceUri": ...}
            if excerpt is None:
                continue
            value = excerpt.get("Reading") if isinstance(excerpt, dict) else excerpt
            self.add(f"{base}/{key}", value, unit, ok)

    def power(self, chassis: str, doc: Json) -> None:
        base = f"{chassis}/Power"
        for member_id, item in array_members(doc, "PowerControl"):
            self.add(
                f"{base}/PowerControl/{member_id}", item.get("PowerConsumedWatts"), "W", good(item)
            )
        for member_id, item in array_members(doc, "PowerSupplies"):
            for key, unit in POWER_SUPPLY_FIELDS.items():
                if key in item:
                    self.add(f"{base}/PowerSupplies/{member_id}/{key}", item[key], unit, good(item))
        for member_id, item in array_members(doc, "Voltages"):
            self.add(f"{base}/Voltages/{member_id}", item.get("ReadingVolts"), "V", good(item))


def array_members(doc: Json, key: str) -> list[tuple[str, Json]]:
    items = doc.get(key, [])
    if not isinstance(items, list):
        raise Malformed(f"{key} is not an array")
    out: list[tuple[str, Json]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise Malformed(f"{key}[{i}] is not an object")
        member_id = item.get("MemberId")
        out.append((member_id if isinstance(member_id, str) and member_id else str(i), item))
    return out


# ------------------------------------------------------------------------------- the client


class RedfishClient:
    """HTTP(S) to one Redfish service: authentication (basic, or a session re-opened on
    401), a per-request timeout, and JSON objects out."""

    def __init__(self, cfg: RedfishSource, password: str) -> None:
        self.cfg = cfg
        self._password = password
        verify: ssl.SSLContext | bool = cfg.verify_tls
        if cfg.verify_tls:
            verify = ssl.create_default_context(cafile=cfg.ca_file)
        self.http = httpx.AsyncClient(
            base_url=cfg.url.rstrip("/"),
            verify=verify,
            timeout=httpx.Timeout(cfg.timeout_s),
            auth=httpx.BasicAuth(cfg.username, password) if cfg.auth == "basic" else None,
            headers={"Accept": "application/json", "OData-Version": "4.0"},
            limits=httpx.Limits(max_connections=CONCURRENCY),
        )
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._login_lock = asyncio.Lock()
        self._token: str | None = None
        self._session: str | None = None  # the session's URI, deleted at close
        self.logins = 0

    async def get(self, path: str) -> Json:
        """The resource at ``path``; PollFailed when the service fails, Malformed when
        the body is not a JSON object."""
        token, response = await self._request("GET", path)
        if response.status_code == 401 and self.cfg.auth == "session":
            await self._open_session(stale=token)  # it expired or was dropped
            _, response = await self._request("GET", path)
        if response.status_code == 401:
            raise PollFailed("unreachable", f"{path}: credentials refused (401)")
        if response.is_error:
            raise PollFailed("unreachable", f"{path}: HTTP {response.status_code}")
        try:
            doc = json.loads(response.content)
        except ValueError:
            raise Malformed(f"{path}: not JSON") from None
        if not isinstance(doc, dict):
            raise Malformed(f"{path}: not a JSON object")
        return doc

    async def _request(self, method: str, path: str) -> tuple[str | None, httpx.Response]:
        """The token the request went with, and the response."""
        if self.cfg.auth == "session" and self._token is None:
            await self._open_session(stale=None)
        token = self._token
        headers = {"X-Auth-Token": token} if token else {}
        async with self._slots:
            return token, await self._send(self.http.request(method, path, headers=headers))

    async def _open_session(self, stale: str | None) -> None:
        # One login for all the requests in flight that found no (or the same dead)
        # token: a BMC has only a few session slots.
        async with self._login_lock:
            if self._token is not None and self._token != stale:
                return
            self._token = None
            await self._login()

    async def _send(self, request: Awaitable[httpx.Response]) -> httpx.Response:
        # httpx times each phase (connect, each read); this bounds the whole request,
        # so a service that trickles its answer times out too.
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                return await request
        except (TimeoutError, httpx.TimeoutException):
            raise PollFailed("timeout", f"no answer within {self.cfg.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise PollFailed("unreachable", repr(exc)) from None

    async def _login(self) -> None:
        body = {"UserName": self.cfg.username, "Password": self._password}
        response = await self._send(self.http.post(SESSIONS, json=body))
        token = response.headers.get("X-Auth-Token")
        if response.is_error or not token:
            raise PollFailed("unreachable", f"session login refused (HTTP {response.status_code})")
        self._token = token
        self._session = response.headers.get("Location")
        if self._session is None:
            with contextlib.suppress(ValueError):
                self._session = link({"s": response.json()}, "s")
        self.logins += 1

    async def close(self) -> None:
        """Log out (a BMC has few session slots) and close the connections."""
        try:
            if self._session and self._token:
                path = httpx.URL(self._session).path  # Location may be absolute
                with contextlib.suppress(httpx.HTTPError, TimeoutError):
                    async with asyncio.timeout(LOGOUT_TIMEOUT_S):
                        await self.http.delete(path, headers={"X-Auth-Token": self._token})
            self._token = self._session = None
        finally:
            await self.http.aclose()


# ------------------------------------------------------------------------------ the adapter


class RedfishAdapter:
    def __init__(self, name: str, cfg: RedfishSource) -> None:
        self.name, self.cfg = name, cfg
        self.polls = 0
        self.client: RedfishClient | None = None  # while running (tests read its logins)
        self._chassis: list[str] | None = None  # chassis URIs, discovered once

    async def run(self, emit: Emit) -> None:
        password = os.environ.get(self.cfg.password_env, "") if self.cfg.password_env else ""
        self.client = client = RedfishClient(self.cfg, password)
        wait = self.cfg.interval_s
        try:
            while True:
                started = time.monotonic()
                problem = await self._poll(client, emit)
                if problem is None:
                    wait = self.cfg.interval_s
                else:
                    emit(
                        Reading(
                            self.name, self.cfg.url, None, time.time(), good=False, problem=problem
                        )
                    )
                    wait = min(max(wait, self.cfg.interval_s) * 2, self.cfg.max_backoff_s)
                await asyncio.sleep(max(0.0, wait - (time.monotonic() - started)))
        finally:
            await client.close()

    async def _poll(self, client: RedfishClient, emit: Emit) -> str | None:
        readings = Readings(self.name, time.time())
        try:
            for uri in await self._chassis_uris(client):
                await self._read_chassis(client, uri, readings)
        except PollFailed as exc:
            self._chassis = None  # the service may have changed: discover again
            log.warning(
                "Redfish poll failed",
                extra={"url": self.cfg.url, "problem": exc.problem, "error": str(exc)},
            )
            return exc.problem
        finally:
            for r in readings.out:  # what was read before a failure is still good
                emit(r)
        self.polls += 1
        return None

    async def _chassis_uris(self, client: RedfishClient) -> list[str]:
        if self.cfg.chassis is not None:
            return [f"{ROOT}/Chassis/{c}" for c in self.cfg.chassis]
        if self._chassis is None:
            try:
                self._chassis = members(await client.get(f"{ROOT}/Chassis"))
            except Malformed as exc:
                raise PollFailed("malformed", f"{ROOT}/Chassis: {exc}") from None
        return self._chassis

    async def _read_chassis(self, client: RedfishClient, uri: str, out: Readings) -> None:
        chassis = last_segment(uri)
        doc = await self._get(client, uri, out)
        if doc is None:
            return
        if sensors := link(doc, "Sensors"):
            await self._each_member(client, sensors, out, lambda u, d: out.sensor(chassis, u, d))
        if (subsystem := link(doc, "PowerSubsystem")) and (
            sub := await self._get(client, subsystem, out)
        ):
            out.power_subsystem(chassis, sub)
            if supplies := link(sub, "PowerSupplies"):
                await self._each_member(
                    client,
                    supplies,
                    out,
                    lambda u, d: self._supply(client, chassis, u, d, out),
                )
        if (power := link(doc, "Power")) and (legacy := await self._get(client, power, out)):
            try:
                out.power(chassis, legacy)
            except Malformed:
                out.malformed(power)

    async def _supply(
        self, client: RedfishClient, chassis: str, uri: str, doc: Json, out: Readings
    ) -> None:
        if (metrics := link(doc, "Metrics")) and (m := await self._get(client, metrics, out)):
            out.supply_metrics(chassis, last_segment(uri), m, good(doc))

    async def _each_member(
        self,
        client: RedfishClient,
        collection: str,
        out: Readings,
        use: Callable[[str, Json], Awaitable[None] | None],
    ) -> None:
        """GET every member of ``collection`` concurrently and hand each to ``use``."""
        doc = await self._get(client, collection, out)
        if doc is None:
            return
        try:
            uris = members(doc)
        except Malformed:
            out.malformed(collection)
            return

        async def one(uri: str) -> None:
            if (member := await self._get(client, uri, out)) is not None and (
                pending := use(uri, member)
            ) is not None:
                await pending

        results = await asyncio.gather(*(one(u) for u in uris), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _get(self, client: RedfishClient, uri: str, out: Readings) -> Json | None:
        """The resource, or None after counting it as malformed."""
        try:
            return await client.get(uri)
        except Malformed as exc:
            log.warning("Redfish resource malformed", extra={"uri": uri, "error": str(exc)})
            out.malformed(uri)
            return None
