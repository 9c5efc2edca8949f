"""Every input validated before it acts, and nothing from a client touches server files:
the merged-site file check, finite and bounded site numbers, durations and dt, YAML
limits, domain commands, history ids and sizes, and the INTERNAL safety net."""

from __future__ import annotations

import math

import grpc
import pytest
import yaml
from conftest import SMALL, small_site
from served import served

from services import scenario, whatif_service
from services.domain import DomainModel
from services.domain_service import InvalidCommand, energy_command
from services.historian import queries
from services.scenario import site_from_spec, validate_run_spec
from twin.energy.v1 import energy_pb2
from twin.twin.v1 import clock_pb2
from twin.whatif.v1 import whatif_pb2 as pb
from twin.whatif.v1 import whatif_pb2_grpc
from twin_core.drivers import hourly_matrix, load_drivers
from twin_core.durations import parse_duration
from twin_core.inputs import load_yaml
from twin_core.params import steps_per_hour
from twin_core.site import SiteError, build_site, load_site, parse_overrides

SITE_YAML = SMALL.read_text()
PASSWD = "{file: /etc/passwd, column: x}"
OUTSIDE = "'/etc/passwd' is outside the data directory"


@pytest.fixture(scope="module")
def whatif():
    with (
        served(lambda server: whatif_service.add_to_server(server)) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield whatif_pb2_grpc.WhatIfServiceStub(channel)


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def study(**fields) -> pb.RunStudyRequest:
    spec = pb.StudySpec(scenario=pb.Scenario(yaml=SITE_YAML), duration="1h", dt="60s")
    for key, value in fields.items():
        getattr(spec, key).extend(value)
    return pb.RunStudyRequest(spec=spec)


# ----------------------------------------------------------------------- server files


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            study(base=[pb.Override(path="energy.grid.price_usd_per_mwh", value=PASSWD)]),
            f"base.energy.grid.price_usd_per_mwh.file: {OUTSIDE}",
        ),
        (
            study(
                variants=[
                    pb.Variant(
                        name="v",
                        overrides=[pb.Override(path="energy.grid.carbon_g_per_kwh", value=PASSWD)],
                    )
                ]
            ),
            f"variants.v.energy.grid.carbon_g_per_kwh.file: {OUTSIDE}",
        ),
        (
            study(vary=[pb.GridAxis(path="weather", values=["{epw: ../../../../../etc/passwd}"])]),
            "variants.weather={'epw': '../../../../../etc/passwd'}.weather.epw: "
            "'../../../../../etc/passwd' is outside the data directory",
        ),
    ],
)
def test_studies_naming_server_files_are_refused(whatif, request_, message):
    err = rpc_error(lambda: list(whatif.RunStudy(request_, timeout=120)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.details()
    assert details is not None and details.startswith(message), details
    assert "root:" not in details


def test_rollout_overrides_naming_server_files_are_refused(whatif):
    rollout = pb.Rollout(
        scenario=pb.Scenario(yaml=SITE_YAML),
        duration="1h",
        dt="60s",
        overrides=[pb.Override(path="energy.grid.price_usd_per_mwh", value=PASSWD)],
    )
    request = pb.SensitivitiesRequest(
        rollout=rollout, kpis=["pue"], parameters=["cooling.supply_c"]
    )
    err = rpc_error(lambda: whatif.Sensitivities(request, timeout=120))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.details()
    assert details is not None
    assert details.startswith(f"rollout.energy.grid.price_usd_per_mwh.file: {OUTSIDE}")
    err = rpc_error(lambda: whatif.Optimize(pb.OptimizeRequest(rollout=rollout), timeout=120))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_start_spec_naming_server_files_is_refused():
    spec = clock_pb2.RunSpec(
        scenario_name="fairwater-wi",
        overrides=["weather.epw=/etc/passwd", "weather.synthetic=null"],
    )
    with pytest.raises(SiteError) as info:
        site_from_spec(spec)
    assert str(info.value).startswith(f"spec.weather.epw: {OUTSIDE}")
    inline = yaml.safe_load(SITE_YAML)
    inline["energy"]["grid"]["price_usd_per_mwh"] = {"file": "/dev/zero", "column": "x"}
    spec = clock_pb2.RunSpec(scenario_yaml=yaml.safe_dump(inline))
    with pytest.raises(
        SiteError, match=r"^spec\.energy\.grid\.price_usd_per_mwh\.file: '/dev/zero'"
    ):
        validate_run_spec(spec)


def price_csv(folder, name="price.csv", value="55.5"):
    path = folder / name
    path.write_text("hour,usd\n" + "".join(f"{h},{value}\n" for h in range(24)))
    return path


def test_files_in_the_data_directory_are_read_and_symlinks_out_refused(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    price_csv(data)
    (data / "escape.csv").symlink_to("/etc/passwd")
    monkeypatch.setenv(scenario.DATA_DIR_ENV, str(data))
    doc = yaml.safe_load(SITE_YAML)
    doc["energy"]["grid"]["price_usd_per_mwh"] = {"file": "price.csv", "column": "usd"}
    site = validate_run_spec(clock_pb2.RunSpec(scenario_yaml=yaml.safe_dump(doc), dt_s=60))
    assert hourly_matrix(site, load_drivers(site), 2)[:, 2].tolist() == [55.5, 55.5, 55.5]
    doc["energy"]["grid"]["price_usd_per_mwh"]["file"] = "escape.csv"
    with pytest.raises(SiteError) as info:
        site_from_spec(clock_pb2.RunSpec(scenario_yaml=yaml.safe_dump(doc)))
    assert str(info.value) == (
        "spec.energy.grid.price_usd_per_mwh.file: 'escape.csv' is outside the data directory "
        "(a site may name files only under scenarios/ or TWIN_DATA_DIR)"
    )


def test_file_contents_never_appear_in_errors(tmp_path):
    (tmp_path / "site.yaml").write_text(SITE_YAML)
    price_csv(tmp_path, value="secret-token-42")
    site = load_site(
        tmp_path / "site.yaml",
        {"energy.grid.price_usd_per_mwh": {"file": "price.csv", "column": "usd"}},
    )
    with pytest.raises(SiteError) as info:
        load_drivers(site)
    assert str(info.value) == (
        "energy.grid.price_usd_per_mwh.file: column 'usd' of 'price.csv' holds a value that "
        "is not a number"
    )
    (tmp_path / "w.epw").write_text("\n" * 8 + "secret-token-42," * 30 + "\n")
    site = load_site(tmp_path / "site.yaml", {"weather": {"epw": "w.epw"}})
    with pytest.raises(SiteError) as info:
        load_drivers(site)
    assert "secret" not in str(info.value)
    assert str(info.value) == "weather.epw: 'w.epw' does not hold 8760 hourly EPW records"


# ------------------------------------------------------------------- schema and times


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cooling.chillers.capft.0": 1e300}, "cooling.chillers.capft.0: Input should be less"),
        ({"power.misc_fixed_mw": math.inf}, "power.misc_fixed_mw: Input should be a finite number"),
        ({"cooling.supply_c": math.nan}, "cooling.supply_c: Input should be a finite number"),
        ({"halls.0.cdus": 10**9}, "halls.0.cdus: Input should be less than or equal to 100000"),
        ({"energy.grid.price_usd_per_mwh.seed": -1}, "energy.grid.price_usd_per_mwh.seed: Input"),
    ],
)
def test_site_numbers_are_finite_and_bounded(overrides, message):
    with pytest.raises(SiteError) as info:
        small_site(overrides)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1e400s", "invalid duration '1e400s' (must be finite, at most 100 years)"),
        (math.nan, "invalid duration 'nan' (must be finite, at most 100 years)"),
        (1e300, "invalid duration '1e+300' (must be finite, at most 100 years)"),
        ("x" * 10**6, "invalid duration '" + "x" * 79 + "…' (expected e.g. 1s, 90m, 24h, 7d)"),
    ],
)
def test_durations_are_finite_and_echo_clipped(text, message):
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


