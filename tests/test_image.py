"""The container image, built with `make image`'s script and run as the chart runs it.

The chart is rendered with helm; the migration Job and each Deployment's container run from
the built image with podman (runc) exactly as rendered: command, environment, user,
read-only root with the /tmp emptyDir, dropped capabilities and the site ConfigMap
(tests/podman_pods.py). NATS and PostgreSQL are the project's own, on this host. The
containers run a Fairwater hour at dt 10 s; `twin status` sees every service SERVING on
its probe port, and the history the historian stored equals the monolithic rollout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from conftest import ROOT, SMALL
from helm_binary import Helm
from image_build import build_image, podman
from podman_pods import LIMITS, by_kind, podman_run
from test_distributed import stored_series
from unix_forward import forward

from services.launcher import free_addresses
from services.runtime.nats_server import NatsServer
from services.runtime.postgres import LocalPostgres
from twin.twin.v1 import clock_pb2, snapshot_pb2, twin_pb2, twin_pb2_grpc
from twin_core.rollout import simulate
from twin_core.site import load_site

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("image")]
CHART = ROOT / "charts" / "ai-factory-twin"
SITE = "fairwater-wi"
DT, STEPS = 10.0, 360  # one simulated hour
SERVICES = ("compute", "cooling", "power", "energy", "twin", "historian")
UID = 10001
PREFIX = "twin-ai-factory-twin"


@pytest.fixture(scope="module")
def image() -> str:
    tag, seconds = build_image()
    print(f"\nimage/build.sh: {tag} in {seconds:.0f} s")
    return tag


def render(helm: Helm, tmp: Path, image: str, nats_url: str, database_url: str) -> list[dict]:
    repository, tag = image.rsplit(":", 1)
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "externalNats": {"url": nats_url},
        "externalDatabase": {"url": database_url},
        # No chart-made Secrets to mount: plain NATS and gRPC (the TLS and auth wiring has
        # its own tests against processes).
        "nats": {"auth": {"type": "none"}},
        "grpc": {"tls": {"enabled": False}},
    }
    (tmp / "values.yaml").write_text(yaml.safe_dump(values))
    out = helm.run("template", "twin", str(CHART), "-n", "factory", "-f", str(tmp / "values.yaml"))
    return [o for o in yaml.safe_load_all(out.stdout) if o]


def _remove(names: list[str]) -> None:
    for name in names:
        podman("rm", "--force", "--time", "5", name, check=False)


def test_image_runs_as_10001_read_only_and_writes_only_tmp(image: str, tmp_path: Path) -> None:
    config = podman("image", "inspect", "--format", "{{.Config.User}}", image).strip()
    assert config == f"{UID}:{UID}"
    # Read-only root: the user, and a write outside /tmp refused.
    name = f"twin-ro-{os.getpid()}"
    out = podman(
        "run", "--rm", "--name", name, *LIMITS, "--read-only", "--read-only-tmpfs=false",
        "--tmpfs", "/tmp:rw,mode=1777", "--cap-drop=ALL", "--entrypoint", "sh", image,
        "-c", "id -u; id -g; touch /app/x 2>&1; touch /tmp/x && echo tmp-ok",
    )  # fmt: skip
    lines = out.splitlines()
    assert lines[:2] == [str(UID), str(UID)]
    assert "Read-only file system" in lines[2] and lines[3] == "tmp-ok"
    # A writable root this time: a whole simulation and a service's start-up change
    # nothing outside /tmp. podman diff lists the container layer's changes; podman's own
    # mount points (/etc/hosts and the like, the site file) are those of a container
    # that ran `true`.
    site = tmp_path / "site.yaml"
    site.write_text(SMALL.read_text())
    site.chmod(0o644)
    mounts = [*LIMITS, "--tmpfs", "/tmp:rw,mode=1777", "-v", f"{site}:/site.yaml:ro"]
    work = (
        "twin simulate /site.yaml --duration 1h --dt 10s --out /tmp/out >/dev/null"
        " && TWIN_SCENARIO=/site.yaml TWIN_SITE=small timeout -s INT 20 twin serve cooling"
        " >/dev/null 2>&1; test -s /tmp/out/timeseries.parquet && test -s /tmp/out/summary.json"
    )
    diffs = []
    for what, command in (("baseline", "true"), ("work", work)):
        name = f"twin-diff-{what}-{os.getpid()}"
        try:
            podman("run", "--name", name, *mounts, "--entrypoint", "sh", image, "-c", command,
                   timeout_s=300)  # fmt: skip
            diffs.append(podman("diff", name).splitlines())
        finally:
            _remove([name])
    baseline, changed = diffs
    assert "A /site.yaml" in baseline  # the comparison sees the container's layer
    assert changed == baseline


@pytest.fixture(scope="module")
def host_backends() -> Iterator[tuple[str, str]]:
    """NATS and PostgreSQL URLs on this host's loopback (the containers share its network)."""
    postgres = LocalPostgres()
    try:
        postgres.start()
        socket_dir = postgres.url.split("host=", 1)[1]
        with NatsServer() as nats_server, forward(f"{socket_dir}/.s.PGSQL.5432") as port:
            yield nats_server.url, f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        postgres.close()


