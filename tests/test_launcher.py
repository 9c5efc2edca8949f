"""`twin up` and the launcher: instance identity, ports, start-up, supervision, and the
smaller findings of issue 10 (reflection, CLI errors, id columns, JAX's probe lines)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil
import pytest
import typed_stubs
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from typer.testing import CliRunner

from services.cli.main import app
from services.launcher import LocalTwin, Probe, free_addresses, probe
from services.runtime.grpc_server import GrpcServer
from twin.twin.v1 import clock_pb2, snapshot_pb2, twin_pb2, twin_pb2_grpc

ROOT = Path(__file__).parent.parent
SMALL = ROOT / "tests" / "sites" / "small.yaml"


def _listening_socket() -> socket.socket:
    """A loopback port that something listens on (what a running twin looks like)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


class _StuckTwin(twin_pb2_grpc.TwinServiceServicer):
    """A run that stays at step 3."""

    async def GetSnapshot(self, request, context):
        return twin_pb2.GetSnapshotResponse(snapshot=snapshot_pb2.SiteSnapshot(step=3))


def _serve(instance_id: str | None, servicer=None):
    """A GrpcServer with the generated TwinService registered (as every service does),
    started on a free port, in a background event loop; returns (address, stop)."""
    import threading

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    server: GrpcServer | None = None

    async def start() -> int:
        nonlocal server  # made on its loop: grpc.aio binds a server to the running loop
        server = GrpcServer("127.0.0.1:0", instance_id=instance_id)
        server.add_servicer(
            twin_pb2_grpc.add_TwinServiceServicer_to_server,
            servicer or twin_pb2_grpc.TwinServiceServicer(),
        )
        return await server.start()

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)

    def stop() -> None:
        assert server is not None
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)

    return f"127.0.0.1:{port}", stop


def test_reflection_lists_each_service_once() -> None:
    address, stop = _serve(None)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = typed_stubs.reflection(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))
        names = [s.name for s in reply.list_services_response.service]
    finally:
        stop()
    assert sorted(names) == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "twin.twin.v1.TwinService",
    ]


def test_every_response_names_the_instance_and_other_instances_are_refused() -> None:
    address, stop = _serve("twin-a")
    try:
        with grpc.insecure_channel(address) as channel:
            health = typed_stubs.health(channel)
            _, call = health.Check.with_call(health_pb2.HealthCheckRequest(), timeout=10)
            assert ("x-twin-instance", "twin-a") in call.initial_metadata()
            mine = (("x-twin-instance", "twin-a"),)
            health.Check(health_pb2.HealthCheckRequest(), metadata=mine, timeout=10)
            twin = twin_pb2_grpc.TwinServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                twin.Pause(twin_pb2.PauseRequest(), metadata=(("x-twin-instance", "twin-b"),))
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert info.value.details() == (
                "wrong twin: this is instance twin-a, the call is for instance 'twin-b'"
            )
            # The error still says whose service answered.
            assert isinstance(info.value, grpc.Call)  # a sync call's error is its Call too
            assert ("x-twin-instance", "twin-a") in info.value.initial_metadata()
        assert probe(address, timeout_s=10, instance_id="twin-a") == Probe("SERVING", "twin-a")
        assert probe(address, timeout_s=10, instance_id="twin-b") == Probe("OTHER_TWIN", "twin-a")
    finally:
        stop()
    # A service without an instance id (no `twin up`) is not this twin's either.
    address, stop = _serve(None)
    try:
        assert probe(address, instance_id="twin-a") == Probe("OTHER_TWIN", None)
        assert probe(address) == Probe("SERVING", None)
    finally:
        stop()


def test_twin_up_fails_in_one_line_on_a_taken_port(tmp_path: Path) -> None:
    taken = _listening_socket()
    port = taken.getsockname()[1]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "up", str(SMALL), "--duration", "1m",
             "--dt", "10s", "--base-port", str(port), "--log-dir", str(tmp_path / "logs")],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "COLUMNS": "200", "TMPDIR": str(tmp_path)},
        )  # fmt: skip
    finally:
        taken.close()
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert re.fullmatch(r"twin small: instance [0-9a-f]{12}, logs in .*logs", lines[0])
    assert lines[1:] == [
        f"error: twin did not start: port 127.0.0.1:{port} (twin) is in use (Address already "
        "in use): another twin may be running; use --base-port 0 for free ports"
    ]
    assert not list(tmp_path.glob("twin-*"))  # nothing started, nothing left


def _children_of(instance: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["environ"]):
        try:
            if (process.info["environ"] or {}).get("TWIN_INSTANCE_ID") == instance:
                found.append(process)
        except (psutil.Error, AttributeError):
            continue
    return found


