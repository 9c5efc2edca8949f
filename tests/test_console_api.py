"""The console's HTTP face without a browser: who may act (403 otherwise), bad input (400
naming the field), the twin away (502), health, the offline assets and their policy.

The app runs in-process (Starlette's TestClient, its lifespan included); the twin's
address is a loopback port nobody listens on, so every check here is the console's own,
made before any gRPC call, and a call that does reach out reports the twin unreachable.
The same API against a running twin: tests/test_console_browser.py."""

from __future__ import annotations

import re
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.console import ConsoleConfig, create_app
from services.runtime.config import ConfigError

with warnings.catch_warnings():  # Starlette's notice that it prefers httpx2 (not installed)
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN = "t0ken-for-the-operators-0123"
OPERATOR = {"authorization": f"Bearer {TOKEN}"}
STATIC = Path(__file__).parent.parent / "services" / "console" / "static"
PAGES = Path(__file__).parent.parent / "services" / "console" / "pages"


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # closed again: nobody listens there


def _client(token: str | None) -> TestClient:
    config = ConsoleConfig.from_env(
        {"TWIN_CONSOLE_TWIN_ADDRESS": _closed_port(), "TWIN_CONSOLE_TOKEN": token or ""}
    )
    return TestClient(create_app(config, poll_s=0.2))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with _client(TOKEN) as started:
        yield started


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/run/pause", {}),
        ("/api/run/resume", {}),
        ("/api/run/stop", {}),
        ("/api/run/step", {"ticks": 1}),
        ("/api/run/speed", {"speed": 2}),
        ("/api/run/start", {"scenario": "fairwater-wi"}),
        ("/api/whatif/studies", {"variants": "a: cooling.supply_c=34"}),
    ],
)
def test_acting_without_the_token_is_403(client: TestClient, path: str, body: dict) -> None:
    reply = client.post(path, json=body)
    assert reply.status_code == 403
    assert reply.json() == {"error": "operator token required (Authorization: Bearer <token>)"}
    wrong = client.post(path, json=body, headers={"authorization": "Bearer " + "x" * 28})
    assert (wrong.status_code, wrong.json()) == (403, {"error": "the operator token is wrong"})
    basic = client.post(path, json=body, headers={"authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 403


def test_a_console_without_a_token_is_read_only() -> None:
    with _client(None) as client:
        reply = client.post("/api/run/pause", headers=OPERATOR)
        assert reply.status_code == 403
        assert reply.json() == {
            "error": "the console is read-only: no operator token is configured"
        }
        assert client.get("/api/session", headers=OPERATOR).json() == {
            "operator": False,
            "control": False,
        }


def test_session_tells_the_page_its_role(client: TestClient) -> None:
    assert client.get("/api/session").json() == {"operator": False, "control": True}
    assert client.get("/api/session", headers=OPERATOR).json() == {
        "operator": True,
        "control": True,
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "error"),
    [
        ("post", "/api/run/step", {"ticks": "x"}, "ticks: must be a number, not 'x'"),
        ("post", "/api/run/step", {"ticks": 0}, "ticks: must be >= 1"),
        ("post", "/api/run/step", {"ticks": 1.5}, "ticks: must be a whole number"),
        ("post", "/api/run/step", {"ticks": 200_000}, "ticks: must be at most 100000"),
        (
            "post",
            "/api/run/speed",
            {},
            "speed: required (a real-time factor; 0: as fast as possible)",
        ),
        ("post", "/api/run/speed", {"speed": -1}, "speed: must be >= 0"),
        ("post", "/api/run/speed", {"speed": True}, "speed: must be a number, not True"),
        ("post", "/api/run/speed", {"speed": "nan"}, "speed: must be finite"),
        ("post", "/api/run/pause", {"run_id": "a b"}, "run_id: 'a b' is not a run id"),
        (
            "post",
            "/api/run/start",
            {"scenario": ""},
            "scenario: required (a seeded scenario's name)",
        ),
        ("post", "/api/run/start", {"scenario": "x", "dt_s": 0}, "dt_s: must be > 0"),
        (
            "post",
            "/api/run/start",
            {"scenario": "x", "paused": "yes"},
            "paused: must be true or false",
        ),
        ("post", "/api/whatif/studies", {}, "variants: give at least one variant or grid axis"),
        (
            "post",
            "/api/whatif/studies",
            {"variants": "warm"},
            "variants line 1: expected name: path=value; path=value",
        ),
        (
            "post",
            "/api/whatif/studies",
            {"variants": "base: a.b=1"},
            "variants line 1: 'base' is not a variant name ('base' is reserved)",
        ),
        (
            "post",
            "/api/whatif/studies",
            {"variants": "a: a.b=1\na: a.b=2"},
            "variants: names must be unique",
        ),
        (
            "post",
            "/api/whatif/studies",
            {"variants": "a: cooling supply=1"},
            "variants line 1: 'cooling supply' is not a dotted path",
        ),
        (
            "post",
            "/api/whatif/studies",
            {"grid": "cooling.supply_c"},
            "grid line 1: expected path = v1, v2, ... or path = lo:hi:count",
        ),
        (
            "post",
            "/api/whatif/studies",
            {"variants": "a: x.y=1", "series": ["bogus_w"]},
            "series: 'bogus_w' is not a known metric",
        ),
        ("get", "/api/history/query", None, "run: required"),
        (
            "get",
            "/api/history/query?run=r1&metrics=bogus",
            None,
            "metrics: 'bogus' is not a known metric",
        ),
        ("get", "/api/history/query?run=r1&bucket_s=-5", None, "bucket_s: must be >= 0"),
        ("get", "/api/history/compare?a=r1", None, "b: required"),
        (
            "get",
            "/api/history/export?run=r1&format=xlsx",
            None,
            "format: 'xlsx' is not csv or parquet",
        ),
    ],
)
def test_bad_input_is_400_naming_the_field(
    client: TestClient, method: str, path: str, body: dict | None, error: str
) -> None:
    reply = client.post(path, json=body, headers=OPERATOR) if method == "post" else client.get(path)
    assert (reply.status_code, reply.json()) == (400, {"error": error})


def test_a_body_that_is_not_json_is_400(client: TestClient) -> None:
    reply = client.post("/api/run/pause", content=b"{not json", headers=OPERATOR)
    assert (reply.status_code, reply.json()) == (400, {"error": "body: is not JSON"})
    reply = client.post("/api/run/pause", json=[1, 2], headers=OPERATOR)
    assert (reply.status_code, reply.json()) == (400, {"error": "body: must be a JSON object"})


def test_the_twin_away_is_502_and_health_says_so(client: TestClient) -> None:
    reply = client.post("/api/run/pause", headers=OPERATOR)
    assert reply.status_code == 502
    assert reply.json()["error"].startswith("twin: ")
    assert reply.json()["error"].endswith("(UNAVAILABLE)")
    assert client.get("/api/history/runs").status_code == 502
    assert client.get("/healthz").json() == {"status": "SERVING", "twin": "unreachable"}


def test_metrics_are_the_stored_history_columns(client: TestClient) -> None:
    from twin_core import contract

    listed = client.get("/api/history/metrics").json()
    assert [m["name"] for m in listed] == [q.name for q in contract.HISTORY]
    assert {"name": "pue", "unit": "1", "about": contract.QUANTITY["pue"].doc} in listed


def test_pages_load_only_this_origins_assets(client: TestClient) -> None:
    for path in ("/", "/control", "/history", "/whatif"):
        reply = client.get(path)
        assert reply.status_code == 200
        assert reply.headers["content-security-policy"].startswith("default-src 'self'")
        assets = re.findall(r'(?:src|href)="([^"]+)"', reply.text)
        assert all(a.startswith(("/", "#", "data:")) for a in assets), assets
        for asset in (a for a in assets if a.startswith("/static/")):
            assert client.get(asset).status_code == 200, asset
    # No hand-written file names another origin; the vendored chart library ships its licence.
    for path in [*STATIC.glob("*.*"), *PAGES.glob("*.html")]:
        assert not re.search(r"https?://", path.read_text()), path
    assert (STATIC / "vendor" / "uPlot.LICENSE").read_text().startswith("The MIT License")


def test_the_token_must_not_be_guessable() -> None:
    with pytest.raises(ConfigError, match=r"^TWIN_CONSOLE_TOKEN: must be at least 16 characters"):
        ConsoleConfig.from_env({"TWIN_CONSOLE_TOKEN": "short"})
    with pytest.raises(
        ConfigError, match=r"^TWIN_CONSOLE_TWIN_ADDRESS: 'nowhere' is not host:port"
    ):
        ConsoleConfig.from_env({"TWIN_CONSOLE_TWIN_ADDRESS": "nowhere"})
