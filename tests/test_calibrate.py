"""Calibration: Guideline 14 statistics by hand, every calibratable parameter against
build_params of the changed site, recovery of perturbed parameters from noisy series of
the model itself (the truth is known), an unidentifiable pair named, bad input, and the
CLI end to end on a recording."""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import F64, ROOT, SMALL, run64, small_site, steady_load

from twin_core.calibratable import CALIBRATABLE, lookup
from twin_core.calibrate import Measured, calibrate
from twin_core.calibrated_file import calibrated_site_text
from twin_core.compress import compress
from twin_core.drivers import load_drivers
from twin_core.fit_stats import block_means, covariance, fit_stats, identifiability
from twin_core.inputs import load_yaml
from twin_core.params import build_params
from twin_core.site import load_site, with_overrides

# One worker runs the module: its module-scoped fixture is computed once, not per worker.
pytestmark = pytest.mark.xdist_group("calibrate")

RACK = "rack_types.GB200_NVL72"
R_DIE = f"{RACK}.thermal.r_die_c_per_w"
CDU_UA = "cooling.cdu.ua_w_per_k"
DC_UA = "cooling.dry_coolers.ua_w_per_k_per_unit"
HORIZON, DT, RECORD = 7200.0, 10.0, 10.0
FITTED = (
    "facility_w",
    "it_w",
    "cooling_w",
    "tcs_supply_mean_c",
    "facility_supply_c",
    "gpu_temp_mean_c",
    "dry_cooler_fans_w",
)


# ------------------------------------------------------------------ statistics by hand


def test_guideline14_statistics_by_hand():
    y = np.array([10.0, 12.0, 14.0, 16.0])
    yhat = np.array([11.0, 12.0, 13.0, 17.0])
    # y - yhat = [-1, 0, 1, -1]: SSE 3, sum -1, mean 13, SST 9 + 1 + 1 + 9 = 20
    s = fit_stats(y, yhat, p=1)
    assert s.n == 4
    assert s.cv_rmse_pct == pytest.approx(100 * math.sqrt(3 / 3) / 13)  # 7.692 %
    assert s.nmbe_pct == pytest.approx(100 * -1 / (3 * 13))  # -2.564 %: model over-predicts
    assert s.r2 == pytest.approx(1 - 3 / 20)
    s0 = fit_stats(y, yhat, p=0)
    assert s0.cv_rmse_pct == pytest.approx(100 * math.sqrt(3 / 4) / 13)
    assert s0.nmbe_pct == pytest.approx(-100 / (4 * 13))
    # A missing point is left out; too few points for n - p, or a zero mean, is NaN.
    gap = fit_stats(np.array([10.0, np.nan, 14.0, 16.0]), yhat, p=1)
    assert gap.n == 3 and gap.nmbe_pct == pytest.approx(100 * -1 / (2 * 40 / 3))
    assert math.isnan(fit_stats(y[:1], yhat[:1], p=1).cv_rmse_pct)
    assert math.isnan(fit_stats(np.array([-1.0, 1.0]), np.zeros(2), p=0).nmbe_pct)


def test_block_means_make_hourly_points():
    assert block_means(np.arange(1.0, 8.0), 600, 1800).tolist() == [2.0, 5.0]
    halves = block_means(np.array([1.0, np.nan, 3.0, np.nan, np.nan, np.nan]), 600, 1800)
    assert halves[0] == 2.0 and math.isnan(halves[1])
    hourly = np.array([1.0, 2.0])
    assert block_means(hourly, 3600, 3600).tolist() == [1.0, 2.0]


def test_identifiability_names_collinear_and_insensitive_parameters():
    rng = np.random.default_rng(0)
    a, c = rng.standard_normal(50), rng.standard_normal(50)
    jac = np.stack([a, -2.0 * a, c, np.zeros(50)], axis=1)  # b only as a product with a
    ident = identifiability(jac, ["a", "b", "c", "d"])
    assert ident.groups == (("a", "b"),)
    assert ident.insensitive == ("d",)
    assert ident.singular_values[-1] < 1e-12
    assert ident.warnings() == [
        "a and b: not identifiable apart (the data constrain only a combination of them)",
        "d: no measured quantity responds to it",
    ]


