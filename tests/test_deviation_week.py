"""A clean emulated week raises no deviation (issue 13, "Deviation"), on the fast path: the
plant emulator's true site (services/plant/truth.py) stepped at the live twin's tick of
10 s for seven days, with its diurnal weather and its training job's load, read by its
sensors (the default truth file's noise, 1 % dropouts, seeded), and every reading tested
by the residual monitor against the model's value for the same tick. The twin runs the
site the plant runs (nothing is faulty), so its model values are the plant's true ones,
as the live test (tests/test_deviation_live.py) shows them to be over the bus; here the
bus is left out so that a week takes a minute.

12 residuals (2 CDUs x supply and return, 8 racks) x 60,480 ticks, less the dropouts:
at the detector's in-control average run length of 1.5e9 samples a false alarm in the
week has a probability of about 5e-4.
"""

from __future__ import annotations

import pytest
from conftest import small_site

from services.monitor.cause import RACK_POWER, RETURN, SUPPLY
from services.monitor.residuals import MonitorConfig, ResidualMonitor
from services.plant.sensors import Sensors
from services.plant.truth import TruePlant
from services.plant.truthfile import Truth

pytestmark = pytest.mark.slow

DT = 10.0
TICKS = 7 * 86400 // 10
CHUNK = 1440  # 4 h of ticks
NOISE = {"cdu_supply_c": 0.05, "cdu_return_c": 0.05, "rack_power_w": 300.0}
MONITOR = MonitorConfig(
    noise={"supply_temperature_c": 0.05, "return_temperature_c": 0.05, "rack_power_w": 300.0}
)
QUANTITY = {"cdu_supply_c": SUPPLY, "cdu_return_c": RETURN, "rack_power_w": RACK_POWER}


def test_a_clean_emulated_week_raises_no_deviation():
    truth = Truth.model_validate({"seed": 7, "sensors": {"noise": NOISE, "dropout": 0.01}})
    plant = TruePlant(small_site(), truth, DT)
    sensors = Sensors(truth, plant.layout)
    entities = {s: plant.layout.entities(s) for s in QUANTITY}
    monitor = ResidualMonitor("small", MONITOR)
    monitor.start_run("clean-week")
    events = []
    ambient = []
    for step in range(TICKS):
        if step % CHUNK == 0:  # the plant's ticks a chunk at a time: one compiled loop each
            chunk = iter(plant.advance_many(min(CHUNK, TICKS - step)))
        true = next(chunk)
        t = (step + 1) * DT
        read = sensors.read(true, t)
        model: dict[tuple[str, int], float] = {
            (entity, int(QUANTITY[s])): float(v)
            for s in QUANTITY
            for entity, v in zip(entities[s], true[s], strict=True)
        }
        for s in QUANTITY:
            for entity, value in zip(entities[s], read[s], strict=True):
                monitor.offer(entity, QUANTITY[s], float(value), t)
        for domain in ("cooling", "compute"):
            events += monitor.on_model(domain, lambda e, q, m=model: m[(e, q)], step, t)
        ambient.append(float(true["ambient_c"][0]))
    assert events == []
    # a week of weather that moves (the site's synthetic mid-July days), and every
    # residual tested about once a tick
    assert max(ambient) - min(ambient) > 8.0
    series = monitor._series
    assert len(series) == 12
    assert all(
        s.cusum is not None and 0.98 * TICKS < s.cusum.samples <= TICKS for s in series.values()
    )