def _up(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """``twin up`` of the small site on free ports, and its instance id once it says it."""
    up = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", str(SMALL), "--base-port", "0",
         "--log-dir", str(tmp_path / "logs"), *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200", "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert up.stderr is not None
    first = up.stderr.readline()
    started = re.fullmatch(r"twin small: instance ([0-9a-f]{12}), logs in .*\n", first)
    if not started:
        up.kill()
        raise AssertionError(first)
    return up, started[1]


def _serves(process: psutil.Process, name: str) -> bool:
    try:
        return process.cmdline()[-2:] == ["serve", name]
    except psutil.Error:  # gone meanwhile (initdb and other short-lived helpers)
        return False


def test_start_up_shows_progress_and_fails_in_one_line_leaving_nothing(tmp_path: Path) -> None:
    """Services that are not serving within --ready-timeout: progress lines while waiting,
    then one line naming them and the log, no traceback, no folder or process left."""
    up, instance = _up(tmp_path, "--ready-timeout", "6s")
    try:
        # A warm compilation cache can bring the whole twin up inside 6 s: hold the twin
        # service (stopped, not killed) so that it cannot answer in time on any machine.
        deadline = time.monotonic() + 60
        while not (held := [p for p in _children_of(instance) if _serves(p, "twin")]):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        held[0].suspend()
        _, err = up.communicate(timeout=120)
    finally:
        up.kill()
    lines = err.rstrip().splitlines()
    assert up.returncode == 2, err
    assert "Traceback" not in err
    assert re.fullmatch(r"  starting \(5 s\): up [a-z, ]*; waiting for [a-z, ]*twin", lines[0]), (
        lines
    )
    # A service still starting has no handler yet and ends by the signal itself; the held
    # twin is one of them. Nothing else is printed between the progress and the error.
    ended = [re.fullmatch(r"  ([a-z]+) ended with SIGTERM when stopped", x) for x in lines[1:-1]]
    assert all(ended) and "twin" in [m[1] for m in ended if m], lines
    log = tmp_path / "logs" / "services.log"
    assert re.fullmatch(
        rf"error: twin did not start: not serving after 6 s: [a-z, ]*twin \(log: {log}\)", lines[-1]
    ), lines
    assert log.exists()
    # No twin-pg-*, twin-nats-* (runtime-*: pgserver's lock folder, shared by all its users).
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("runtime-")] == ["logs"]
    assert _children_of(instance) == []


def test_sigterm_while_starting_leaves_nothing_behind(tmp_path: Path) -> None:
    up, instance = _up(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(_children_of(instance)) < 6:  # the services are starting
            assert time.monotonic() < deadline
            time.sleep(0.1)
        up.send_signal(signal.SIGTERM)
        _, err = up.communicate(timeout=120)
    finally:
        up.kill()
    assert up.returncode == 2, err
    assert err.strip().splitlines()[-1] == "error: interrupted while starting; everything stopped"
    assert "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("runtime-")] == ["logs"]
    assert _children_of(instance) == []


def test_sigkill_of_twin_up_leaves_nothing_behind(tmp_path: Path) -> None:
    """Killed outright, ``twin up`` cannot stop its twin: its reaper stops the services,
    nats-server and PostgreSQL and removes their folders."""
    up, instance = _up(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(_children_of(instance)) < 6:  # the servers are up, the services starting
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ours = [p for p in psutil.process_iter() if _mentions(p, tmp_path)]
        assert {"nats-server", "postgres"} <= {Path(p.cmdline()[0]).name for p in ours}
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        deadline = time.monotonic() + 60
        while left := _children_of(instance) + [p for p in ours if _mentions(p, tmp_path)]:
            assert time.monotonic() < deadline, left
            time.sleep(0.2)
    finally:
        up.kill()
    assert [p for p in psutil.process_iter() if _mentions(p, tmp_path)] == []  # the reaper too
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("runtime-")] == ["logs"]


def _mentions(process: psutil.Process, folder: Path) -> bool:
    """``process`` runs with ``folder`` in its command line (and is not a zombie)."""
    try:
        running = process.status() != psutil.STATUS_ZOMBIE
        return running and any(str(folder) in arg for arg in process.cmdline())
    except psutil.Error:
        return False


def test_a_run_that_does_not_progress_ends_twin_up_with_one_line(capsys) -> None:
    """`twin up --duration` waits for the run's last step: a run stuck at one step ends it
    after the stall timeout with one line (no endless 'step 3/10' every 5 s)."""
    import threading
    from types import SimpleNamespace

    import typer

    from services.cli.live import _wait_for_step

    address, stop = _serve("twin-a", _StuckTwin())
    try:
        started = time.monotonic()
        with pytest.raises(typer.Exit) as info:
            twin = SimpleNamespace(log_location="/x/services.log")
            _wait_for_step(address, "r1", 10, threading.Event(), 1.5, "twin-a", twin)
        assert 1.5 <= time.monotonic() - started < 10
    finally:
        stop()
    assert info.value.exit_code == 2
    assert capsys.readouterr().err == (
        "error: run r1 made no progress for 1.5 s (step 3 of 10); logs: /x/services.log\n"
    )


def test_cli_says_no_twin_in_one_line() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["history", "runs", "--address", f"127.0.0.1:{port}"]
    )
    assert result.exit_code == 2
    assert result.output == (
        f"error: no twin at 127.0.0.1:{port}: connection refused (is `twin up` running?)\n"
    )


