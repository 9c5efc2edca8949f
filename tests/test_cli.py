"""The ``twin`` command: artifacts of a run, and one readable line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, SMALL

REQUIRED = {
    "pue",
    "it_energy_mwh",
    "facility_energy_mwh",
    "peak_facility_mw",
    "max_gpu_temp_c",
    "throttled_gpu_hours",
    "chiller_hours",
    "water_m3",
    "cost_usd",
    "emissions_tco2",
    "cfe_score",
    "max_ramp_mw_per_s",
    "energy_balance_rel_error",
    "delivered_eflop",
}


def twin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def test_simulate_writes_summary_timeseries_and_overview(tmp_path):
    out = tmp_path / "run"
    done = twin(
        "simulate",
        str(SMALL),
        "--duration",
        "2h",
        "--dt",
        "1s",
        "--out",
        str(out),
        "--set",
        "cooling.supply_c=32",
        "--record",
        "5m",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary.keys() >= REQUIRED
    assert summary["overrides"] == {"cooling.supply_c": 32}
    assert summary["duration_s"] == 7200 and summary["racks"] == 8 and summary["gpus"] == 576
    assert 1.0 < summary["pue"] < 1.3
    table = pq.read_table(out / "timeseries.parquet")
    assert table.num_rows == 24  # 2 h at 5 min
    assert {"time_h", "facility_w", "pue", "gpu_temp_max_c_max"} <= set(table.column_names)
    energy = sum(table.column("it_w").to_pylist()) * 1e-6 * 5 / 60
    assert energy == pytest.approx(summary["it_energy_mwh"], rel=1e-5)
    assert (out / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pue" in done.stdout


def test_per_gpu_granularity_from_the_cli(tmp_path):
    done = twin(
        "simulate",
        str(SMALL),
        "--duration",
        "10m",
        "--granularity",
        "gpu",
        "--out",
        str(tmp_path / "g"),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["granularity"] == "gpu"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "cooling.bogus=1"], "error: cooling.bogus: unknown field"),
        (
            ["--set", "cooling.facility_water.pump.rated_flow_lps=-3"],
            "error: cooling.facility_water.pump.rated_flow_lps: Input should be greater than or "
            "equal to 0.000001",
        ),
        (
            ["--set", "nonsense"],
            "error: --set 'nonsense': expected path=value, e.g. cooling.supply_c=32",
        ),
        (["--dt", "7s"], "error: dt: 7 s must divide an hour (e.g. 0.5, 1, 10, 60)"),
        (
            ["--duration", "soon"],
            "error: --duration: invalid duration 'soon' (expected e.g. 1s, 90m, 24h, 7d)",
        ),
        (
            ["--duration", "1e400s"],
            "error: --duration: invalid duration '1e400s' (must be finite, at most 100 years)",
        ),
        (["--dt", "1e-9"], "error: dt: 1e-09 s is out of range (0.01 s to 1 h)"),
        (
            ["--set", "cooling.supply_c=[oops"],
            "error: --set cooling.supply_c: cannot parse value '[oops': invalid YAML at line 1 "
            "(expected ',' or ']', but got '<stream end>')",
        ),
        (["--granularity", "chip"], "error: --granularity: 'chip' is not one of rack, gpu"),
        (["--record", "7m"], "error: record_every: 420 s does not divide the duration 86400 s"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "never"
    done = twin("simulate", str(SMALL), "--out", str(out), *args)
    assert done.returncode == 2
    assert done.stderr.strip() == message
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_missing_scenario(tmp_path):
    done = twin("simulate", str(tmp_path / "x.yaml"), "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {tmp_path / 'x.yaml'}: no such scenario file"


def test_validate_prints_the_site_size():
    done = twin("validate", str(ROOT / "scenarios" / "fairwater-wi.yaml"))
    assert done.returncode == 0, done.stderr
    assert "2880 racks, 207360 GPUs: valid" in done.stdout


def test_validate_deep_yaml_is_one_line(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    done = twin("validate", str(deep))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {deep}: nested deeper than 64 levels"


def test_non_finite_kpis_fail_and_write_nothing(tmp_path):
    # Within the schema's bounds, yet more heat than the model's float32 can carry.
    out = tmp_path / "o"
    done = twin(
        "simulate", str(SMALL), "--duration", "10m", "--dt", "60s", "--out", str(out),
        "--set", "power.misc_fixed_mw=1e12", "--set", "power.interconnect_limit_mw=1e12",
    )  # fmt: skip
    assert done.returncode in (0, 2), done.stderr
    if done.returncode == 0:  # finite: the summary is strict JSON
        json.loads((out / "summary.json").read_text(), parse_constant=lambda c: 1 / 0)
    else:
        assert "KPIs not finite" in done.stderr and not out.exists()