def test_covariance_is_residual_variance_over_fisher_information():
    jac = np.ones((4, 1))
    r = np.array([1.0, -1.0, 1.0, -1.0])
    # s^2 = 4 / (4 - 1); (J'J)^-1 = 1/4
    assert covariance(jac, r, np.zeros(4, int))[0, 0] == pytest.approx(4 / 3 / 4)
    # a missing point (-1) neither counts nor weighs
    jac5 = np.vstack([jac, [[7.0]]])
    cov = covariance(jac5, np.append(r, 0.0), np.array([0, 0, 0, 0, -1]))
    assert cov[0, 0] == pytest.approx(4 / 3 * 4 / (4 + 49) ** 2)


# ---------------------------------------------------- the table against build_params


def _changed(site, path: str, factor: float):
    _, entry = lookup(path, site) or (None, None)
    assert entry is not None, path
    x0 = entry.start(site, path)
    x = x0 * factor
    return entry, x0, x, with_overrides(site, entry.to_site(site, path, x))


@pytest.mark.parametrize("merged", [False, True], ids=["every-rack", "merged"])
@pytest.mark.parametrize("key", sorted(CALIBRATABLE))
def test_each_parameter_reaches_params_as_build_params_does(key, merged):
    """Applied to the params of the site (identical racks merged, as calibrate runs, or
    not), an entry gives exactly the params of the site with the new value."""
    site = small_site()
    path = key.replace("<T>", "GB200_NVL72")
    entry, x0, x, changed = _changed(site, path, 1.1)
    drivers = load_drivers(site)
    kw = {"horizon_s": 3600.0, "dt": DT, "dtype": F64, "host": True}

    def params(s):
        p = build_params(s, drivers, **kw)
        return compress(p) if merged else p

    expected = params(changed)
    got = entry.apply(params(site), x, x0)
    base = jax.tree.leaves(params(site))
    changed_leaves = 0
    leaves = jax.tree_util.tree_leaves_with_path(expected)
    for (where, want), have, was in zip(leaves, jax.tree.leaves(got), base, strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-9, err_msg=jax.tree_util.keystr(where))
        changed_leaves += not np.array_equal(np.asarray(want), np.asarray(was))
    assert changed_leaves >= 1  # the parameter reaches the model


# ------------------------------------------------------------------- fits the truth


TRUTH_FACTORS = {CDU_UA: 1.15, DC_UA: 0.85, R_DIE: 1.12}


def _perturbed(site):
    """The true values (the site's start values times TRUTH_FACTORS) and their rollout."""
    values = {}
    for path, factor in TRUTH_FACTORS.items():
        _, entry = lookup(path, site) or (None, None)
        assert entry is not None
        values[path] = entry.start(site, path) * factor
    return values, run64(with_overrides(site, values), HORIZON, DT, RECORD)


@pytest.fixture(scope="module")
def truth():
    """The small site with three parameters perturbed (the truth), its rollout with 1 %
    Gaussian noise (seeded) on every fitted quantity, and the true values."""
    site = small_site()
    values, result = _perturbed(site)
    rng = np.random.default_rng(7)
    series = {
        q: result.means[q] * (1 + 0.01 * rng.standard_normal(len(result.means[q]))) for q in FITTED
    }
    series["ambient_c"] = result.means["ambient_c"]  # the measured weather drives the fit
    return site, values, Measured(RECORD, series, start_s=1_700_000_000.0), result


BOUNDS = {CDU_UA: (1e5, 4e5), DC_UA: (3e4, 1.2e5), R_DIE: (0.015, 0.066)}


