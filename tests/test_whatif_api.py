"""The WhatIf gRPC service with real clients: streamed progress and results, stored
studies (in memory and in PostgreSQL), sensitivities, optimization, validation; and the
``twin whatif`` command, run here and against the service."""

from __future__ import annotations

import json

import grpc
import pytest
import yaml
from conftest import SMALL
from served import served
from typer.testing import CliRunner

from services import whatif_service
from services.historian.migrate import migrate
from services.whatif_store import StudyStore
from twin.whatif.v1 import whatif_pb2 as pb
from twin.whatif.v1 import whatif_pb2_grpc

# One worker runs the module: its module-scoped fixture is computed once, not per worker.
pytestmark = pytest.mark.xdist_group("whatif-api")

SITE_YAML = SMALL.read_text()
# The small site on a constant load at its compute level: the landscape the optimizer and
# CLI study cases were chosen on (a dt = 10 s step once sampled the 14 s compute phase at
# both of its steps; the resolved phases average to 0.755 and run the GPUs cooler).
STEADY_YAML = SITE_YAML.replace("comm_util: 0.3}", "comm_util: 0.95}")
assert STEADY_YAML != SITE_YAML
EPW_SITE = yaml.safe_dump({**yaml.safe_load(SITE_YAML), "weather": {"epw": "/etc/passwd"}})


def small_spec(**fields) -> pb.StudySpec:
    spec = pb.StudySpec(
        name="supply sweep",
        scenario=pb.Scenario(yaml=SITE_YAML),
        duration="1h",
        dt="10s",
        vary=[pb.GridAxis(path="cooling.supply_c", range="28:34:4")],
        variants=[
            pb.Variant(
                name="chiller-out",
                overrides=[
                    pb.Override(path="failures", value="{equipment: chiller, at: 10m}", append=True)
                ],
            )
        ],
        series=["facility_w"],
        series_every="30m",
    )
    for key, value in fields.items():
        setattr(spec, key, value)
    return spec


@pytest.fixture(scope="module")
def address():
    with served(lambda server: whatif_service.add_to_server(server)) as addr:
        yield addr


@pytest.fixture
def stub(address):
    with grpc.insecure_channel(address) as channel:
        yield whatif_pb2_grpc.WhatIfServiceStub(channel)


def run(stub, request: pb.RunStudyRequest) -> list[pb.RunStudyResponse]:
    return list(stub.RunStudy(request, timeout=600))


def test_run_study_streams_acceptance_progress_and_result(stub):
    messages = run(stub, pb.RunStudyRequest(spec=small_spec()))
    kinds = [m.WhichOneof("event") for m in messages]
    assert kinds[0] == "accepted" and kinds[-1] == "result"
    assert set(kinds[1:-1]) == {"progress"} and len(kinds) >= 4
    accepted, result = messages[0].accepted, messages[-1].result
    assert accepted.variants == 6  # base, chiller-out and 4 grid points
    done = [m.progress.variants_done for m in messages[1:-1]]
    assert done == sorted(done) and done[-1] == pytest.approx(6)
    assert result.study_id == accepted.study_id
    assert result.state == pb.STUDY_STATE_DONE and result.site_id == "small"
    names = [v.name for v in result.variants]
    assert names == ["base", "chiller-out", *(f"cooling.supply_c={t}" for t in (28, 30, 32, 34))]
    base, _, cold, same, *_ = result.variants
    assert same.kpis["pue"] == pytest.approx(base.kpis["pue"], rel=1e-6)  # 30 °C is the base
    assert cold.deltas["max_gpu_temp_c"] == pytest.approx(-2.0, abs=0.05)
    assert {c.name for c in base.constraints} == {"max_gpu_temp_c", "peak_facility_mw"}
    assert base.passed and len(base.series[0].values) == 2
    assert result.variants[1].overrides[0].path == "failures"
    assert result.variants[1].overrides[0].append
    assert result.kpi_units["facility_energy_mwh"] == "MWh"

    got = stub.GetStudy(pb.GetStudyRequest(study_id=result.study_id)).study
    assert got == result
    listed = stub.ListStudies(pb.ListStudiesRequest()).studies
    assert listed[0].study_id == result.study_id and listed[0].variants == 6