def test_dt_has_a_floor():
    for dt in (1e-9, math.nan, math.inf):
        with pytest.raises(SiteError, match=r"^dt: .* s is out of range \(0.01 s to 1 h\)$"):
            steps_per_hour(dt)
    assert steps_per_hour(0.01) == 360_000


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            clock_pb2.RunSpec(scenario_name="fairwater-wi", horizon_s=math.inf),
            "spec.horizon_s: inf is out of range (0, meaning open-ended, to 3.1536e+08 s)",
        ),
        (
            clock_pb2.RunSpec(scenario_name="fairwater-wi", dt_s=1e-9),
            "spec.dt: 1e-09 s is out of range (0.01 s to 1 h)",
        ),
        (
            clock_pb2.RunSpec(scenario_name="fairwater-wi", dt_s=math.nan),
            "spec.dt: nan s is out of range (0.01 s to 1 h)",
        ),
        (
            clock_pb2.RunSpec(scenario_name="a\0b" + "x" * 10**6),
            "spec.scenario_name: unknown scenario 'a\\x00b" + "x" * 76 + "…' (known: ",
        ),
        (
            clock_pb2.RunSpec(scenario_yaml="a: " + "[" * 50_000 + "]" * 50_000),
            "spec.scenario_yaml: nested deeper than 64 levels",
        ),
    ],
)
def test_run_specs_are_validated_whole(spec, message):
    with pytest.raises(SiteError) as info:
        validate_run_spec(spec)
    assert str(info.value).startswith(message), str(info.value)


