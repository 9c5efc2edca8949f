"""Deviation detection, the parts that need no bus: the CUSUM's hand numbers and average run
lengths, the robust noise estimate, the cause rule on synthetic residuals, the events the
residual monitor raises and clears, and the model's own values the domains publish."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import constant_weather, small_site, steady_load

from services.domain import OWNS, DomainModel
from services.monitor.cause import EQUIPMENT, LOAD, RACK_POWER, RETURN, SENSOR, SUPPLY
from services.monitor.cause import UNSPECIFIED as NO_CAUSE
from services.monitor.cusum import Change, Cusum, arl, arl_one_sided, arl_siegmund
from services.monitor.noise import NoiseEstimate
from services.monitor.residuals import MonitorConfig, ResidualMonitor
from twin.twin.v1 import deviation_pb2

RAISED = deviation_pb2.DEVIATION_STATUS_RAISED
CLEARED = deviation_pb2.DEVIATION_STATUS_CLEARED

# ------------------------------------------------------------------ the CUSUM


def changes(cusum: Cusum, zs) -> list[tuple[int, Change]]:
    """(1-based sample, change) for each change ``zs`` cause."""
    out = []
    for i, z in enumerate(zs, 1):
        change = cusum.update(float(z))
        if change is not None:
            out.append((i, change))
    return out


def test_a_3_sigma_step_is_raised_at_the_9th_sample_and_cleared_40_samples_after_return():
    # Hand: S+ = (3 - 0.5) n = 2.5 n exceeds h = 20 first at n = 9 (22.5; n = 8 gives 20,
    # not above). Held at h while open, it falls by k = 0.5 per sample of z = 0: 0 at 40.
    cusum = Cusum()
    assert changes(cusum, [3.0] * 8) == []
    assert cusum.pos == 20.0
    assert cusum.update(3.0) is Change.RAISED
    # The shift estimate k + S/N = 0.5 + 22.5 / 9 = 3 sigma exactly.
    assert cusum.onset_shift == 3.0 and cusum.side == 1
    assert cusum.pos == 20.0  # held at h
    assert changes(cusum, [3.0] * 100) == []  # a lasting departure stays open, held
    assert changes(cusum, [0.0] * 40) == [(40, Change.CLEARED)]
    assert cusum.side == 0 and cusum.open_mean() == pytest.approx(3 * 101 / 141)


def test_a_step_down_is_raised_on_the_lower_side():
    cusum = Cusum()
    assert changes(cusum, [-3.0] * 9) == [(9, Change.RAISED)]
    assert cusum.side == -1 and cusum.onset_shift == -3.0


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match=r"^k: must be a positive number of sigmas, got 0"):
        Cusum(k=0)
    with pytest.raises(ValueError, match=r"^h: must be a positive number of sigmas, got nan"):
        Cusum(h=math.nan)
    with pytest.raises(ValueError, match=r"^z: must be finite, got inf"):
        Cusum().update(math.inf)


def test_average_run_lengths_match_the_literature_and_siegmund():
    # k = 0.5, h = 5 (Montgomery's standard chart): one-sided in-control ARL 930 by the
    # Markov chain (Siegmund: 938), two-sided 465; a 1-sigma shift found in 10.4 samples.
    assert arl_one_sided(0.0, 0.5, 5.0) == pytest.approx(930.9, abs=1.0)
    assert arl(0.0, 0.5, 5.0) == pytest.approx(465.4, abs=0.5)
    assert arl(1.0, 0.5, 5.0) == pytest.approx(10.38, abs=0.05)
    # The defaults (k = 0.5, h = 20): the numbers in the docstring and the README.
    assert arl(0.0) == pytest.approx(1.54e9, rel=0.01)
    assert arl_siegmund(0.0) == pytest.approx(arl(0.0), rel=0.02)
    assert arl(1.0) == pytest.approx(40.4, abs=0.1)
    assert arl(3.0) == pytest.approx(8.58, abs=0.01)


def test_pure_noise_raises_nothing():
    # 100,000 samples against an ARL of 1.5e9: a false alarm here has probability 7e-5.
    z = np.random.default_rng(1).standard_normal(100_000)
    cusum = Cusum()
    assert changes(cusum, z) == []
    assert cusum.samples == 100_000


def test_false_alarm_rate_over_a_long_run_matches_the_arl():
    # h = 5 so that false alarms are frequent enough to count: 400,000 samples of pure
    # noise, the chart restarted after each alarm; the mean run length is the in-control
    # ARL (465.4) within its sampling error (~3 % for ~860 runs).
    z = np.random.default_rng(2).standard_normal(400_000)
    runs, cusum, start = [], Cusum(h=5.0), 0
    for i, value in enumerate(z):
        if cusum.update(float(value)) is Change.RAISED:
            runs.append(i + 1 - start)
            cusum, start = Cusum(h=5.0), i + 1
    assert len(runs) > 700
    assert np.mean(runs) == pytest.approx(arl(0.0, 0.5, 5.0), rel=0.1)


def test_detection_delay_of_a_3_sigma_step_in_noise_matches_the_arl():
    rng = np.random.default_rng(3)
    delays = []
    for _ in range(2000):
        cusum, n = Cusum(), 0
        while cusum.update(3.0 + float(rng.standard_normal())) is not Change.RAISED:
            n += 1
        delays.append(n + 1)
    assert np.mean(delays) == pytest.approx(arl(3.0), rel=0.03)  # 8.58 samples


# ------------------------------------------------------------------ the noise estimate


def test_noise_estimate_by_hand_and_robust_to_an_offset_and_a_step():
    # Residuals 0, 1, 0, 1, ...: every successive difference is 1, so
    # sigma = 1.4826 * 1 / sqrt(2) = 1.04836.
    est = NoiseEstimate(samples=10)
    assert [est.add(float(i % 2)) for i in range(9)] == [None] * 9
    assert est.add(1.0) == pytest.approx(1.4826 / math.sqrt(2))
    # Gaussian noise of 0.05 on an offset of 0.8 with a 2.0 step halfway: still 0.05.
    rng = np.random.default_rng(4)
    r = 0.8 + 0.05 * rng.standard_normal(200)
    r[100:] += 2.0
    est = NoiseEstimate(samples=200)
    for value in r:
        est.add(float(value))
    assert est.sigma == pytest.approx(0.05, rel=0.15)
    with pytest.raises(ValueError, match=r"^samples: at least 3 readings are needed, got 2"):
        NoiseEstimate(samples=2)


# ------------------------------------------------------------------ the monitor and the cause rule

NOISE = {"supply_temperature_c": 0.05, "return_temperature_c": 0.05, "rack_power_w": 300.0}
RACKS = [f"rack/{slot}/0" for slot in range(4)]


def drive(monitor: ResidualMonitor, steps: int, residual, rng, start: int = 0, cdus: int = 1):
    """Feed ``steps`` readings of the supply and return of ``cdus`` CDUs and the racks of
    cdu 0 against a model that says 0 everywhere, so each reading is its residual: noise of
    the configured sigma plus ``residual(step, (entity, quantity))``. The events, in order."""
    temperatures = [(f"cdu/{i}", q) for i in range(cdus) for q in (SUPPLY, RETURN)]
    keys = temperatures + [(r, RACK_POWER) for r in RACKS]
    sigma = {SUPPLY: 0.05, RETURN: 0.05, RACK_POWER: 300.0}
    events = []
    for step in range(start, start + steps):
        for key in keys:
            value = residual(step, key) + sigma[key[1]] * rng.standard_normal()
            if not math.isnan(value):
                monitor.offer(key[0], key[1], float(value), 1e9 + step)
        for domain in ("cooling", "compute"):
            events += monitor.on_model(domain, lambda entity, q: 0.0, step, 10.0 * step)
    return events


def monitor_with(noise=NOISE) -> ResidualMonitor:
    monitor = ResidualMonitor("small", MonitorConfig(noise=noise))
    monitor.start_run("run-1")
    return monitor


def raised(events) -> dict[tuple[str, int], deviation_pb2.Deviation]:
    return {(e.entity, e.quantity): e for e in events if e.status == RAISED}


def test_a_domains_state_is_waited_for_only_while_one_of_its_readings_is_pending():
    monitor = monitor_with()
    assert not monitor.waiting("cooling") and not monitor.waiting("compute")
    monitor.offer("cdu/0", SUPPLY, 30.0, 1e9)
    assert monitor.waiting("cooling") and not monitor.waiting("compute")
    monitor.on_model("compute", lambda entity, q: 0.0, 0, 10.0)  # not the reading's domain
    assert monitor.waiting("cooling")
    monitor.on_model("cooling", lambda entity, q: 30.0, 0, 10.0)  # tested: nothing waits
    assert not monitor.waiting("cooling")
    monitor.offer("rack/0/0", RACK_POWER, 1e5, 1e9 + 1)
    assert monitor.waiting("compute") and not monitor.waiting("cooling")


def test_clean_residuals_raise_nothing():
    events = drive(monitor_with(), 3000, lambda step, key: 0.0, np.random.default_rng(5))
    assert events == []


def test_a_supply_sensor_step_is_a_sensor_deviation_of_cdu_0_with_its_size():
    # +0.25 degC (5 sigma) on the supply sensor from step 100; return and racks agree.
    def residual(step, key):
        return 0.25 if key == ("cdu/0", SUPPLY) and step >= 100 else 0.0

    events = drive(monitor_with(), 200, residual, np.random.default_rng(6))
    assert list(raised(events)) == [("cdu/0", SUPPLY)]
    e = events[0]
    assert e.cause == SENSOR
    assert e.reason == "return temperature and rack power agree with the model"
    assert 100 <= e.step <= 106  # z - k = 4.5 per sample: about 5 samples
    assert e.event_id == "run-1/cdu/0/supply_temperature_c/1/raised"
    assert (e.site_id, e.run_id, e.unit, e.sigma) == ("small", "run-1", "degC", 0.05)
    assert e.departure == pytest.approx(0.25, abs=0.05)
    assert e.departure_sigmas == pytest.approx(e.departure / 0.05)
    assert e.time_s == 10.0 * e.step and e.raised_step == e.step
    assert e.measured_time_s == 1e9 + e.step


def test_supply_and_return_rising_together_are_equipment():
    # Fouling: the heat still arrives but is rejected worse, both temperatures +0.15 degC.
    def residual(step, key):
        return 0.15 if key[1] in (SUPPLY, RETURN) and step >= 50 else 0.0

    events = drive(monitor_with(), 200, residual, np.random.default_rng(7))
    found = raised(events)
    assert sorted(found) == [("cdu/0", SUPPLY), ("cdu/0", RETURN)]
    assert {e.cause for e in found.values()} == {EQUIPMENT}
    assert found[("cdu/0", SUPPLY)].reason == "supply and return depart together"
    assert {e.suspect for e in found.values()} == {"cdu/0"}


def test_one_cdu_of_two_departing_is_that_cdu_and_every_cdu_is_the_shared_loop():
    def fouled_cdu_1(step, key):
        return 0.15 if key[0] == "cdu/1" and step >= 50 else 0.0

    found = raised(drive(monitor_with(), 200, fouled_cdu_1, np.random.default_rng(7), cdus=2))
    assert sorted(found) == [("cdu/1", SUPPLY), ("cdu/1", RETURN)]
    assert {(e.cause, e.suspect) for e in found.values()} == {(EQUIPMENT, "cdu/1")}

    # A lost facility water pump: every CDU's supply and return rise together.
    def lost_pump(step, key):
        return 0.15 if key[1] in (SUPPLY, RETURN) and step >= 50 else 0.0

    found = raised(drive(monitor_with(), 200, lost_pump, np.random.default_rng(7), cdus=2))
    assert len(found) == 4
    assert {(e.cause, e.suspect) for e in found.values()} == {(EQUIPMENT, "facility_water")}
    assert found[("cdu/1", RETURN)].reason == (
        "return and supply depart together at every CDU: the facility water loop they share"
    )


def test_rack_power_departing_is_load_and_so_is_the_return_it_heats():
    # rack/2/0 draws 3 kW (10 sigma) more than the model from step 50; the extra heat
    # raises the CDU's return temperature by 0.1 degC (2 sigma), the supply barely.
    def residual(step, key):
        if step < 50:
            return 0.0
        return {("rack/2/0", RACK_POWER): 3000.0, ("cdu/0", RETURN): 0.1}.get(key, 0.0)

    events = drive(monitor_with(), 300, residual, np.random.default_rng(8))
    found = raised(events)
    assert sorted(found) == [("cdu/0", RETURN), ("rack/2/0", RACK_POWER)]
    assert found[("rack/2/0", RACK_POWER)].cause == LOAD
    assert found[("cdu/0", RETURN)].cause == LOAD
    assert found[("cdu/0", RETURN)].reason == "rack power departs too (rack/2/0)"
    assert found[("rack/2/0", RACK_POWER)].departure == pytest.approx(3000.0, rel=0.1)


def test_nothing_coupled_measured_leaves_the_cause_unspecified():
    def residual(step, key):
        if key != ("cdu/0", SUPPLY):
            return math.nan  # not measured
        return -0.3 if step >= 20 else 0.0

    events = drive(monitor_with(), 100, residual, np.random.default_rng(9))
    assert [(e.entity, e.cause) for e in events] == [("cdu/0", NO_CAUSE)]
    assert events[0].departure < 0 and events[0].reason == "no return temperature measured at cdu/0"


def test_a_deviation_clears_when_the_residual_returns_and_shows_while_open():
    monitor = monitor_with()
    rng = np.random.default_rng(10)

    def residual(step, key):
        return 0.25 if key == ("cdu/0", SUPPLY) and 20 <= step < 120 else 0.0

    events = drive(monitor, 100, residual, rng)
    assert [e.status for e in events] == [RAISED]
    assert [e.event_id for e in monitor.open_deviations()] == [events[0].event_id]
    events += drive(monitor, 200, residual, rng, start=100)
    assert [e.status for e in events] == [RAISED, CLEARED]
    cleared = events[1]
    # Cleared about h / k = 40 samples after the return at step 120.
    assert 140 <= cleared.step <= 175
    assert cleared.event_id == "run-1/cdu/0/supply_temperature_c/1/cleared"
    assert cleared.cause == SENSOR and cleared.raised_step == events[0].step
    assert 0.0 < cleared.departure < 0.25  # the mean over the open time, return included
    assert monitor.open_deviations() == []


def test_a_republished_reading_is_one_sample_and_the_noise_is_learned_when_not_given():
    monitor = ResidualMonitor("small", MonitorConfig(learn_samples=10))
    monitor.start_run("run-1")
    rng = np.random.default_rng(11)
    for step in range(30):
        value = 0.05 * float(rng.standard_normal())
        for _ in range(3):  # held by the gateway: the same reading three ticks
            monitor.offer("cdu/1", SUPPLY, value, 1e9 + step)
            monitor.on_model("cooling", lambda entity, q: 0.0, step, step)
    series = monitor._series[("cdu/1", SUPPLY)]
    assert series.cusum is not None and series.cusum.samples == 30 - 10 + 1
    assert series.sigma == pytest.approx(0.05, rel=0.5)


def test_readings_of_no_monitored_entity_are_refused():
    monitor = monitor_with()
    monitor.offer("cdu/x", SUPPLY, 30.0, 1.0)
    monitor.offer("rack/1", RACK_POWER, 1e5, 1.0)
    monitor.offer("cdu/9", SUPPLY, 30.0, 1.0)  # well formed, but the model has no CDU 9
    assert monitor.on_model("cooling", lambda entity, q: None, 0, 0.0) == []
    assert monitor.refused == 3 and monitor._series == {}


def test_monitor_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"^noise.flow: not a monitored quantity \(known: "):
        MonitorConfig(noise={"flow": 1.0})
    with pytest.raises(ValueError, match=r"^noise.rack_power_w: must be a positive number"):
        MonitorConfig(noise={"rack_power_w": -1.0})
    with pytest.raises(ValueError, match=r"^h: must be a positive number of sigmas, got -1"):
        MonitorConfig(h=-1)


# ------------------------------------------------------------------ the model's own values


def test_cooling_publishes_its_open_loop_supply_not_the_reading_that_replaced_it():
    site = small_site(steady_load(0.8), constant_weather(20.0))
    clean, live = DomainModel(site, "cooling"), DomainModel(site, "cooling")
    # compute's part of the boundary held at its initial values (the racks' heat)
    peers = {"compute": {n: np.asarray(getattr(clean.initial, n)) for n in OWNS["compute"]}}
    for step in range(30):
        out_clean, _ = clean.advance(peers)
        out_live, parts_live = live.advance(peers)
        mine, model = clean.modelled(out_clean), live.modelled(out_live)
        # Before the first reading both are the same model.
        np.testing.assert_allclose(model["tcs_supply_model_c"], mine["tcs_supply_model_c"])
        np.testing.assert_allclose(model["tcs_return_model_c"], mine["tcs_return_model_c"])
        if step >= 10:  # a reading 2 degC above the model replaces the live state
            live.assimilate(tcs_supply_c=parts_live["tcs_supply_c"] + 2.0)
    assert np.all(np.asarray(live.state.tcs_supply_c) > np.asarray(clean.state.tcs_supply_c) + 1)
    # The return is the supply plus the rack heat over the loop's capacity rate.
    heat = np.asarray(live._boundary.heat_liquid_w, np.float64)
    rise = heat / np.asarray(live.params.cooling.tcs_c, np.float64)
    np.testing.assert_allclose(
        model["tcs_return_model_c"] - model["tcs_supply_model_c"], rise, rtol=1e-12
    )
    assert np.all(rise > 1.0)


def test_compute_publishes_the_modelled_rack_power():
    model = DomainModel(small_site(), "compute")
    outputs, parts = model.advance({})
    np.testing.assert_array_equal(model.modelled(outputs)["rack_ac_model_w"], parts["rack_ac_w"])


def test_twin_monitor_noise_configures_the_service_and_errors_name_the_item(monkeypatch):
    from services.monitor.residuals import parse_noise
    from services.runtime.config import ConfigError, RuntimeConfig

    assert parse_noise("supply_temperature_c=0.05, rack_power_w=300") == {
        "supply_temperature_c": 0.05,
        "rack_power_w": 300.0,
    }
    assert parse_noise(None) == {} and parse_noise("") == {}
    monkeypatch.setenv("TWIN_MONITOR_NOISE", "return_temperature_c=0.1")
    assert RuntimeConfig.from_env().monitor_noise == "return_temperature_c=0.1"
    monkeypatch.setenv("TWIN_MONITOR_NOISE", "supply_temperature_c=x")
    with pytest.raises(ConfigError, match=r"^TWIN_MONITOR_NOISE: 'supply_temperature_c=x': "):
        RuntimeConfig.from_env()


def test_the_monitor_reads_the_model_s_rack_power_and_falls_back_to_the_published_one():
    from services.messages import pack
    from services.monitor.service import compute_lookup, cooling_lookup
    from twin.compute.v1 import compute_pb2
    from twin.cooling.v1 import cooling_pb2

    published = np.array([[1e5, 2e5], [3e5, 4e5]])
    state = compute_pb2.ComputeState(rack_ac_w=pack(published))
    lookup = compute_lookup(state)  # no reading replaced anything: rack_ac_w is the model's
    assert (lookup("rack/1/0", RACK_POWER), lookup("rack/2/0", RACK_POWER)) == (3e5, None)
    state.rack_ac_model_w.CopyFrom(pack(published + 1000.0))
    assert compute_lookup(state)("rack/1/0", RACK_POWER) == 301000.0
    cooling = cooling_pb2.CoolingState(tcs_supply_model_c=[30.0, 31.0], tcs_return_model_c=[40.0])
    lookup = cooling_lookup(cooling)
    assert [lookup("cdu/1", SUPPLY), lookup("cdu/0", RETURN), lookup("cdu/1", RETURN)] == [
        31.0,
        40.0,
        None,
    ]