def test_recovers_perturbed_parameters_within_their_uncertainty(truth, tmp_path):
    site, values, measured, _ = truth
    cal = calibrate(site, measured, fit=BOUNDS, dt=DT, stats_s=600.0)
    assert cal.converged and cal.warnings == []
    for path, true in values.items():
        e = cal.estimates[path]
        assert e.start == pytest.approx(true / TRUTH_FACTORS[path])
        assert abs(e.value - true) <= 3 * e.std_error, (path, e, true)
        assert abs(e.value - true) <= 0.05 * true, (path, e, true)
        assert 0 < e.std_error < 0.05 * true
    for q in FITTED:
        after = cal.after[q]
        assert after.n == HORIZON / 600
        assert after.cv_rmse_pct <= 5.0 and abs(after.nmbe_pct) <= 1.0, (q, after)
    # The uncalibrated site misses the fans' power by far more than the noise.
    assert (
        cal.before["dry_cooler_fans_w"].cv_rmse_pct
        > 10 * cal.after["dry_cooler_fans_w"].cv_rmse_pct
    )
    assert cal.cost_after < cal.cost_before / 2

    # The calibrated site file: the base document with the estimates and a provenance
    # header; it loads to the calibrated site.
    doc = load_yaml(SMALL.read_text(), "small")
    text = calibrated_site_text(
        doc, cal, site, base="small.yaml", out_dir=tmp_path, date=dt.date(2026, 12, 3)
    )
    assert text.startswith("# Calibrated from small.yaml on 2026-12-03 (twin calibrate).\n")
    assert "# Data window: 2023-11-14 22:13:20Z, 2 h at 10 s steps.\n" in text
    e = cal.estimates[CDU_UA]
    assert f"#   {CDU_UA}: {e.value:.6g} ± {e.std_error:.4g} (base 200000)\n" in text
    (tmp_path / "cal.yaml").write_text(text)
    written = load_site(tmp_path / "cal.yaml")
    assert written.cooling.cdu.ua_w_per_k == pytest.approx(e.value)
    assert written.rack_types["GB200_NVL72"].thermal.r_die_c_per_w == pytest.approx(
        cal.estimates[R_DIE].value
    )
    assert written.model_dump() == cal.site(site).model_dump()


def test_noise_free_series_give_the_truth_exactly(truth):
    """Without noise and with the site's own weather, the fit lands on the truth to
    rounding: the Jacobian and the steps are right, not just good enough."""
    site, values, _, result = truth
    series = {q: result.means[q] for q in FITTED}
    cal = calibrate(site, Measured(RECORD, series), fit=BOUNDS, dt=DT, stats_s=600.0)
    for path, true in values.items():
        assert cal.estimates[path].value == pytest.approx(true, rel=1e-8), path
    assert cal.after["gpu_temp_mean_c"].cv_rmse_pct < 1e-8


def test_a_coarse_fit_corrected_to_the_plant_step_lands_on_the_truth():
    """The truth's noise-free series at 10 s, fitted at 60 s: the coarse step's own
    error biases the estimates; ``reference_dt`` takes it out (deferred correction)."""
    # On a constant load at the compute level (0.95), not the module's truth: the step
    # correction needs a load the coarse step can represent. The job's phases (14 s at
    # 0.95, 6 s at 0.3) swing inside every 60 s step, which no 60 s step resolves; on
    # them the correction took the CDU UA error only from 19.2k to 5.5k W/K.
    site = small_site(steady_load(0.95))
    values, result = _perturbed(site)
    minute = {q: block_means(np.asarray(result.means[q]), RECORD, 60.0) for q in FITTED}
    measured = Measured(60.0, minute)
    coarse = calibrate(site, measured, fit=BOUNDS, dt=60.0, stats_s=600.0)
    fixed = calibrate(site, measured, fit=BOUNDS, dt=60.0, stats_s=600.0, reference_dt=DT)
    assert fixed.reference_dt == DT and coarse.reference_dt is None
    for path, true in values.items():
        before, after = coarse.estimates[path], fixed.estimates[path]
        assert before.step_correction == 0.0
        assert after.value == pytest.approx(before.value + after.step_correction)
        assert abs(after.value - true) < 0.2 * abs(before.value - true), (path, before, after)
        assert after.std_error == before.std_error
    with pytest.raises(ValueError, match=r"^reference_dt: 60 s must be positive and finer "):
        calibrate(site, measured, fit=BOUNDS, dt=60.0, reference_dt=60.0)


def test_a_pair_entering_only_as_a_ratio_is_reported_unidentifiable(truth):
    site, _, measured, _ = truth
    eff, head = "cooling.cdu.pump.efficiency", "cooling.cdu.pump.rated_head_kpa"
    fit = {eff: (0.3, 0.95), head: (100.0, 400.0), "bias.facility_w": (-5e4, 5e4)}
    cal = calibrate(site, measured, fit=fit, dt=DT, stats_s=600.0, max_iterations=3)
    assert cal.identifiability.groups == ((eff, head),)
    assert f"{eff} and {head}: not identifiable apart" in cal.warnings[0]
    assert math.isinf(cal.estimates[eff].std_error) and math.isinf(cal.estimates[head].std_error)
    assert math.isfinite(cal.estimates["bias.facility_w"].std_error)
    assert "bias.facility_w" in cal.estimates and "bias.facility_w" not in cal.overrides


# ------------------------------------------------------------------------- bad input


