"""A Redfish service for the racks' power (DMTF schemas, the subset a rack manager or
power shelf serves): a Chassis per rack (``rack-<slot>-<cdu>``, ChassisType Rack) with

    Sensors/PowerConsumption    Sensor, ReadingType Power, ReadingUnits W: rack AC power
    PowerSubsystem              the power shelf's status (no numbers: every reading the
                                service gives is one the point map maps)

Authentication as a BMC does it: the service root and ``/redfish/v1/SessionService`` are
open; everything else needs HTTP basic credentials or a session token (``POST
/redfish/v1/SessionService/Sessions`` -> ``X-Auth-Token`` and ``Location``; ``DELETE`` of
that URI logs out), else 401. A dropped reading is ``Reading: null`` with State
``UnavailableOffline``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import math
import secrets
from typing import Any

from aiohttp import web

from services.plant.snapshot import Board

R = "/redfish/v1"
SESSIONS = f"{R}/SessionService/Sessions"


def _ref(uri: str) -> dict[str, str]:
    return {"@odata.id": uri}


def _collection(uri: str, odata_type: str, members: list[str]) -> dict[str, Any]:
    return {
        "@odata.id": uri,
        "@odata.type": odata_type,
        "Members": [_ref(m) for m in members],
        "Members@odata.count": len(members),
    }


class RedfishService:
    def __init__(self, board: Board, username: str, password: str) -> None:
        self.board = board
        self.username, self.password = username, password
        self.sessions: dict[str, str] = {}  # token -> session URI
        self._ids = itertools.count(1)
        self.racks = {r.host: i for i, r in enumerate(board.layout.racks)}

    # ------------------------------------------------------------------ auth

    def _authorized(self, request: web.Request) -> bool:
        token = request.headers.get("X-Auth-Token")
        if token is not None:
            return token in self.sessions
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return self._valid(user, password)

    def _valid(self, user: str, password: str) -> bool:
        return hmac.compare_digest(user.encode(), self.username.encode()) & hmac.compare_digest(
            password.encode(), self.password.encode()
        )

    @web.middleware
    async def auth(self, request: web.Request, handler) -> web.StreamResponse:
        open_paths = (R, f"{R}/", f"{R}/SessionService")
        login = request.method == "POST" and request.path == SESSIONS
        if request.path not in open_paths and not login and not self._authorized(request):
            return web.json_response(
                {"error": {"code": "Base.1.0.NoValidSession", "message": "authenticate"}},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="plant"'},
            )
        return await handler(request)

    async def login(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            user, password = str(body["UserName"]), str(body["Password"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": {"message": "UserName and Password"}}, status=400)
        if not self._valid(user, password):
            return web.json_response({"error": {"message": "invalid credentials"}}, status=401)
        uri = f"{SESSIONS}/{next(self._ids)}"
        token = secrets.token_hex(16)
        self.sessions[token] = uri
        doc = {"@odata.id": uri, "@odata.type": "#Session.v1_7_0.Session",
               "Id": uri.rsplit("/", 1)[-1], "UserName": user}  # fmt: skip
        return web.json_response(doc, status=201, headers={"X-Auth-Token": token, "Location": uri})

    async def logout(self, request: web.Request) -> web.Response:
        token = request.headers.get("X-Auth-Token", "")
        if self.sessions.get(token) == request.path:
            del self.sessions[token]
        elif request.path not in self.sessions.values():
            return web.json_response({"error": {"message": "no such session"}}, status=404)
        else:  # basic auth, or another session's token, may end any session
            self.sessions = {t: u for t, u in self.sessions.items() if u != request.path}
        return web.Response(status=204)

    # ------------------------------------------------------------------ resources

    async def root(self, _: web.Request) -> web.Response:
        return web.json_response({
            "@odata.id": R, "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
            "Id": "RootService", "Name": "Plant rack manager", "RedfishVersion": "1.17.0",
            "Chassis": _ref(f"{R}/Chassis"), "SessionService": _ref(f"{R}/SessionService"),
            "Links": {"Sessions": _ref(SESSIONS)},
        })  # fmt: skip

    async def session_service(self, _: web.Request) -> web.Response:
        return web.json_response({
            "@odata.id": f"{R}/SessionService",
            "@odata.type": "#SessionService.v1_1_9.SessionService",
            "Id": "SessionService", "ServiceEnabled": True, "SessionTimeout": 1800,
            "Sessions": _ref(SESSIONS),
        })  # fmt: skip

    async def sessions_list(self, _: web.Request) -> web.Response:
        uris = sorted(self.sessions.values())
        return web.json_response(
            _collection(SESSIONS, "#SessionCollection.SessionCollection", uris)
        )

    async def chassis_list(self, _: web.Request) -> web.Response:
        uris = [f"{R}/Chassis/{host}" for host in self.racks]
        return web.json_response(
            _collection(f"{R}/Chassis", "#ChassisCollection.ChassisCollection", uris)
        )

    def _rack(self, request: web.Request) -> str:
        host = request.match_info["id"]
        if host not in self.racks:
            raise web.HTTPNotFound()
        return host

    async def chassis(self, request: web.Request) -> web.Response:
        host = self._rack(request)
        uri = f"{R}/Chassis/{host}"
        return web.json_response({
            "@odata.id": uri, "@odata.type": "#Chassis.v1_25_0.Chassis", "Id": host,
            "Name": f"Rack {host}", "ChassisType": "Rack",
            "Status": {"State": "Enabled", "Health": "OK"},
            "Sensors": _ref(f"{uri}/Sensors"), "PowerSubsystem": _ref(f"{uri}/PowerSubsystem"),
        })  # fmt: skip

    async def sensors(self, request: web.Request) -> web.Response:
        uri = f"{R}/Chassis/{self._rack(request)}/Sensors"
        return web.json_response(
            _collection(uri, "#SensorCollection.SensorCollection", [f"{uri}/PowerConsumption"])
        )

    async def sensor(self, request: web.Request) -> web.Response:
        host = self._rack(request)
        if request.match_info["sensor"] != "PowerConsumption":
            raise web.HTTPNotFound()
        uri = f"{R}/Chassis/{host}/Sensors/PowerConsumption"
        reading = self._reading(host)
        state = "Enabled" if reading is not None else "UnavailableOffline"
        return web.json_response({
            "@odata.id": uri, "@odata.type": "#Sensor.v1_7_0.Sensor", "Id": "PowerConsumption",
            "Name": "Rack input power", "ReadingType": "Power", "ReadingUnits": "W",
            "Reading": reading, "PhysicalContext": "Rack",
            "Status": {"State": state, "Health": "OK"},
        })  # fmt: skip

    def _reading(self, host: str) -> float | None:
        snap = self.board.snapshot
        if snap is None:
            return None
        value = float(snap.measured["rack_power_w"][self.racks[host]])
        return None if math.isnan(value) else round(value, 3)

    async def power_subsystem(self, request: web.Request) -> web.Response:
        host = self._rack(request)
        uri = f"{R}/Chassis/{host}/PowerSubsystem"
        return web.json_response({
            "@odata.id": uri, "@odata.type": "#PowerSubsystem.v1_1_1.PowerSubsystem",
            "Id": "PowerSubsystem", "Name": "Rack power shelf",
            "Status": {"State": "Enabled", "Health": "OK"},
        })  # fmt: skip


def app(service: RedfishService) -> web.Application:
    application = web.Application(middlewares=[service.auth])
    add = application.router
    add.add_get(R, service.root)
    add.add_get(f"{R}/", service.root)
    add.add_get(f"{R}/SessionService", service.session_service)
    add.add_get(SESSIONS, service.sessions_list)
    add.add_post(SESSIONS, service.login)
    add.add_delete(f"{SESSIONS}/{{sid}}", service.logout)
    add.add_get(f"{R}/Chassis", service.chassis_list)
    add.add_get(f"{R}/Chassis/{{id}}", service.chassis)
    add.add_get(f"{R}/Chassis/{{id}}/Sensors", service.sensors)
    add.add_get(f"{R}/Chassis/{{id}}/Sensors/{{sensor}}", service.sensor)
    add.add_get(f"{R}/Chassis/{{id}}/PowerSubsystem", service.power_subsystem)
    return application
