"""`twin up`'s metrics ports: each service its own free loopback /metrics port (the
launcher's ``metrics_addresses``), checked before anything starts, and the Prometheus
file_sd file (services/scrape_targets.py). A real Prometheus reads that file and scrapes
a running twin in tests/test_prometheus.py; `twin up --prometheus-targets` writes it while
the twin is up (tests/test_distributed.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from services import scrape_targets
from services.launcher import ORDER, LocalTwin, PortInUse, free_addresses
from services.serve import SERVICES

ROOT = Path(__file__).resolve().parent.parent


def test_free_addresses_for_any_names() -> None:
    names = [*ORDER, "gateway"]
    found = free_addresses(names=names)
    assert list(found) == names
    ports = [int(a.rpartition(":")[2]) for a in found.values()]
    assert len(set(ports)) == len(names) and all(a.startswith("127.0.0.1:") for a in found.values())
    assert list(free_addresses()) == list(ORDER)  # the gRPC addresses, as before


def test_file_sd_groups(tmp_path: Path) -> None:
    at = {"twin": "127.0.0.1:40001", "historian": "127.0.0.1:40002"}
    path = tmp_path / "targets.json"
    scrape_targets.write(path, at, "abcdef012345")
    labels = {"twin_instance": "abcdef012345"}
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:40001"], "labels": {"twin_service": "twin", **labels}},
        {"targets": ["127.0.0.1:40002"], "labels": {"twin_service": "historian", **labels}},
    ]
    # Replaced whole: a second write leaves no partial file behind.
    scrape_targets.write(path, {"twin": "127.0.0.1:40003"}, "abcdef012345")
    assert [g["targets"] for g in json.loads(path.read_text())] == [["127.0.0.1:40003"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["targets.json"]


def test_a_taken_metrics_port_stops_the_twin_before_it_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        metrics_at = {**free_addresses(names=SERVICES), "cooling": address}
        twin = LocalTwin("small", free_addresses(), metrics_addresses=metrics_at, history=False)
        with pytest.raises(PortInUse, match=rf"port {address} \(cooling metrics\) is in use"):
            twin.__enter__()
        assert not twin.processes and twin.nats is None  # nothing was started


def test_prometheus_targets_folder_is_checked_first(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "up", str(ROOT / "tests/sites/small.yaml"),
         "--prometheus-targets", str(tmp_path / "no" / "targets.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: --prometheus-targets: {tmp_path / 'no'} is not a folder"
