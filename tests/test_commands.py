"""Live commands of the domain services, validated and applied to a domain's model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_site

from services.domain import DomainModel
from services.domain_service import (
    InvalidCommand,
    compute_command,
    config_of,
    energy_command,
    power_command,
)
from twin.common.v1 import common_pb2
from twin.compute.v1 import compute_pb2
from twin.energy.v1 import energy_pb2
from twin.power.v1 import power_pb2


def step_compute(model: DomainModel, n: int = 3):
    for _ in range(n):
        outputs, parts = model.advance(
            {"cooling": {}, "power": {}}
            if model.step == 0
            else {
                "cooling": {"tcs_supply_c": np.asarray(model.initial.tcs_supply_c)},
                "power": {"rack_cap_w": np.asarray(model.initial.rack_cap_w)},
            }
        )
    return outputs, parts


def test_rack_cap_holds_that_rack_at_its_cap():
    model = DomainModel(small_site(), "compute")
    request = compute_pb2.ApplyRequest(
        set_rack_cap=compute_pb2.SetRackCap(rack=common_pb2.RackRef(slot=1, cdu=0), cap_w=60000.0)
    )
    compute_command(request, model)(model)
    _, parts = step_compute(model)
    assert parts["rack_ac_w"][1, 0] == pytest.approx(60000.0, rel=1e-5)
    assert parts["rack_ac_w"][2, 0] > 100000.0  # the others run free
    config = config_of("compute", model)
    assert [(c.rack.slot, c.rack.cdu, c.cap_w) for c in config.rack_caps] == [(1, 0, 60000.0)]


def test_training_job_update_changes_its_utilization():
    model = DomainModel(small_site(), "compute")
    update = compute_pb2.UpdateTrainingJob(name="train", compute_util=0.5, comm_util=0.5)
    compute_command(compute_pb2.ApplyRequest(update_training_job=update), model)(model)
    outputs, _ = step_compute(model)
    assert float(outputs.delivered_pflops) == pytest.approx(576 * 2.5 * 0.5, rel=1e-6)


@pytest.mark.parametrize(
    ("domain", "build", "message"),
    [
        (
            "compute",
            lambda: compute_command(
                compute_pb2.ApplyRequest(
                    set_rack_cap=compute_pb2.SetRackCap(
                        rack=common_pb2.RackRef(slot=9, cdu=0), cap_w=1.0
                    )
                ),
                DomainModel(small_site(), "compute"),
            ),
            "set_rack_cap.rack: no rack at slot 9, cdu 0 (the site has 4 slots x 2 CDUs)",
        ),
        (
            "compute",
            lambda: compute_command(
                compute_pb2.ApplyRequest(
                    update_training_job=compute_pb2.UpdateTrainingJob(name="pretrain")
                ),
                DomainModel(small_site(), "compute"),
            ),
            "update_training_job.name: unknown job 'pretrain' (known: train)",
        ),
        (
            "power",
            lambda: power_command(
                power_pb2.ApplyRequest(set_it_cap=power_pb2.SetItCap(cap_w=-5)),
                DomainModel(small_site(), "power"),
            ),
            "set_it_cap.cap_w: must be a positive number up to 1e+12, got -5.0",
        ),
        (
            "energy",
            lambda: energy_command(
                energy_pb2.ApplyRequest(
                    set_battery_mode=energy_pb2.SetBatteryMode(
                        mode=energy_pb2.BATTERY_MODE_PEAK_SHAVE
                    )
                ),
                DomainModel(small_site(), "energy"),
            ),
            "set_battery_mode.mode: the site has no battery",
        ),
    ],
)
def test_invalid_commands_name_the_field(domain, build, message):
    with pytest.raises(InvalidCommand) as info:
        build()
    assert str(info.value) == message


def test_power_and_energy_configs_follow_commands():
    power = DomainModel(small_site(), "power")
    power_command(power_pb2.ApplyRequest(set_it_cap=power_pb2.SetItCap(cap_w=8e5)), power)(power)
    power_command(power_pb2.ApplyRequest(fail_feeder=power_pb2.FailFeeder(index=0)), power)(power)
    config = config_of("power", power)
    assert config.it_cap_w == 8e5 and list(config.failed_feeders) == [0]
    battery = {"energy.battery": {"capacity_mwh": 1.0, "power_mw": 0.5}}
    energy = DomainModel(small_site(battery), "energy")
    mode = energy_pb2.SetBatteryMode(
        mode=energy_pb2.BATTERY_MODE_ARBITRAGE, charge_below_usd_per_mwh=40
    )
    energy_command(energy_pb2.ApplyRequest(set_battery_mode=mode), energy)(energy)
    config = config_of("energy", energy)
    assert config.battery_mode == energy_pb2.BATTERY_MODE_ARBITRAGE
    assert config.charge_below_usd_per_mwh == 40


def test_site_wide_rack_caps_then_one_rack_survive_a_restart():
    model = DomainModel(small_site(), "compute")
    for request in (
        compute_pb2.ApplyRequest(
            set_rack_cap=compute_pb2.SetRackCap(
                rack=common_pb2.RackRef(slot=0, cdu=1), cap_w=50000.0
            )
        ),
        compute_pb2.ApplyRequest(set_all_rack_caps=compute_pb2.SetAllRackCaps(cap_w=90000.0)),
        compute_pb2.ApplyRequest(
            set_rack_cap=compute_pb2.SetRackCap(
                rack=common_pb2.RackRef(slot=2, cdu=0), cap_w=70000.0
            )
        ),
    ):
        compute_command(request, model)(model)
    caps = np.asarray(model.params.compute.operator_cap_w)
    assert caps[0, 1] == 90000.0 and caps[2, 0] == 70000.0 and caps[3, 1] == 90000.0
    fresh = DomainModel(small_site(), "compute")
    fresh.restore(model.snapshot())
    np.testing.assert_array_equal(np.asarray(fresh.params.compute.operator_cap_w), caps)
    compute_command(compute_pb2.ApplyRequest(clear_rack_caps=compute_pb2.ClearRackCaps()), fresh)(
        fresh
    )
    assert list(config_of("compute", fresh).rack_caps) == []