def test_run_ids_are_never_cut_in_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    from services.cli import history
    from twin.history.v1 import history_pb2

    run_id = "0123456789abcdef0123456789abcdef"
    reply = history_pb2.ListRunsResponse(
        runs=[
            history_pb2.Run(
                run_id=run_id,
                site_id="fairwater-wi",
                scenario="fairwater-wi",
                started_at=Timestamp(seconds=1_790_000_000),
                dt_s=10,
                horizon_s=86_400,
                status="completed",
                steps_stored=8640,
            )
        ]
    )
    monkeypatch.setattr(history, "history_call", lambda *args: reply)
    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["history", "runs"])
    assert result.exit_code == 0, result.output
    assert run_id in result.output
    assert "2026-09-21T14:13:20Z" in result.output


def test_jax_platform_probe_lines_are_quiet() -> None:
    code = (
        "from services.runtime.log import setup_logging\n"
        "setup_logging('INFO')\n"
        "import jax\n"
        "jax.devices()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "xla_bridge" not in done.stderr and "Unable to initialize backend" not in done.stderr


def _run(address: str, steps: int, instance: str) -> str:
    spec = clock_pb2.RunSpec(scenario_yaml=SMALL.read_text(), dt_s=10, horizon_s=10 * steps)
    start = twin_pb2.StartRequest(spec=spec, speed=clock_pb2.Speed(as_fast_as_possible=True))
    with grpc.insecure_channel(address) as channel:
        stub = twin_pb2_grpc.TwinServiceStub(channel)
        meta = (("x-twin-instance", instance),)
        run_id = stub.Start(start, timeout=300, metadata=meta).run_id
        deadline = time.monotonic() + 120
        while True:
            request = twin_pb2.GetSnapshotRequest(run_id=run_id)
            if stub.GetSnapshot(request, timeout=30, metadata=meta).snapshot.step >= steps:
                return run_id
            assert time.monotonic() < deadline, "the run did not end"
            time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_two_twins_run_side_by_side_and_a_third_fails_on_the_taken_port(tmp_path) -> None:
    import psycopg

    with (
        LocalTwin("small", free_addresses(), ready_timeout_s=180) as a,
        LocalTwin("small", free_addresses(), ready_timeout_s=180) as b,
    ):
        assert a.instance_id != b.instance_id and a.nats_url != b.nats_url
        run_a = _run(a.addresses["twin"], 12, a.instance_id)
        run_b = _run(b.addresses["twin"], 6, b.instance_id)
        assert run_a != run_b
        for twin, other in ((a, b), (b, a)):
            for name, address in twin.addresses.items():
                assert probe(address, instance_id=twin.instance_id).status == "SERVING", name
                assert probe(address, instance_id=other.instance_id) == Probe(
                    "OTHER_TWIN", twin.instance_id
                )
        # Each twin stores only its own run.
        for twin, run_id, steps in ((a, run_a, 12), (b, run_b, 6)):
            deadline = time.monotonic() + 60
            assert twin.database_url is not None
            while True:
                with psycopg.connect(twin.database_url) as conn:
                    rows = conn.execute("SELECT run_id, count(*) FROM site_series GROUP BY 1")
                    stored = dict(rows.fetchall())
                if stored == {run_id: steps} or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert stored == {run_id: steps}
        # `twin up` on the first twin's ports: one line, before anything starts.
        port = a.addresses["twin"].rsplit(":", 1)[1]
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "up", str(SMALL), "--duration", "10m",
             "--dt", "10s", "--base-port", port, "--report", str(tmp_path / "b")],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.strip().splitlines()[-1] == (
            f"error: twin did not start: port 127.0.0.1:{port} (twin) is in use (Address "
            "already in use): another twin may be running; use --base-port 0 for free ports"
        )
        # The first twin still runs its own site, untouched.
        with grpc.insecure_channel(a.addresses["twin"]) as channel:
            snapshot = twin_pb2_grpc.TwinServiceStub(channel).GetSnapshot(
                twin_pb2.GetSnapshotRequest(run_id=run_a), timeout=30
            )
        assert snapshot.snapshot.step == 12


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_supervisor_restarts_a_service_and_nats_then_gives_up_in_one_line() -> None:
    import nats

    events: list[str] = []
    with LocalTwin(
        "small",
        free_addresses(),
        ready_timeout_s=180,
        supervise=True,
        max_restarts=1,
        on_event=events.append,
    ) as twin:
        events.clear()  # start-up progress lines
        compute = twin.processes["compute"]
        compute.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 120
        while probe(twin.addresses["compute"], instance_id=twin.instance_id).status != "SERVING":
            assert time.monotonic() < deadline, events
            time.sleep(0.2)
        assert twin.processes["compute"].pid != compute.pid
        assert events == ["compute exited with status -9; restarting it (restart 1 of 1)"]

        server = twin.nats
        assert server is not None and server.pid is not None  # the twin started its own
        port, store = server.port, server.store_dir
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(events) < 2 or not server.running:
            assert time.monotonic() < deadline, events
            time.sleep(0.1)
        assert events[1] == (
            f"nats-server died (exit status -9); restarting it on port {port} with its "
            "JetStream store (restart 1 of 1)"
        )
        assert (server.port, server.store_dir) == (port, store)
        url = twin.nats_url
        assert url is not None

        async def buckets() -> list[str]:  # the run bucket the twin declared survived
            nc = await nats.connect(url)
            try:
                return [s.config.name async for s in _streams(nc.jetstream())]
            finally:
                await nc.close()

        assert "KV_twin-small-run" in asyncio.run(buckets())

        assert server.pid is not None  # the restarted one
        os.kill(server.pid, signal.SIGKILL)
        assert twin.failed.wait(30), events
        assert twin.failure == (
            "nats-server died (exit status -9) after 1 restarts within 600 s; stopped the twin "
            f"(log: {server.log_path})"
        )
        assert events[-1] == f"error: {twin.failure}"
        assert all(p.poll() is not None for p in twin.processes.values())