def test_yaml_limits_and_set_values_name_the_path():
    with pytest.raises(SiteError, match=r"^x: nested deeper than 64 levels$"):
        load_yaml("- " * 50_000 + "1", "x", SiteError)
    with pytest.raises(SiteError) as info:
        parse_overrides(["cooling.supply_c=[oops"])
    assert str(info.value) == (
        "--set cooling.supply_c: cannot parse value '[oops': invalid YAML at line 1 "
        "(expected ',' or ']', but got '<stream end>')"
    )
    with pytest.raises(SiteError, match=r"nested deeper than 64 levels"):
        build_site(yaml.safe_load(SITE_YAML), parse_overrides(["x=" + "[" * 100 + "]" * 100]))


# ------------------------------------------------------------------ domain commands


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"peak_threshold_w": math.nan},
            "set_battery_mode.peak_threshold_w: must be a number in 0..1e+12, got nan",
        ),
        (
            {"ramp_limit_w_per_s": -1e9},
            "set_battery_mode.ramp_limit_w_per_s: must be a positive number up to 1e+15, "
            "got -1000000000.0",
        ),
        (
            {"charge_below_usd_per_mwh": math.inf},
            "set_battery_mode.charge_below_usd_per_mwh: must be a number in -1e+12..1e+12, got inf",
        ),
    ],
)
def test_battery_commands_are_finite_and_in_range(fields, message):
    model = DomainModel(
        small_site({"energy.battery": {"capacity_mwh": 1.0, "power_mw": 0.5}}), "energy"
    )
    mode = energy_pb2.SetBatteryMode(mode=energy_pb2.BATTERY_MODE_PEAK_SHAVE, **fields)
    with pytest.raises(InvalidCommand) as info:
        energy_command(energy_pb2.ApplyRequest(set_battery_mode=mode), model)
    assert str(info.value) == message


# ----------------------------------------------------------------------- history


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"metrics": ["it_w"] * 5000}, "metrics: at most 64 metrics, got 5000"),
        ({"start_s": 1e300}, "start_s: must be within +-1e+11 s"),
        ({"run_id": "a\0b"}, "run_id: 'a\\x00b' holds control characters"),
        ({"run_id": "r" * 10**6}, "run_id: at most 128 characters, got 1000000"),
        ({"bucket_s": 1e300}, "bucket_s: at most 1e+11 s"),
    ],
)
def test_history_queries_are_bounded(query, message):
    with pytest.raises(queries.QueryError) as info:
        queries.validate(queries.SeriesQuery(**{"run_id": "r", "metrics": ["it_w"], **query}))
    assert str(info.value) == message