def test_study_yaml_gives_the_same_result_as_the_message(stub):
    doc = {
        "name": "yaml",
        "scenario": None,
        "site": yaml.safe_load(SITE_YAML),
        "duration": "1h",
        "vary": {"cooling.supply_c": [28, 34]},
    }
    doc.pop("scenario")
    from_yaml = run(stub, pb.RunStudyRequest(study_yaml=yaml.safe_dump(doc)))[-1].result
    spec = small_spec(name="yaml")
    del spec.variants[:]
    del spec.series[:]
    spec.vary[0].range = ""
    spec.vary[0].values.extend(["28", "34"])
    from_pb = run(stub, pb.RunStudyRequest(spec=spec))[-1].result
    for a, b in zip(from_yaml.variants, from_pb.variants, strict=True):
        assert a.name == b.name and dict(a.kpis) == dict(b.kpis)


def spec_with(**changes) -> pb.StudySpec:
    spec = small_spec()
    for path, value in changes.items():
        target = spec
        *parents, last = path.split("__")
        for p in parents:
            target = getattr(target, p)
        if isinstance(value, list):
            del getattr(target, last)[:]
            getattr(target, last).extend(value)
        else:
            setattr(target, last, value)
    return spec


@pytest.mark.parametrize(
    "request_, message",
    [
        (pb.RunStudyRequest(), "study: give spec or study_yaml"),
        (pb.RunStudyRequest(study_yaml="a: [1"), "study_yaml: invalid YAML"),
        (pb.RunStudyRequest(study_yaml="- 1"), "study_yaml: must be a mapping of study fields"),
        (pb.RunStudyRequest(study_yaml="bogus: 1"), "bogus: unknown field"),
        (
            pb.RunStudyRequest(study_yaml="scenario: atlantis"),
            "study_yaml.scenario.name: unknown scenario 'atlantis'",
        ),
        (pb.RunStudyRequest(study_yaml="duration: 1h"), "study_yaml.scenario: give a seeded"),
        (pb.RunStudyRequest(spec=spec_with(dt="7s")), "dt: 7 s must divide an hour"),
        (
            pb.RunStudyRequest(spec=spec_with(series=["nope"])),
            "spec.series.0: unknown series 'nope'",
        ),
        (
            pb.RunStudyRequest(spec=spec_with(vary=[pb.GridAxis(path="cooling.supply_c")])),
            "spec.vary.0: give values or range (one of them)",
        ),
        (
            pb.RunStudyRequest(
                spec=spec_with(
                    variants=[
                        pb.Variant(
                            name="x", overrides=[pb.Override(path="cooling.supply_c", value="hot")]
                        )
                    ]
                )
            ),
            "variants.x: cooling.supply_c: Input should be a valid number",
        ),
        (
            pb.RunStudyRequest(
                spec=spec_with(base=[pb.Override(path="cooling.supply_c", value="[1")])
            ),
            "spec.base.0.value: cannot parse value '[1'",
        ),
        (pb.RunStudyRequest(spec=spec_with(granularity=7)), "spec.granularity: unknown value 7"),
        (
            pb.RunStudyRequest(spec=spec_with(scenario__yaml=EPW_SITE)),
            "base.weather.epw: '/etc/passwd' is outside the data directory",
        ),
    ],
)
def test_bad_studies_are_invalid_argument_naming_the_field(stub, request_, message):
    with pytest.raises(grpc.RpcError) as err:
        run(stub, request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details is not None and details.startswith(message), details


def test_unknown_study_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetStudy(pb.GetStudyRequest(study_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "study_id: no study 'nope'"
    with pytest.raises(grpc.RpcError) as err:
        stub.ListStudies(pb.ListStudiesRequest(limit=5000))
    assert err.value.details() == "limit: must be 0..1000, got 5000"


def rollout(site_yaml: str = SITE_YAML) -> pb.Rollout:
    return pb.Rollout(scenario=pb.Scenario(yaml=site_yaml), duration="1h", dt="10s", float64=True)


def test_sensitivities_over_grpc(stub):
    reply = stub.Sensitivities(
        pb.SensitivitiesRequest(
            rollout=rollout(), kpis=["max_gpu_temp_c"], parameters=["cooling.supply_c"]
        ),
        timeout=600,
    )
    assert dict(reply.at) == {"cooling.supply_c": 30.0}
    (kpi,) = reply.kpis
    assert kpi.kpi == "max_gpu_temp_c"
    assert kpi.gradient["cooling.supply_c"] == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize(
    "request_, message",
    [
        (pb.SensitivitiesRequest(rollout=rollout(), kpis=["pue"]), "parameters: give at least one"),
        (
            pb.SensitivitiesRequest(rollout=rollout(), kpis=["pue"], parameters=["halls.0.cdus"]),
            "parameters: 'halls.0.cdus' is not differentiable",
        ),
        (
            pb.SensitivitiesRequest(rollout=pb.Rollout(duration="1h"), kpis=["pue"]),
            "rollout.scenario: give name or yaml",
        ),
        (
            pb.SensitivitiesRequest(
                rollout=pb.Rollout(scenario=pb.Scenario(name="small-x"), duration="1h")
            ),
            "rollout.scenario.name: unknown scenario 'small-x'",
        ),
        (
            pb.SensitivitiesRequest(
                rollout=pb.Rollout(scenario=pb.Scenario(yaml=SITE_YAML), dt="bogus"),
                kpis=["pue"],
                parameters=["cooling.supply_c"],
            ),
            "rollout.dt: ",
        ),
    ],
)
def test_bad_sensitivity_requests(stub, request_, message):
    with pytest.raises(grpc.RpcError) as err:
        stub.Sensitivities(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details is not None and details.startswith(message), details


def test_optimize_over_grpc(stub):
    reply = stub.Optimize(
        pb.OptimizeRequest(
            rollout=rollout(STEADY_YAML),
            bounds=[pb.Bound(parameter="cooling.supply_c", lower=24, upper=40)],
            constraints=pb.Constraints(max_gpu_temp_c=78),
            iterations=15,
        ),
        timeout=600,
    )
    assert reply.feasible and reply.best_objective < reply.start_objective
    assert reply.start["cooling.supply_c"] == 30.0
    assert 30.0 < reply.best["cooling.supply_c"] < 34.5
    assert len(reply.objective_trace) == 15
    (temp,) = [c for c in reply.constraints if c.name == "max_gpu_temp_c"]
    assert temp.passed and temp.value <= 78
    with pytest.raises(grpc.RpcError) as err:
        # An objective no client library would send: the server must refuse it.
        stub.Optimize(pb.OptimizeRequest(rollout=rollout(), objective=9))  # pyright: ignore[reportArgumentType]
    assert err.value.details() == "objective: unknown value 9"
    with pytest.raises(grpc.RpcError) as err:
        stub.Optimize(
            pb.OptimizeRequest(
                rollout=rollout(), bounds=[pb.Bound(parameter="halls.0.cdus", lower=1, upper=2)]
            )
        )
    details = err.value.details()
    assert details is not None
    assert details.startswith("bounds: 'halls.0.cdus' is not differentiable")


def test_studies_are_stored_in_history(postgres_url):
    migrate(postgres_url)

    def register(server) -> None:
        whatif_service.add_to_server(server, StudyStore(postgres_url))

    with served(register) as addr, grpc.insecure_channel(addr) as channel:
        stub = whatif_pb2_grpc.WhatIfServiceStub(channel)
        spec = small_spec(name="stored")
        del spec.vary[:]
        result = run(stub, pb.RunStudyRequest(spec=spec))[-1].result
    # a fresh service (nothing in memory) finds it in the database
    with served(register) as addr, grpc.insecure_channel(addr) as channel:
        stub = whatif_pb2_grpc.WhatIfServiceStub(channel)
        assert stub.GetStudy(pb.GetStudyRequest(study_id=result.study_id)).study == result
        ids = [s.study_id for s in stub.ListStudies(pb.ListStudiesRequest()).studies]
        assert result.study_id in ids


# ----------------------------------------------------------------------------- CLI


def cli(*args: str):
    from services.cli.main import app

    return CliRunner().invoke(app, ["whatif", *args])


def test_cli_runs_a_study_here_and_writes_its_files(tmp_path):
    out = tmp_path / "study"
    steady = tmp_path / "small.yaml"
    steady.write_text(STEADY_YAML)
    r = cli(
        str(steady),
        "--duration",
        "1h",
        "--vary",
        "cooling.supply_c=28:34:2",
        "--variant",
        "hot:weather.offset_c=12,weather.heat_waves+={start_h: 0, duration_h: 1, delta_c: 3}",
        "--max-gpu-temp",
        "77",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    study = json.loads((out / "study.json").read_text())
    assert [v["name"] for v in study["variants"]] == [
        "base",
        "hot",
        "cooling.supply_c=28",
        "cooling.supply_c=34",
    ]
    assert study["variants"][3]["passed"] is False  # 34 °C water: GPUs above 77 °C
    assert (out / "comparison.png").stat().st_size > 10_000
    assert "cooling.supply_c=34" in r.output and "fail" in r.output


def test_cli_against_the_service_matches_the_local_run(address, tmp_path):
    args = [str(SMALL), "--duration", "1h", "--vary", "cooling.supply_c=28,32", "--x64"]
    here = cli(*args, "--out", str(tmp_path / "here"))
    there = cli(*args, "--server", address, "--out", str(tmp_path / "there"))
    assert here.exit_code == 0 and there.exit_code == 0, there.output
    a = json.loads((tmp_path / "here" / "study.json").read_text())
    b = json.loads((tmp_path / "there" / "study.json").read_text())
    for x, y in zip(a["variants"], b["variants"], strict=True):
        assert x["name"] == y["name"]
        for key, value in x["kpis"].items():
            assert y["kpis"][key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vary", "cooling.supply_c"], "--vary 'cooling.supply_c': expected path=lo:hi:count"),
        (["--variant", "nocolon"], "--variant 'nocolon': expected name:path=value,..."),
        (["--variant", "x:cooling.suply_c=3"], "variants.x: cooling.suply_c: unknown field"),
        (["--dt", "7s"], "dt: 7 s must divide an hour"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    r = cli(str(SMALL), "--duration", "1h", *args, "--out", str(tmp_path / "x"))
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), r.output
    assert not (tmp_path / "x").exists()


def test_cli_bad_client_tls_variable_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_GRPC_TLS_CA_FILE", str(tmp_path / "missing.pem"))
    r = cli(str(SMALL), "--duration", "1h", "--server", "127.0.0.1:1", "--out", str(tmp_path))
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TWIN_GRPC_TLS_CA_FILE: "), r.output


def test_a_study_without_a_scenario_runs_on_the_configured_site():
    from twin_core.site import load_site

    site = load_site(SMALL)
    register = lambda s: whatif_service.add_to_server(s, None, site)  # noqa: E731
    with served(register) as addr, grpc.insecure_channel(addr) as channel:
        stub = whatif_pb2_grpc.WhatIfServiceStub(channel)
        result = run(stub, pb.RunStudyRequest(study_yaml="duration: 1h"))[-1].result
    assert result.site_id == "small" and [v.name for v in result.variants] == ["base"]


def test_twin_status_checks_the_addresses_given(address):
    from services.cli.main import app

    ok = CliRunner().invoke(app, ["status", address])
    assert ok.exit_code == 0 and "SERVING" in ok.output
    down = CliRunner().invoke(app, ["status", address, "127.0.0.1:1", "--wait", "2s"])
    assert down.exit_code == 1 and "UNREACHABLE" in down.output