def _measured() -> Measured:
    return Measured(60.0, {"facility_w": np.full(10, 1e6), "ambient_c": np.full(10, 20.0)})


@pytest.mark.parametrize(
    ("fit", "message"),
    [
        ({}, "fit: give at least one parameter (choose from "),
        (
            {"cooling.cdu.volume": (1.0, 2.0)},
            "fit.cooling.cdu.volume: not a calibratable parameter (choose from "
            "cooling.air_handling_w_per_w, ",
        ),
        ({CDU_UA: (4e5, 1e5)}, f"fit.{CDU_UA}: lower bound 400000 must be below upper 100000"),
        (
            {CDU_UA: (3e5, 4e5)},
            f"fit.{CDU_UA}: the site's value 200000 is outside the bounds [300000, 400000]",
        ),
        ({CDU_UA: (1e5, math.inf)}, f"fit.{CDU_UA}: bounds must be finite numbers"),
        (
            {"bias.it_w": (-1.0, 1.0)},
            "fit.bias.it_w: it_w is not a measured quantity that is fitted",
        ),
        (
            {"rack_types.GB300_NVL72.gpu_idle_w": (100.0, 300.0)},
            "fit.rack_types.GB300_NVL72.gpu_idle_w: rack type 'GB300_NVL72' is not in use "
            "(the halls use GB200_NVL72)",
        ),
    ],
)
def test_bad_fit_names_the_field(fit, message):
    with pytest.raises(ValueError) as err:
        calibrate(small_site(), _measured(), fit=fit, dt=DT)
    assert str(err.value).startswith(message), str(err.value)


def test_bad_measured_names_the_field():
    with pytest.raises(ValueError, match=r"^measured\.it_kw: not a quantity of the contract "):
        Measured(60.0, {"it_kw": np.ones(3)})
    with pytest.raises(ValueError, match=r"^measured: series of different lengths \[2, 3\]$"):
        Measured(60.0, {"it_w": np.ones(3), "facility_w": np.ones(2)})
    with pytest.raises(ValueError, match=r"^measured\.it_w: holds an infinite value$"):
        Measured(60.0, {"it_w": np.array([1.0, math.inf])})
    only_weather = Measured(60.0, {"ambient_c": np.ones(3)})
    with pytest.raises(ValueError, match=r"^measured: nothing to fit against \(only drivers"):
        calibrate(small_site(), only_weather, fit={CDU_UA: (1e5, 4e5)}, dt=DT)
    with pytest.raises(ValueError, match=r"^noise\.it_w: not a measured quantity that is fitted$"):
        calibrate(small_site(), _measured(), fit={CDU_UA: (1e5, 4e5)}, dt=DT, noise={"it_w": 1.0})


# ------------------------------------------------------------------------------- CLI


def twin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def _recording(truth, path):
    """The truth's series as a `twin gateway record` file: the meter, eight racks, two
    CDUs and the weather, one row per measurement, Unix times."""
    _, _, measured, result = truth
    rows: dict[str, list] = {
        k: [] for k in ("batch", "received_s", "source", "entity", "quantity", "time_s", "value")
    }
    t0 = 1_700_000_000.0
    entities = [("meter", "meter_power_w", measured.series["facility_w"])]
    entities += [
        (f"rack/{s}/{c}", "rack_power_w", measured.series["it_w"] / 8)
        for s in range(4)
        for c in range(2)
    ]
    entities += [
        (f"cdu/{c}", "supply_temperature_c", measured.series["tcs_supply_mean_c"]) for c in range(2)
    ]
    entities += [("weather", "ambient_temperature_c", result.means["ambient_c"])]
    entities += [("pump/0", "equipment_power_w", np.full(measured.n, 5e3))]
    for k in range(measured.n):
        for entity, quantity, values in entities:
            for name, value in zip(
                rows,
                (k, t0 + k * 10, "bms", entity, quantity, t0 + k * 10 + 5, values[k]),
                strict=True,
            ):
                rows[name].append(value)
    pq.write_table(pa.table(rows), path)


