"""The console's ASGI app: pages, static files, the live SSE stream, the JSON API and a
health endpoint. ``create_app(config)``; the lifespan opens the twin's channels and the
one upstream ``Watch``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console import api
from services.console.config import ConsoleConfig
from services.console.hub import Hub
from services.console.upstream import Upstream

HERE = Path(__file__).parent
PAGES = {"/": "overview", "/control": "control", "/history": "history", "/whatif": "whatif"}
TITLES = {"overview": "Site", "control": "Run control", "history": "History", "whatif": "What-if"}
# Everything from this origin: no CDN, no inline script (the browser tests would see a
# violation as a console error).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


@cache
def page_html(name: str) -> str:
    layout = (HERE / "pages" / "layout.html").read_text()
    nav = "".join(
        f'<a href="{path}"{" class=here" if page == name else ""}>{TITLES[page]}</a>'
        for path, page in PAGES.items()
    )
    return (
        layout.replace("{title}", TITLES[name])
        .replace("{nav}", nav)
        .replace("{body}", (HERE / "pages" / f"{name}.html").read_text())
        .replace("{script}", f"/static/{name}.js")
        .replace("{page}", name)
    )


async def page(request: Request) -> Response:
    return HTMLResponse(page_html(PAGES[request.url.path]))


async def live(request: Request) -> Response:
    """Server-Sent Events: one ``snapshot`` event per published update."""
    hub: Hub = request.app.state.console.hub

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(hub.frames(), media_type="text/event-stream", headers=headers)


async def healthz(request: Request) -> Response:
    """SERVING while the app runs; ``twin`` says whether the twin answers (a console whose
    twin is away still serves its pages and says so)."""
    hub: Hub = request.app.state.console.hub
    return JSONResponse(
        {"status": "SERVING", "twin": "connected" if hub.connected else "unreachable"}
    )


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(config: ConsoleConfig, **hub_options: Any) -> Starlette:
    """The app; ``hub_options`` tune the live hub (tests: a shorter poll)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        upstream = Upstream(config)
        hub = Hub(upstream, **hub_options)
        app.state.console = api.Console(config, upstream, hub)
        hub.start()
        try:
            yield
        finally:
            await hub.stop()
            for task in list(app.state.console.tasks):
                task.cancel()
            await upstream.close()

    e = api.endpoint
    routes = [
        *(Route(path, page) for path in PAGES),
        Route("/healthz", healthz),
        Route("/api/live", live),
        Route("/api/session", e(api.session)),
        Route("/api/snapshot", e(api.snapshot)),
        Route("/api/stats", e(api.stats)),
        Route("/api/run/{action}", e(api.control), methods=["POST"]),
        Route("/api/history/metrics", e(api.metrics)),
        Route("/api/history/runs", e(api.runs)),
        Route("/api/history/query", e(api.query)),
        Route("/api/history/compare", e(api.compare)),
        Route("/api/history/export", e(api.export)),
        Route("/api/whatif/studies", e(api.studies), methods=["GET"]),
        Route("/api/whatif/studies", e(api.run_study), methods=["POST"]),
        Route("/api/whatif/studies/{study_id}", e(api.study)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)])
