"""Studies on Dask workers (services/study_cluster.py): the chunks a study makes in-process
run as tasks on a LocalCluster on loopback and come back as the same StudyResult, even
when a worker dies mid-study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from typing import Any, cast

import grpc
import psutil
import pytest
from conftest import ROOT, SITES, SMALL, small_site
from distributed import Client
from served import served
from test_cli import twin
from test_montecarlo import HORIZON as MC_HORIZON
from test_montecarlo import RATES as MC_RATES

from services import whatif_service
from services.study_cluster import (
    DaskRunner,
    DaskTarget,
    open_client,
    parse_target,
    run_monte_carlo_on_target,
    run_study_on_dask,
    run_study_on_target,
    target_from_env,
)
from twin.whatif.v1 import whatif_pb2 as pb
from twin.whatif.v1 import whatif_pb2_grpc
from twin_core import load_site
from twin_core.montecarlo import parse_monte_carlo, run_monte_carlo
from twin_core.study import StudyError, parse_spec, run_study

pytestmark = pytest.mark.xdist_group("dask")

# Five variants in chunks of two: the last chunk is padded, as run_batch pads it.
STUDY = {
    "duration": "1h",
    "dt": "10s",
    "precision": "float32",
    "vary": {"cooling.supply_c": [26, 30, 34, 38]},
    "series": ["facility_w", "gpu_temp_max_c"],
    "series_every": "10m",
}
CHUNK = 2


@pytest.fixture(scope="module")
def small():
    return small_site()


@pytest.fixture(scope="module")
def local_chunked(small):
    return run_study(small, parse_spec(STUDY), chunk=CHUNK)


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("local:2", DaskTarget(local_workers=2)),
        (" local:1 ", DaskTarget(local_workers=1)),
        ("tcp://10.0.0.5:8786", DaskTarget(address="tcp://10.0.0.5:8786")),
        ("tls://scheduler.study:8786", DaskTarget(address="tls://scheduler.study:8786")),
    ],
)
def test_targets(text, target):
    assert parse_target(text) == target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("local:0", "--dask 'local:0': local:N needs a worker count from 1 to 64"),
        ("local:two", "--dask 'local:two': local:N needs a worker count from 1 to 64"),
        ("local:65", "--dask 'local:65': local:N needs a worker count from 1 to 64"),
        ("10.0.0.5:8786", "--dask '10.0.0.5:8786': expected local:N or a scheduler tcp://host:port"),
        ("tcp://host:99999", "--dask 'tcp://host:99999': expected local:N or a scheduler tcp://host:port"),
        ("tcp://host", "--dask 'tcp://host': expected local:N or a scheduler tcp://host:port"),
    ],
)  # fmt: skip
def test_bad_targets_name_the_option(text, message):
    with pytest.raises(StudyError) as err:
        parse_target(text)
    assert str(err.value) == message


def test_unreachable_scheduler_is_one_line():
    # A port nothing listens on, on loopback: refused at once, not a hang.
    with pytest.raises(StudyError, match=r"^--dask tcp://127.0.0.1:9: cannot reach the scheduler"):  # noqa: SIM117
        with open_client(parse_target("tcp://127.0.0.1:9")):
            pass


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dask", "local:0"],
            "error: --dask 'local:0': local:N needs a worker count from 1 to 64",
        ),
        (["--chunk", "0"], "error: --chunk: must be >= 1, got 0"),
        (
            ["--dask", "local:2", "--server", "127.0.0.1:9"],
            "error: --dask: local runs only (the --server chunks its own)",
        ),
    ],
)
def test_cli_rejects_bad_options(tmp_path, args, message):
    out = tmp_path / "never"
    done = twin("whatif", str(SMALL), "--duration", "1h", "--out", str(out), *args)
    assert done.returncode == 2
    assert done.stderr.strip() == message
    assert not out.exists()


@pytest.mark.slow
def test_scheduler_from_the_environment():
    assert target_from_env({}) is None
    assert target_from_env({"TWIN_DASK_SCHEDULER": " "}) is None
    address = "tcp://twin-ai-factory-twin-dask-scheduler:8786"  # the chart's value
    assert target_from_env({"TWIN_DASK_SCHEDULER": address}) == DaskTarget(address=address)
    with pytest.raises(StudyError) as err:
        target_from_env({"TWIN_DASK_SCHEDULER": "sched:8786"})
    assert str(err.value) == (
        "TWIN_DASK_SCHEDULER 'sched:8786': expected local:N or a scheduler tcp://host:port"
    )


def test_the_service_runs_studies_where_the_variable_says(monkeypatch):
    from services.whatif_service import monte_carlo_runner, study_runner

    monkeypatch.delenv("TWIN_DASK_SCHEDULER", raising=False)
    assert study_runner() is run_study
    assert monte_carlo_runner() is run_monte_carlo
    monkeypatch.setenv("TWIN_DASK_SCHEDULER", "tcp://10.0.0.5:8786")
    runner = cast(Any, study_runner())
    assert runner.func is run_study_on_target
    assert runner.args == (DaskTarget(address="tcp://10.0.0.5:8786"),)
    failures = cast(Any, monte_carlo_runner())
    assert failures.func is run_monte_carlo_on_target
    assert failures.args == runner.args


def test_whatif_honours_the_scheduler_variable(tmp_path):
    # Nothing listens on port 9: the CLI tried the variable's scheduler, and says so.
    env = {**os.environ, "TWIN_DASK_SCHEDULER": "tcp://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "whatif", str(SMALL), "--duration", "1h",
         "--out", str(tmp_path / "never")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().startswith(
        "error: TWIN_DASK_SCHEDULER tcp://127.0.0.1:9: cannot reach the scheduler"
    )


def test_local_clusters_listen_on_free_loopback_ports_only():
    """Two at once: the second would find a fixed port (the dashboard's 8787) taken."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # distributed warns when it moves off a taken port
        with open_client(parse_target("local:1")), open_client(parse_target("local:1")):
            listening = [
                c.laddr
                for p in [psutil.Process(), *psutil.Process().children(recursive=True)]
                for c in p.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            ]
    assert len(listening) >= 2 * 3  # per cluster: scheduler, its HTTP server, a worker
    assert {a.ip for a in listening} == {"127.0.0.1"}
    assert 8787 not in {a.port for a in listening}


def test_two_workers_equal_the_local_chunked_run_bit_for_bit(small, local_chunked):
    spec = parse_spec(STUDY)
    seen: list[tuple[float, int]] = []
    with open_client(parse_target("local:2")) as client:
        on_dask = run_study_on_dask(
            client,
            small,
            spec,
            chunk=CHUNK,
            progress=lambda done, total: seen.append((done, total)),
        )
        workers = len(client.scheduler_info()["workers"])
    assert workers == 2
    # Same chunks, same dtype, same compiled call: every KPI and series value is equal.
    assert on_dask.to_dict() == local_chunked.to_dict()
    assert [v.name for v in on_dask.variants][:2] == ["base", "cooling.supply_c=26"]
    # One report per chunk as it finishes (2 + 2 + 1 variants, in any order).
    assert len(seen) == 3 and {total for _, total in seen} == {5}
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 5
    assert sorted(b - a for a, b in zip([0, *done], done, strict=False)) == [1, 2, 2]
    # The unchunked run compiles one batch of 5 instead of 2: on the CPU each variant's
    # arithmetic is the same lane by lane whatever the batch, and it is equal too.
    whole = run_study(small, spec)
    assert whole.to_dict() == local_chunked.to_dict()


@pytest.mark.slow
def test_a_worker_killed_mid_study_has_its_chunks_rerun(small, local_chunked):
    spec = parse_spec(STUDY)
    with open_client(parse_target("local:2")) as client:
        # The synchronous client returns plain values (typed as maybe-coroutines).
        pids = cast(dict[str, int], client.run(os.getpid))
        killed: dict[str, object] = {}

        def kill_a_busy_worker() -> None:
            # A fresh worker imports JAX and compiles before its first chunk ends: seconds
            # in which it holds a chunk; kill that worker's process outright.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                busy = {
                    a: keys for a, keys in cast(dict[str, Any], client.processing()).items() if keys
                }
                if busy:
                    address, keys = next(iter(busy.items()))
                    killed.update(address=address, keys=list(keys))
                    os.kill(pids[address], signal.SIGKILL)
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
        killer.start()
        on_dask = run_study_on_dask(client, small, spec, chunk=CHUNK)
        killer.join(timeout=5)
        after = cast(dict[str, int], client.run(os.getpid))
    assert killed, "no worker was busy to kill"
    assert any(str(k).startswith("study-") for k in killed["keys"])  # type: ignore[union-attr]
    assert pids[str(killed["address"])] not in after.values()  # that process is gone
    assert on_dask.to_dict() == local_chunked.to_dict()