async def _streams(js):
    for info in await js.streams_info():
        yield info


def test_twin_up_serves_the_console(tmp_path: Path) -> None:
    """`twin up` prints the web console's address with a fresh operator token; the console
    shows this run, acts with the token only, and stops with the twin."""
    import httpx

    up = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", str(SMALL), "--base-port", "0",
         "--speed", "5", "--log-dir", str(tmp_path / "logs")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "COLUMNS": "200", "TWIN_CONSOLE_TOKEN": ""},
    )  # fmt: skip
    try:
        assert up.stdout is not None
        lines = [up.stdout.readline() for _ in range(4)]
        run_id = re.fullmatch(r"twin small up \(instance \w+\): run (\w+)\n", lines[0])
        assert run_id, lines
        console = re.fullmatch(r"  console: (http://127\.0\.0\.1:\d+/)#token=(\S{32})\n", lines[3])
        assert console, lines
        url, token = console[1], console[2]
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/healthz").json()["status"] == "SERVING"
            deadline = time.monotonic() + 30
            while (snapshot := client.get("/api/snapshot").json())["run_id"] != run_id[1]:
                assert time.monotonic() < deadline, snapshot
                time.sleep(0.2)
            assert client.post("/api/run/pause").status_code == 403
            paused = client.post("/api/run/pause", headers={"authorization": f"Bearer {token}"})
            assert paused.status_code == 200 and paused.json()["snapshot"]["state"] == "paused"
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=120)
    finally:
        up.kill()
    assert up.returncode == 0
    assert out.strip().splitlines()[-1] == "stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "healthz", timeout=5)


def test_stopping_signals_each_child_once_and_names_one_that_did_not_end_cleanly() -> None:
    """One SIGTERM per child (a second landed mid-shutdown and killed services between
    two writes); a child that ends other than with status 0 is named with how it ended."""
    counting = (
        "import signal, sys, time\n"
        "seen = []\n"
        "signal.signal(signal.SIGTERM, lambda *_: seen.append(1))\n"
        "print('READY', flush=True)\n"
        "while not seen: time.sleep(0.01)\n"
        "time.sleep(0.5)\n"  # a shutdown that takes a while
        "sys.exit(len(seen) - 1)\n"  # 0 when signalled once
    )
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    stubborn += "print('READY', flush=True)\ntime.sleep(60)\n"
    events: list[str] = []
    twin = LocalTwin("small", {}, on_event=events.append)
    for name, script in [("once", counting), ("also-once", counting), ("stubborn", stubborn)]:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "READY"
        twin.processes[name] = child
    started = time.monotonic()
    twin._stop_children(timeout_s=3.0)
    assert [p.returncode for p in twin.processes.values()] == [0, 0, -signal.SIGKILL]
    assert events == ["stubborn ended with SIGKILL when stopped"]
    assert time.monotonic() - started < 6  # one deadline for all, not one each