def test_chart_pods_in_containers_run_a_fairwater_hour(
    image: str, helm: Helm, host_backends, tmp_path: Path
) -> None:
    nats_url, database_url = host_backends
    objects = render(helm, tmp_path, image, nats_url, database_url)
    deployments = by_kind(objects, "Deployment")
    assert sorted(deployments) == sorted(f"{PREFIX}-{s}" for s in SERVICES)
    names: list[str] = []
    addresses = free_addresses("127.0.0.1", [f"{s}-{p}" for s in SERVICES for p in "gmh"])
    try:
        (job,) = by_kind(objects, "Job").values()
        argv = podman_run(job, objects, image, f"twin-migrate-{os.getpid()}", tmp_path, {})
        argv.remove("--detach")
        names.append(argv[argv.index("--name") + 1])
        podman(*argv, timeout_s=180)
        for service in SERVICES:
            listen = {
                "TWIN_GRPC_ADDRESS": addresses[f"{service}-g"],
                "TWIN_METRICS_ADDRESS": addresses[f"{service}-m"],
                "TWIN_HEALTH_ADDRESS": addresses[f"{service}-h"],
            }
            name = f"twin-{service}-{os.getpid()}"
            argv = podman_run(
                deployments[f"{PREFIX}-{service}"], objects, image, name, tmp_path, listen
            )
            podman(*argv)
            names.append(name)
        probes = [addresses[f"{s}-h"] for s in SERVICES]
        status = subprocess.run(
            [sys.executable, "-m", "services.cli", "status", "--wait", "240s", *probes],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        logs = {n: podman("logs", "--tail", "20", n, check=False) for n in names[1:]}
        assert status.returncode == 0, f"{status.stdout}{status.stderr}\n{logs}"
        assert status.stdout.count("SERVING") == len(SERVICES), status.stdout

        with grpc.insecure_channel(addresses["twin-g"]) as channel:
            stub = twin_pb2_grpc.TwinServiceStub(channel)
            spec = clock_pb2.RunSpec(scenario_name=SITE, dt_s=DT, horizon_s=STEPS * DT)
            fast = clock_pb2.Speed(as_fast_as_possible=True)
            run_id = stub.Start(twin_pb2.StartRequest(spec=spec, speed=fast), timeout=300).run_id
            whole = simulate(load_site(ROOT / "scenarios" / f"{SITE}.yaml"), STEPS * DT, DT, DT,
                             merge_identical=False)  # fmt: skip
            deadline = time.monotonic() + 600
            while True:
                snap = stub.GetSnapshot(twin_pb2.GetSnapshotRequest(run_id=run_id), timeout=30)
                if snap.snapshot.state == snapshot_pb2.RUN_STATE_STOPPED:
                    break
                assert time.monotonic() < deadline, f"run at step {snap.snapshot.step}"
                time.sleep(1)
        assert (snap.snapshot.step, snap.snapshot.reason) == (STEPS, "")
        stored = stored_series(database_url, run_id, STEPS, timeout_s=120)
        np.testing.assert_array_equal(stored[:, 0], np.arange(STEPS))
        np.testing.assert_allclose(stored[:, 1], whole.means["facility_w"], rtol=1e-6)
    finally:
        _remove(names)