def test_a_monte_carlo_study_on_two_workers_equals_the_local_run():
    """A failure study's samples go to the workers in chunks like any study's variants:
    the same distributions, ranking and per-sample values, progress per chunk."""
    site = load_site(SITES / "single_cdu.yaml")
    spec = parse_monte_carlo(
        {"samples": 7, "seed": 3, "classes": ["cdu", "feeder"], "rates": MC_RATES, **MC_HORIZON}
    )
    local = run_monte_carlo(site, spec, chunk=4)
    seen: list[tuple[float, int]] = []
    with open_client(parse_target("local:2")) as client:
        on_dask = run_monte_carlo(
            site, spec, chunk=4, runner=DaskRunner(client),
            progress=lambda done, total: seen.append((done, total)),
        )  # fmt: skip
    assert on_dask.to_dict() == local.to_dict()
    assert max(on_dask.samples["throttled_gpu_hours"]) > 0  # failures that cost something
    assert seen == [(4, 8), (8, 8)]  # the base and 7 samples, in two chunks of 4


def test_the_service_runs_a_monte_carlo_study_on_the_scheduler_the_variable_names(monkeypatch):
    """RunMonteCarlo on a what-if service whose TWIN_DASK_SCHEDULER names a running
    scheduler: the chunks run on its worker and the reply equals the local run's."""
    from distributed import LocalCluster

    site = load_site(SITES / "single_cdu.yaml")
    doc = {"samples": 5, "seed": 11, "classes": ["cdu", "feeder"], **MC_HORIZON}
    local = run_monte_carlo(site, parse_monte_carlo({**doc, "rates": MC_RATES}))
    request = pb.RunMonteCarloRequest(
        scenario=pb.Scenario(yaml=(SITES / "single_cdu.yaml").read_text()),
        samples=5, seed=11, classes=["cdu", "feeder"],
        rates=[pb.ClassRate(equipment=k, **v) for k, v in MC_RATES.items()],
        duration=MC_HORIZON["duration"], dt=MC_HORIZON["dt"],
        record_every=MC_HORIZON["record_every"],
    )  # fmt: skip
    with LocalCluster(
        n_workers=1, threads_per_worker=1, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster, Client(cluster) as watcher:  # fmt: skip
        # The synchronous cluster and client return plain values (typed as coroutines).
        monkeypatch.setenv("TWIN_DASK_SCHEDULER", cast(Any, cluster).scheduler_address)
        with (
            served(lambda server: whatif_service.add_to_server(server)) as address,
            grpc.insecure_channel(address) as channel,
        ):
            reply = whatif_pb2_grpc.WhatIfServiceStub(channel).RunMonteCarlo(request, timeout=600)
        ran = cast(int, watcher.run_on_scheduler(_study_tasks_seen))
    assert ran >= 1  # the study's chunk went through the scheduler
    got = {d.metric: (d.mean, d.p50, d.p99) for d in reply.distributions}
    want = {k: (d.mean, d.p50, d.p99) for k, d in local.distributions.items()}
    assert got == want
    assert dict(reply.base) == local.base


def _study_tasks_seen(dask_scheduler) -> int:
    """On the scheduler: how many study chunks it has seen (keys study-<id>-chunk-<n>,
    grouped under the prefix "study")."""
    prefix = dask_scheduler.task_prefixes.get("study")
    return 0 if prefix is None else sum(prefix.state_counts.values())


def test_the_readme_names_the_option():
    text = (ROOT / "README.md").read_text()
    assert "--dask local:2" in text and "--chunk" in text
