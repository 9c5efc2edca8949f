"""Domains stepped apart, exchanging only their published boundary values, reproduce the
monolithic rollout: the scheme the distributed services run."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import F64, run64, small_site
from state_messages import State

from services.domain import DOMAINS, NEEDS, OWNS, DomainModel
from twin_core import contract


def run_apart(site, steps: int, commands=None):
    models = {d: DomainModel(site, d, dt=1.0, dtype=F64) for d in DOMAINS}
    published: dict[str, dict] = {d: {} for d in DOMAINS}
    meter, ac, supply, grid = [], [], [], []
    for k in range(steps):
        for action in (commands or {}).get(k, []):
            action(models)
        outputs = {}
        fresh = {}
        for d, model in models.items():
            outputs[d], fresh[d] = model.advance(published)
        published = fresh  # peers read these in the next interval
        meter.append(float(outputs["power"].meter_w))
        ac.append(float(outputs["compute"].ac_total_w))
        supply.append(float(outputs["cooling"].tcs_supply_mean_c))
        grid.append(float(outputs["energy"].grid_w))
    return np.array(meter), np.array(ac), np.array(supply), np.array(grid)


def monolithic(site, steps):
    r = run64(site, steps, 1.0, 1)
    return (
        r.means["facility_w"],
        r.means["rack_ac_w"],
        r.means["tcs_supply_mean_c"],
        r.means["grid_w"],
    )


@pytest.mark.parametrize("name", ["meter", "rack_ac", "tcs_supply", "grid"])
def test_domains_apart_equal_the_monolithic_rollout(name):
    site = small_site({"workload.training.0.iteration_s": 9})
    index = ["meter", "rack_ac", "tcs_supply", "grid"].index(name)
    apart = run_apart(site, 300)[index]
    whole = monolithic(site, 300)[index]
    np.testing.assert_allclose(apart, whole, rtol=1e-12)


def test_live_failure_command_equals_a_scheduled_failure():
    hot = {"weather.offset_c": 20.0, "workload.training.0.comm_util": 0.95}
    site = small_site(hot)
    scheduled = small_site(hot, {"failures": [{"equipment": "chiller", "index": 0, "at": 120}]})
    fail = {120: [lambda m: m["cooling"].fail("chiller", 0)]}
    apart = run_apart(site, 300, fail)
    whole = monolithic(scheduled, 300)
    np.testing.assert_allclose(apart[0], whole[0], rtol=1e-12)
    assert not np.allclose(apart[0], monolithic(site, 300)[0], rtol=1e-6)  # it did matter


def test_live_setpoint_change_and_repair():
    site = small_site()
    model = DomainModel(site, "cooling", dt=1.0, dtype=F64)
    model.set("cooling.supply_c", 33.0)
    assert float(model.params.cooling.supply_c) == 33.0
    model.fail("chiller", 1)
    model.step = 50
    model.repair("chiller", 1)
    f = model.params.failures
    assert (
        int(np.sum(np.asarray(f.kind) >= 0)) == 1 and float(np.max(np.asarray(f.end_s)[:1])) == 50.0
    )


def test_a_setting_that_changes_a_parameters_shape_steps_as_one_that_keeps_it():
    """The step takes its parameters packed; a value of another shape (one cap for every
    rack, broadcast, for the per-rack array) is packed anew, not cut along the old
    shape's lines."""
    site = small_site()
    results = []
    for cap in (lambda shape: np.full(shape, 20e3), lambda shape: np.full((1, 1), 20e3)):
        model = DomainModel(site, "compute", dt=1.0, dtype=F64)
        shape = np.shape(model.params.compute.operator_cap_w)
        # the peers' values: the initial boundary's
        peers = {q: {n: getattr(model.initial, n) for n in OWNS[q]} for q in NEEDS["compute"]}
        model.advance(peers)
        model.set("compute.operator_cap_w", cap(shape))
        outputs, _ = model.advance(peers)
        results.append(float(outputs.ac_total_w))
    uncapped = DomainModel(site, "compute", dt=1.0, dtype=F64)
    uncapped.advance(peers)
    free = float(uncapped.advance(peers)[0].ac_total_w)
    assert results[0] == results[1] < free  # the cap binds, the same either way


def test_unknown_domain_is_named():
    with pytest.raises(ValueError, match=r"^domain: 'lighting' is not one of compute, cooling"):
        DomainModel(small_site(), "lighting")


def test_state_messages_carry_exactly_what_peers_need():
    from services.messages import parts_of, sources_of, state_message

    site = small_site()
    for domain in DOMAINS:
        model = DomainModel(site, domain)  # float32, as services run
        outputs, parts = model.advance({})
        drivers = model.drivers(0)
        quantities = model.quantities(outputs, drivers)
        message = state_message(
            domain, "run-1", 0, 1.0, sources_of(outputs, parts, drivers), quantities
        )
        wire = type(message).FromString(message.SerializeToString())
        assert isinstance(wire, State)
        assert (wire.run_id, wire.step, wire.time_s) == ("run-1", 0, 1.0)
        # The domain's site quantities, by their contract names, exactly as computed.
        assert dict(wire.quantities) == quantities
        assert sorted(quantities) == sorted(q.name for q in contract.of_domain(domain))
        back = parts_of(domain, wire)
        assert back.keys() == parts.keys()
        for name, value in parts.items():
            np.testing.assert_array_equal(back[name], np.asarray(value, back[name].dtype))


def test_snapshot_restores_state_settings_and_failures():
    site = small_site()
    model = DomainModel(site, "cooling")
    for _ in range(5):
        model.advance(
            {
                "compute": {
                    k: np.asarray(v)
                    for k, v in DomainModel(site, "compute").initial_parts().items()
                }
            }
        )
    model.set("cooling.supply_c", 31.5)
    model.fail("chiller", 1)
    data = model.snapshot()
    fresh = DomainModel(site, "cooling")
    fresh.restore(data)
    assert fresh.step == 5 and fresh.settings == {"cooling.supply_c": 31.5}
    assert float(fresh.params.cooling.supply_c) == 31.5
    np.testing.assert_array_equal(
        np.asarray(fresh.params.failures.kind), np.asarray(model.params.failures.kind)
    )
    np.testing.assert_array_equal(
        np.asarray(fresh.state.tcs_supply_c), np.asarray(model.state.tcs_supply_c)
    )