def test_cli_calibrates_a_recording_and_writes_the_site(truth, tmp_path):
    rec = tmp_path / "rec.parquet"
    _recording(truth, rec)
    out, report = tmp_path / "calibrated.yaml", tmp_path / "report.json"
    done = twin(
        "calibrate", str(SMALL), "--measured", str(rec), "--fit", f"{CDU_UA}=1e5:4e5",
        "--out", str(out), "--dt", "10s", "--resolution", "10s", "--stats", "10m",
        "--report", str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "note: not used (no model quantity): pump/0 equipment_power_w" in done.stderr
    assert "fit at 600 s (ASHRAE Guideline 14): before → after" in done.stdout
    assert "tcs_supply_mean_c" in done.stdout and "facility_w" in done.stdout
    result = json.loads(report.read_text())
    assert set(result["after"]) == {"facility_w", "it_w", "tcs_supply_mean_c"}
    estimate = result["estimates"][CDU_UA]
    assert abs(estimate["value"] - 230_000) <= max(3 * estimate["std_error"], 0.05 * 230_000)
    assert result["after"]["tcs_supply_mean_c"]["cv_rmse_pct"] <= 5.0
    site = load_site(out)
    assert site.cooling.cdu.ua_w_per_k == pytest.approx(estimate["value"])
    assert out.read_text().startswith("# Calibrated from small.yaml on ")
    assert "# Data window: 2023-11-14 22:13:20Z, 2 h at 10 s steps.\n" in out.read_text()


@pytest.mark.parametrize(
    ("fit", "message"),
    [
        ("cooling.cdu.volume=1:2", "error: --fit cooling.cdu.volume: not a calibratable parameter"),
        (
            f"{CDU_UA}=4e5:1e5",
            f"error: --fit {CDU_UA}: lower bound 400000 must be below upper 100000",
        ),
        (f"{CDU_UA}=1e5", f"error: --fit '{CDU_UA}=1e5': expected PATH=LO:HI"),
        (
            f"{CDU_UA}=1e5:4e5 --reference-dt 1m",
            "error: --reference-dt: 60 s must be positive and finer than dt = 10 s\n",
        ),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, fit, message):
    table = tmp_path / "m.csv"
    table.write_text("time_s,facility_w,ambient_c\n0,1e6,20\n60,1e6,20\n")
    fit, *more = fit.split(" ")
    done = twin(
        "calibrate",
        str(SMALL),
        "--measured",
        str(table),
        "--fit",
        fit,
        *more,
        "--out",
        str(tmp_path / "o.yaml"),
    )
    assert done.returncode == 2
    assert done.stderr.startswith(message), done.stderr
    assert not (tmp_path / "o.yaml").exists()


def test_cli_names_a_column_that_is_no_quantity(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,facility_kw\n0,1\n60,1\n")
    done = twin(
        "calibrate", str(SMALL), "--measured", str(bad), "--fit", f"{CDU_UA}=1e5:4e5",
        "--out", str(tmp_path / "o.yaml"),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"error: --measured {bad}: column 'facility_kw' is not a model quantity"
    ), done.stderr


def test_a_plant_recording_maps_to_site_quantities(tmp_path):
    """`twin plant` entities: rack GPU temperatures (averaged), the racks' GPU power and
    rack power (summed over all 8 racks); a UPS reading has no model quantity."""
    from services.measured_series import read_measured

    rows: dict[str, list] = {
        k: [] for k in ("batch", "received_s", "source", "entity", "quantity", "time_s", "value")
    }
    for k in range(3):
        t = 1.7e9 + 60 * k + 1
        readings = [("ups/0", "equipment_power_w", 1e6)]
        for s in range(4):
            for c in range(2):
                readings += [
                    (f"rack/{s}/{c}", "gpu_temperature_c", 70.0 + s),
                    (f"rack/{s}/{c}/gpus", "equipment_power_w", 1e5 + k),
                    (f"rack/{s}/{c}", "rack_power_w", 1.3e5),
                ]
        for entity, quantity, value in readings:
            for name, v in zip(rows, (k, t, "plant", entity, quantity, t, value), strict=True):
                rows[name].append(v)
    path = tmp_path / "plant.parquet"
    pq.write_table(pa.table(rows), path)
    measured, notes = read_measured(path, small_site())
    # the window starts on the minute (1.7e9 s is 20 s past one)
    assert (measured.step_s, measured.n, measured.start_s) == (60.0, 3, 1.7e9 - 20)
    assert measured.series["gpu_temp_mean_c"].tolist() == [71.5] * 3
    assert measured.series["gpu_power_w"].tolist() == [8e5, 8e5 + 8, 8e5 + 16]
    assert measured.series["it_w"].tolist() == [8 * 1.3e5] * 3
    assert notes == ["not used (no model quantity): ups/0 equipment_power_w"]