def test_forged_page_tokens_are_invalid():
    fingerprint = "f" * 16
    for after in (10**30, -1, 2**62):
        token = queries.encode_token(after, fingerprint)
        with pytest.raises(queries.QueryError, match=r"^page_token: invalid page token$"):
            queries.decode_token(token, fingerprint)
    assert queries.decode_token(queries.encode_token(7, fingerprint), fingerprint) == 7


# ----------------------------------------------------------------- INTERNAL safety net


class Broken(whatif_pb2_grpc.WhatIfServiceServicer):
    async def ListStudies(self, request, context):
        raise RuntimeError("root:x:0:0:root:/root:/bin/bash")


def test_unexpected_errors_are_internal_without_their_text():
    def register(server):
        server.add_servicer(whatif_pb2_grpc.add_WhatIfServiceServicer_to_server, Broken())

    with served(register) as address, grpc.insecure_channel(address) as channel:
        stub = whatif_pb2_grpc.WhatIfServiceStub(channel)
        err = rpc_error(lambda: stub.ListStudies(pb.ListStudiesRequest(), timeout=10))
        assert err.code() == grpc.StatusCode.INTERNAL
        assert err.details() == "internal error (logged on the server with the request id)"
        err = rpc_error(lambda: stub.GetStudy(pb.GetStudyRequest(study_id="s"), timeout=10))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED  # a status set stays as it is


def test_data_dir_is_checked_at_start_up(tmp_path):
    from services.runtime.config import ConfigError, RuntimeConfig

    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_env({"TWIN_DATA_DIR": str(tmp_path / "nope")})
    assert str(info.value) == f"TWIN_DATA_DIR: {str(tmp_path / 'nope')!r} is not a folder"
    assert RuntimeConfig.from_env({"TWIN_DATA_DIR": str(tmp_path)}).data_dir == tmp_path


def test_database_error_text_stays_on_the_server(tmp_path):
    from services.historian import history_service
    from twin.history.v1 import history_pb2, history_pb2_grpc

    url = f"postgresql://secret_user@/twin?host={tmp_path}/no-socket-here"
    store = whatif_service.StudyStore(url)
    with (
        served(lambda server: history_service.add_to_server(server, url)) as history,
        served(lambda server: whatif_service.add_to_server(server, store)) as studies,
        grpc.insecure_channel(history) as h,
        grpc.insecure_channel(studies) as w,
    ):
        request = history_pb2.QueryRequest(run_id="r", metrics=["it_w"])
        err = rpc_error(lambda: history_pb2_grpc.HistoryServiceStub(h).Query(request, timeout=30))
        assert (err.code(), err.details()) == (
            grpc.StatusCode.UNAVAILABLE,
            "history database unavailable",
        )
        stub = whatif_pb2_grpc.WhatIfServiceStub(w)
        err = rpc_error(lambda: stub.GetStudy(pb.GetStudyRequest(study_id="s"), timeout=30))
        assert (err.code(), err.details()) == (
            grpc.StatusCode.UNAVAILABLE,
            "history database unavailable",
        )


def test_studies_are_capped_by_the_memory_they_need(whatif):
    request = pb.RunStudyRequest(
        spec=pb.StudySpec(
            scenario=pb.Scenario(yaml=SITE_YAML),
            duration="1h",
            dt="60s",
            vary=[pb.GridAxis(path="cooling.supply_c", range="20:40:30000")],
        )
    )
    err = rpc_error(lambda: list(whatif.RunStudy(request, timeout=120)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "variants: 30001 variants of a 8-rack site need ~3033 MiB; at most 20259 fit the "
        "study memory budget of 2048 MiB"
    )
