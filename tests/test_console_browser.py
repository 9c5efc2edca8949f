"""The web console in a real browser (Debian's chromium, headless, driven by Playwright)
against a running small-site twin: the overview follows the ticks, the control page
pauses the run, history compares two stored runs, a what-if study runs from its page.
Every page is checked for JavaScript errors (a blocked off-origin load is one: the
console's CSP allows only its own origin); screenshots go to <pytest tmp>/artifacts."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from services.console.process import ConsoleProcess, new_token
from services.launcher import LocalTwin, free_addresses
from twin.history.v1 import history_pb2, history_pb2_grpc
from twin.twin.v1 import clock_pb2, snapshot_pb2, twin_pb2, twin_pb2_grpc
from twin.whatif.v1 import whatif_pb2, whatif_pb2_grpc

pytestmark = pytest.mark.xdist_group("console")

SMALL = Path(__file__).parent / "sites" / "small.yaml"
CHROMIUM = shutil.which("chromium")
DT_S = 10.0
STORED_STEPS = 90  # run A: 15 simulated minutes at 10 s
TOKEN = new_token()


def _skip_without_browser() -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): no browser tests")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Iterator[LocalTwin]:
    _skip_without_browser()
    logs = tmp_path_factory.mktemp("console-twin")
    with LocalTwin(
        "small",
        free_addresses(),
        env={"TWIN_SCENARIO": str(SMALL)},  # what studies that name no scenario run on
        ready_timeout_s=300,
        log_path=str(logs / "services.log"),
    ) as started:
        yield started


@pytest.fixture(scope="module")
def stub(twin: LocalTwin) -> Iterator[Any]:
    with grpc.insecure_channel(twin.addresses["twin"]) as channel:
        yield twin_pb2_grpc.TwinServiceStub(channel)


@pytest.fixture(scope="module")
def history(twin: LocalTwin) -> Iterator[Any]:
    with grpc.insecure_channel(twin.addresses["historian"]) as channel:
        yield history_pb2_grpc.HistoryServiceStub(channel)


def _start(stub: Any, horizon_s: float, speed: clock_pb2.Speed) -> str:
    spec = clock_pb2.RunSpec(scenario_yaml=SMALL.read_text(), dt_s=DT_S, horizon_s=horizon_s)
    return stub.Start(twin_pb2.StartRequest(spec=spec, speed=speed), timeout=300).run_id


def _until(what: str, check, timeout_s: float = 120.0, every_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(every_s)


@pytest.fixture(scope="module")
def runs(stub: Any, history: Any) -> dict[str, str]:
    """Run A: 90 steps as fast as possible, stored whole; run B: live, 2 ticks a second."""
    run_a = _start(stub, STORED_STEPS * DT_S, clock_pb2.Speed(as_fast_as_possible=True))

    def stored() -> bool:
        listed = history.ListRuns(history_pb2.ListRunsRequest(), timeout=10).runs
        return any(r.run_id == run_a and r.steps_stored >= STORED_STEPS for r in listed)

    _until("run A stored", stored, 300)
    run_b = _start(stub, 0, clock_pb2.Speed(real_time_factor=2 * DT_S))
    _until("run B stored", lambda: history.Query(
        history_pb2.QueryRequest(run_id=run_b, metrics=["facility_w"]), timeout=10
    ).rows, 120)  # fmt: skip
    return {"a": run_a, "b": run_b}


@pytest.fixture(scope="module")
def console(twin: LocalTwin, runs: dict[str, str], tmp_path_factory) -> Iterator[ConsoleProcess]:
    log = tmp_path_factory.mktemp("console") / "console.log"
    with ConsoleProcess(
        twin.addresses["twin"],
        history_address=twin.addresses["historian"],
        instance_id=twin.instance_id,
        token=TOKEN,
        log_path=str(log),
    ) as started:
        yield started


@pytest.fixture(scope="module")
def browser(console: ConsoleProcess) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, tmp_path_factory, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page; after the test, its screenshot and no JavaScript errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    # A navigation aborts the page's live stream (net::ERR_ABORTED): not a failure.
    opened.on(
        "requestfailed",
        lambda r: (
            None
            if "ERR_ABORTED" in (r.failure or "")
            else errors.append(f"request failed: {r.url} ({r.failure})")
        ),
    )
    yield opened
    artifacts = tmp_path_factory.getbasetemp() / "artifacts"
    artifacts.mkdir(exist_ok=True)
    opened.screenshot(path=str(artifacts / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert errors == [], f"JavaScript console errors: {errors}"


def _snapshot(stub: Any) -> snapshot_pb2.SiteSnapshot:
    return stub.GetSnapshot(twin_pb2.GetSnapshotRequest(), timeout=10).snapshot


def _shown(page: Any) -> dict[str, Any]:
    """The snapshot on screen and the texts the page shows for it, read at one instant."""
    return page.evaluate(
        """() => ({
            snapshot: window.consoleSnapshot,
            texts: Object.fromEntries([...document.querySelectorAll('[data-q]')]
                .map((el) => [el.dataset.q, el.textContent])),
            cells: [...document.querySelectorAll('#heatmap .cdu')].map((el) => el.title),
            header: document.getElementById('run').textContent,
        })"""
    )


def _fixed(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def test_overview_loads_and_follows_the_ticks(console: ConsoleProcess, page: Any,
                                              stub: Any, runs: dict[str, str]) -> None:  # fmt: skip
    page.goto(console.url)
    page.wait_for_function("() => window.consoleSnapshot && window.consoleSnapshot.step > 0")
    first = _shown(page)
    snap = first["snapshot"]
    assert snap["run_id"] == runs["b"] and snap["state"] == "running"
    assert snap["site_id"] == "small"
    q = snap["quantities"]
    # The contract's PUE is the facility meter over IT power.
    assert q["pue"] == pytest.approx(q["facility_w"] / q["it_w"], rel=1e-6)
    assert 1.0 < q["pue"] < 1.5
    texts = first["texts"]
    assert texts["pue"] == _fixed(q["pue"], 3)
    assert texts["facility_w"] == _fixed(q["facility_w"] * 1e-6, 2)
    assert texts["gpu_temp_max_c"] == _fixed(q["gpu_temp_max_c"], 1)
    # The heat map: hall-a's two CDUs (tests/sites/small.yaml), as the snapshot has them.
    (hall,) = snap["halls"]
    assert hall["name"] == "hall-a" and len(hall["tcs_supply_c"]) == 2
    assert first["cells"] == [
        f"hall-a CDU {i + 1}: {_fixed(t, 2)} °C" for i, t in enumerate(hall["tcs_supply_c"])
    ]
    assert max(hall["tcs_supply_c"]) == pytest.approx(q["tcs_supply_max_c"], rel=1e-9)
    assert f"step {snap['step']}" in first["header"]
    # Two ticks a second: the page moves on by itself.
    page.wait_for_function(
        f"() => window.consoleSnapshot.step >= {snap['step'] + 3}", timeout=30_000
    )
    later = _shown(page)
    assert later["snapshot"]["seq"] > snap["seq"]
    assert later["texts"]["pue"] == _fixed(later["snapshot"]["quantities"]["pue"], 3)
    assert abs(_snapshot(stub).step - later["snapshot"]["step"]) <= 5
    page.wait_for_function("() => document.querySelectorAll('#trend canvas').length > 0")


def test_pausing_from_the_page_pauses_the_run(console: ConsoleProcess, page: Any, stub: Any,
                                              runs: dict[str, str]) -> None:  # fmt: skip
    page.goto(console.url + "control")  # a viewer: the buttons are off
    page.wait_for_function("() => document.getElementById('role').textContent.includes('viewer')")
    assert page.is_disabled("#pause")
    page.goto("about:blank")  # else only the fragment changes: no new document
    page.goto(console.url + "control#token=" + TOKEN)
    page.wait_for_function("() => document.body.classList.contains('operator')")
    assert page.url == console.url + "control"  # the token left the address bar
    page.wait_for_function("() => window.consoleSnapshot !== undefined")
    assert _snapshot(stub).state == snapshot_pb2.RUN_STATE_RUNNING
    page.click("#pause")
    page.wait_for_function("() => document.getElementById('state').textContent === 'paused'")
    paused = _snapshot(stub)
    assert paused.state == snapshot_pb2.RUN_STATE_PAUSED and paused.run_id == runs["b"]
    time.sleep(2)  # four ticks' worth at the run's pace
    assert _snapshot(stub).step == paused.step
    assert page.text_content("#step") == _fixed(paused.step, 0)
    page.fill("#ticks", "3")
    page.click("#step-form button")
    page.wait_for_function(f"() => document.getElementById('step').textContent === "
                           f"'{_fixed(paused.step + 3, 0)}'")  # fmt: skip
    assert _snapshot(stub).step == paused.step + 3
    page.click("#resume")
    _until("the run resumes", lambda: _snapshot(stub).step > paused.step + 3, 30)
    page.wait_for_function("() => document.getElementById('state').textContent === 'running'")


def test_history_compare_draws_both_runs(console: ConsoleProcess, page: Any, history: Any,
                                         runs: dict[str, str]) -> None:  # fmt: skip
    page.goto(console.url + "history")
    page.wait_for_selector(f"tr[data-run='{runs['a']}']")
    page.check(f"tr[data-run='{runs['a']}'] input[name=a]")
    page.check(f"tr[data-run='{runs['b']}'] input[name=b]")
    page.select_option("#metrics", ["facility_w", "pue"])
    page.fill("#bucket", "60")
    page.click("#compare")
    page.wait_for_function("() => window.consolePlot && window.consolePlot.series.length === 5")
    drawn = page.evaluate(
        """() => ({labels: window.consolePlot.series.map((s) => s.label),
                   data: window.consolePlot.data})"""
    )
    assert drawn["labels"] == ["time", "facility_w A", "facility_w B", "pue A", "pue B"]
    reply = history.CompareRuns(
        history_pb2.CompareRunsRequest(
            run_a=runs["a"], run_b=runs["b"], metrics=["facility_w", "pue"], bucket_s=60
        ),
        timeout=30,
    )
    # Run A's samples are stamped at the end of each step, 10 s to 900 s: fifteen whole
    # one-minute buckets and a sixteenth holding the sample at 900 s alone.
    times = drawn["data"][0]
    assert times[:16] == pytest.approx([i / 60 for i in range(16)])
    a_facility = [v for v in drawn["data"][1] if v is not None]
    b_facility = [v for v in drawn["data"][2] if v is not None]
    assert len(a_facility) == 16 and len(b_facility) >= 1
    assert a_facility == pytest.approx([r.a[0] for r in reply.rows if r.a[0] == r.a[0]])
    cells = page.eval_on_selector_all("#summary tr", "rows => rows.map(r => r.innerText)")
    assert cells[1].split("\t")[:2] == ["facility_w", _fixed(reply.a.metrics[0].avg, 0)]
    # Export: run A's series as CSV, a header and one line per stored step.
    href = page.get_attribute("#export", "href")
    assert href is not None
    csv = page.request.get(console.url.rstrip("/") + href).text()
    lines = csv.strip().splitlines()
    assert lines[0] == "time_s,step,facility_w,pue"
    assert len(lines) == 1 + STORED_STEPS


def test_whatif_study_from_the_page(console: ConsoleProcess, page: Any, twin: LocalTwin) -> None:
    page.goto(console.url + "whatif#token=" + TOKEN)
    page.wait_for_function("() => document.body.classList.contains('operator')")
    page.fill("[name=name]", "browser study")
    page.fill("[name=duration]", "30min")
    page.fill("[name=variants]", "warmer: cooling.supply_c=34")
    page.click("#study-form button[type=submit]")
    page.wait_for_selector("#results tr.variant >> nth=1", timeout=600_000)
    title = page.text_content("#study-title") or ""
    match = re.match(r"browser study \(([\w-]+)\): done", title)
    assert match, title
    with grpc.insecure_channel(twin.addresses["twin"]) as channel:
        study = (
            whatif_pb2_grpc.WhatIfServiceStub(channel)
            .GetStudy(whatif_pb2.GetStudyRequest(study_id=match[1]), timeout=30)
            .study
        )
    base, warmer = study.variants
    assert (base.name, warmer.name) == ("base", "warmer")
    rows = page.eval_on_selector_all("#results tr.variant", "rows => rows.map(r => r.innerText)")
    assert rows[0].split("\t")[:3] == ["base", "yes" if base.passed else "no",
                                      _fixed(base.kpis["pue"], 3)]  # fmt: skip
    # Facility water 4 K warmer: the racks' supply rises by about as much.
    assert warmer.kpis["max_supply_c"] - base.kpis["max_supply_c"] > 3.0
    page.wait_for_function("() => window.consolePlot && window.consolePlot.series.length === 3")
    assert page.locator("#studies li", has_text="browser study").count() >= 1


def test_live_stream_fans_out_one_watch(console: ConsoleProcess) -> None:
    """Three viewers get the same frames; the console reads one Watch stream for all."""
    with httpx.Client(base_url=console.url, timeout=30) as client:
        before = client.get("/api/stats").json()
        seqs: list[list[int]] = []
        with (
            client.stream("GET", "/api/live") as s1,
            client.stream("GET", "/api/live") as s2,
            client.stream("GET", "/api/live") as s3,
        ):
            assert client.get("/api/stats").json()["viewers"] == before["viewers"] + 3
            for stream in (s1, s2, s3):
                assert stream.headers["content-type"].startswith("text/event-stream")
                ids = []
                for line in stream.iter_lines():
                    if line.startswith("id: "):
                        ids.append(int(line[4:]))
                        if len(ids) == 5:
                            break
                seqs.append(ids)
        # A viewer that hangs up is forgotten (when the server sees the disconnect).
        after = _until(
            "the viewers are gone",
            lambda: (s := client.get("/api/stats").json())["viewers"] == before["viewers"] and s,
            10,
        )
    for ids in seqs:  # consecutive: no frame lost
        assert ids == list(range(ids[0], ids[0] + 5))
    assert after["upstream_errors"] == before["upstream_errors"]


def test_twin_rejections_reach_the_page_as_400(console: ConsoleProcess) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=console.url, timeout=60) as client:
        reply = client.post(
            "/api/whatif/studies",
            json={"variants": "odd: cooling.no_such_field=3", "duration": "1h"},
            headers=headers,
        )
        assert reply.status_code == 400
        assert "cooling.no_such_field" in reply.json()["error"]
        reply = client.get("/api/history/query", params={"run": "nosuchrun"})
        assert reply.status_code == 404
        assert "nosuchrun" in reply.json()["error"]
        reply = client.post("/api/run/step", json={"ticks": 2}, headers=headers)
        assert reply.status_code == 409  # the live run is not paused
        assert reply.json() == {"error": "state: Step needs a paused run"}
