"""Point map parsing and the gateway's quality checks and tick alignment (no I/O)."""

from __future__ import annotations

import math

import pytest

from services.gateway.pointmap import PointMapError, Resolver, parse_pointmap
from services.gateway.quality import Aligner, Reason
from services.gateway.reading import Reading
from twin.telemetry.v1 import telemetry_pb2 as tm

MAP = r"""
sources:
  bms: {kind: bms}
  gpus: {kind: dcgm, urls: ["http://127.0.0.1:1/metrics"]}
hosts:
  node-a: {slot: 0, cdu: 1}
points:
  - source: bms
    match: 'BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu(?P<cdu>\d+)/supply'
    entity: 'cdu/{cdu}'
    quantity: supply_temperature_c
    unit: degF
    range: [5, 60]
    stale_s: 150
  - source: gpus
    match: 'DCGM_FI_DEV_POWER_USAGE/(?P<host>[^/]+)/(?P<gpu>\d+)'
    entity: 'rack/{slot}/{cdu}'
    quantity: rack_power_w
    aggregate: sum
    aggregate_scale: 1.5
    aggregate_offset: 1000
    range: [0, 2000]
    stale_s: 30
"""
TOPIC = "BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu{}/supply"


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def aligner(clock: Clock) -> Aligner:
    return Aligner(Resolver(parse_pointmap(MAP)), clock)


def bms(cdu: int, value: float | None, time_s: float, **kw) -> Reading:
    return Reading("bms", TOPIC.format(cdu), value, time_s, **kw)


def test_conversion_and_templates():
    clock = Clock()
    a = aligner(clock)
    assert a.offer(bms(0, 86.0, clock.t)) is None  # 86 degF = 30 degC
    for gpu, watts in enumerate((100.0, 200.0)):
        r = Reading("gpus", f"DCGM_FI_DEV_POWER_USAGE/node-a/{gpu}", watts, clock.t)
        assert a.offer(r) is None
    out = {(m.entity, m.quantity): m.value for m in a.flush()}
    assert out[("cdu/0", tm.QUANTITY_SUPPLY_TEMPERATURE_C)] == pytest.approx(30.0)
    # (100 + 200) * 1.5 + 1000: the rack overhead convention of the map
    assert out[("rack/0/1", tm.QUANTITY_RACK_POWER_W)] == pytest.approx(1450.0)


def test_each_reason_counted_exactly():
    clock = Clock()
    a = aligner(clock)
    t = clock.t
    assert (
        a.offer(Reading("bms", TOPIC.format(0), None, t, problem="malformed")) is Reason.MALFORMED
    )
    assert a.offer(Reading("bms", "BMS/v1/PUB/Value/CDU/Other/x", 1.0, t)) is Reason.UNKNOWN_POINT
    unplaced = Reading("gpus", "DCGM_FI_DEV_POWER_USAGE/node-z/0", 1.0, t)
    assert a.offer(unplaced) is Reason.UNKNOWN_POINT  # a host the table does not place
    assert a.offer(bms(0, 86.0, t, good=False)) is Reason.BAD_QUALITY
    assert a.offer(bms(0, math.nan, t)) is Reason.NON_FINITE
    assert a.offer(bms(0, math.inf, t)) is Reason.NON_FINITE
    assert a.offer(bms(0, None, t)) is Reason.NON_FINITE
    assert a.offer(bms(0, 86.0, t, unit="kW")) is Reason.UNIT
    assert a.offer(bms(0, 86.0, t, unit="furlong")) is Reason.UNIT
    assert a.offer(bms(0, 200.0, t)) is Reason.OUT_OF_RANGE  # 93 degC
    assert a.offer(bms(0, 86.0, t - 151)) is Reason.STALE
    assert a.offer(bms(0, 86.0, t)) is None
    assert a.offer(bms(0, 86.0, t)) is Reason.DUPLICATE
    assert a.offer(bms(0, 87.0, t - 1)) is Reason.LATE
    assert a.offer(bms(0, 303.15, t + 1, unit="K")) is None  # the source's unit wins
    assert a.stats.as_dict() == {
        "accepted": 2,
        "rejected": {
            "malformed": 1, "unreachable": 0, "timeout": 0, "unknown_point": 2,
            "bad_quality": 1, "non_finite": 3,
            "unit": 2, "out_of_range": 1, "duplicate": 1, "late": 1, "stale": 1,
        },
        "published": 0, "held": 0, "substituted": 0, "ticks": 0, "ahead": 0,
    }  # fmt: skip


def test_hold_then_substitute():
    clock = Clock()
    a = aligner(clock)
    assert a.offer(bms(1, 86.0, clock.t)) is None
    assert a.offer(bms(1, 88.0, clock.t + 0.5)) is None  # the last value within the tick wins
    (first,) = a.flush()
    assert first.entity == "cdu/1" and first.value == pytest.approx(31.1111111)
    clock.t += 100  # no new sample: held
    assert [m.value for m in a.flush()] == [first.value]
    # A BMS republish of the unchanged sample (same timestamp) keeps it alive.
    assert a.offer(bms(1, 88.0, clock.t - 100 + 0.5)) is Reason.DUPLICATE
    clock.t += 100
    assert len(a.flush()) == 1
    clock.t += 151  # past stale_s since last heard: the model takes over
    assert a.flush() == []
    assert a.flush() == []
    s = a.stats
    assert (s.accepted, s.published, s.held, s.substituted, s.ticks) == (2, 3, 2, 2, 5)


def test_ahead_sends_what_changed_since_the_last_send():
    clock = Clock()
    a = aligner(clock)
    assert a.ahead() == []
    assert a.offer(bms(1, 86.0, clock.t)) is None  # 30 degC
    gpu = "DCGM_FI_DEV_POWER_USAGE/node-a/{}"
    assert a.offer(Reading("gpus", gpu.format(0), 100.0, clock.t)) is None
    ahead = {(m.source, m.entity): m.value for m in a.ahead()}
    assert ahead == {("bms", "cdu/1"): pytest.approx(30.0), ("gpus", "rack/0/1"): 1150.0}
    assert a.ahead() == []  # nothing new since
    clock.t += 0.5
    assert a.offer(Reading("gpus", gpu.format(1), 300.0, clock.t)) is None
    (rack,) = a.ahead()  # the rack's sum with both GPUs; the CDU did not change
    assert (rack.entity, rack.value, rack.time_s) == ("rack/0/1", 1600.0, clock.t)
    assert a.offer(bms(1, 95.0, clock.t)) is None  # 35 degC
    # The tick sends every entity, sent ahead or not, and what it sent is not sent ahead
    # again.
    tick = {m.entity: m.value for m in a.flush()}
    assert tick == {"cdu/1": pytest.approx(35.0), "rack/0/1": 1600.0}
    assert a.ahead() == []
    clock.t += 31  # both GPUs stale: the rack is left to the model
    assert a.offer(bms(1, 96.8, clock.t)) is None  # 36 degC
    assert [(m.entity, m.value) for m in a.ahead()] == [("cdu/1", pytest.approx(36.0))]
    assert [(m.entity, m.value) for m in a.flush()] == [("cdu/1", pytest.approx(36.0))]
    s = a.stats
    assert (s.accepted, s.ahead, s.published, s.substituted, s.ticks) == (5, 4, 3, 1, 2)


def test_sum_drops_stale_gpus():
    clock = Clock()
    a = aligner(clock)
    a.offer(Reading("gpus", "DCGM_FI_DEV_POWER_USAGE/node-a/0", 100.0, clock.t))
    clock.t += 20
    a.offer(Reading("gpus", "DCGM_FI_DEV_POWER_USAGE/node-a/1", 200.0, clock.t))
    clock.t += 15  # gpu 0 heard 35 s ago > 30 s: only gpu 1 counts
    assert [m.value for m in a.flush()] == [pytest.approx(200 * 1.5 + 1000)]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("stale_s: 150", "stale_s: 100"),
         "<point map>:14: points.0.stale_s: 100 s must exceed the BMS republish period of 100 s"),
        (("unit: degF", "unit: kW"),
         "<point map>:12: points.0.unit: unit 'kW' is a power, supply_temperature_c is a "
         "temperature"),
        (("entity: 'cdu/{cdu}'", "entity: 'cdu/{cdux}'"),
         "<point map>:10: points.0.entity: cdux is neither a named group of match nor a host "
         "table field"),
        (("range: [5, 60]", "range: [60, 5]"),
         "<point map>:13: points.0.range: low 60 must be below high 5"),
        (("urls: [", "max_in_flight: 0, urls: ["),
         "<point map>:4: sources.gpus.max_in_flight: Input should be greater than or equal "
         "to 1"),
    ],
)  # fmt: skip
def test_map_errors_name_line_and_field(edit, message):
    text = MAP.replace(*edit)
    with pytest.raises(PointMapError) as err:
        parse_pointmap(text)
    assert str(err.value) == message


def test_map_error_unknown_quantity_line():
    text = MAP.replace("quantity: rack_power_w", "quantity: rack_power")
    with pytest.raises(
        PointMapError, match=r"^<point map>:18: points\.1\.quantity: Input should be"
    ):
        parse_pointmap(text)


def test_map_error_unknown_source_field():
    text = MAP.replace("urls: [", "urlz: [")
    expected = r"^<point map>:4: sources\.gpus\.urls: Field required \(and 1 more\)$"
    with pytest.raises(PointMapError, match=expected):
        parse_pointmap(text)


def test_invalid_yaml_line():
    with pytest.raises(PointMapError, match=r"^m\.yaml:3: invalid YAML"):
        parse_pointmap("sources:\n  bms: {kind: bms\npoints: []\n", "m.yaml")


def test_unknown_ids_fill_the_cache_only_up_to_its_bound():
    resolver = Resolver(parse_pointmap(MAP), unknown_cache_size=10)
    for i in range(50):
        assert resolver.resolve("bms", f"BMS/v1/PUB/Value/HX/x{i}") is None
    target = resolver.resolve("bms", TOPIC.format(3))
    assert target is not None and target.entity == "cdu/3"
    assert len(resolver._cache) == 11


def test_rack_sum_follows_updates_and_stale_gpus_rejoin():
    clock = Clock()
    a = aligner(clock)
    t0 = clock.t

    def gpu(i: int, watts: float) -> None:
        point = f"DCGM_FI_DEV_POWER_USAGE/node-a/{i}"
        assert a.offer(Reading("gpus", point, watts, clock.t)) is None

    def rack() -> list[float]:
        return [m.value for m in a.flush()]

    gpu(0, 100.0)
    gpu(1, 200.0)
    assert rack() == [pytest.approx(300 * 1.5 + 1000)]
    clock.t += 1
    gpu(0, 300.0)  # replaces gpu 0's 100 W in the sum
    assert rack() == [pytest.approx(500 * 1.5 + 1000)]
    clock.t = t0 + 20
    gpu(1, 250.0)
    clock.t = t0 + 35  # gpu 0 last heard 34 s ago > stale_s 30: out of the sum
    assert rack() == [pytest.approx(250 * 1.5 + 1000)]
    gpu(0, 50.0)  # back in
    assert rack() == [pytest.approx(300 * 1.5 + 1000)]
    clock.t = t0 + 60  # gpu 1 (heard at +20) stale, gpu 0 (heard at +35) not yet
    assert rack() == [pytest.approx(50 * 1.5 + 1000)]
    clock.t = t0 + 66  # both stale: the model's value
    assert rack() == []
    assert (a.stats.published, a.stats.substituted) == (5, 1)


def test_a_scan_is_the_same_as_its_readings_one_by_one():
    from services.gateway.reading import Scan

    gpu = "DCGM_FI_DEV_POWER_USAGE/node-a/{}".format
    scans = [  # (seconds before the first scan, points); one scan a second
        (20.0, [(gpu(0), 500.0), (gpu(1), 600.0), ("DCGM_FI_DEV_POWER_USAGE/node-z/0", 1.0)]),
        (10.0, [(gpu(0), 550.0), (gpu(1), math.nan), (gpu(2), 5000.0), (gpu(3), 100.0)]),
        (10.0, [(gpu(0), 550.0), (gpu(3), 120.0)]),  # a duplicate, then a late one
        (40.0, [(gpu(4), 700.0)]),  # older than stale_s (30 s)
        (math.inf, [(gpu(5), 1.0)]),  # not a time
    ]
    clock_a, clock_b = Clock(), Clock()
    start = clock_a.t
    one_by_one, scanned = aligner(clock_a), aligner(clock_b)
    for age, points in scans:
        for point, value in points:
            one_by_one.offer(Reading("gpus", point, value, start - age))
        scanned.emit(Scan("gpus", start - age, points))
        clock_a.t += 1.0
        clock_b.t += 1.0
    assert scanned.stats == one_by_one.stats
    assert scanned.stats.accepted == 4  # gpu 0 (twice: 500, then 550), 1, 3
    assert {r: n for r, n in scanned.stats.rejected.items() if n} == {
        "unknown_point": 1, "non_finite": 2, "out_of_range": 1, "duplicate": 1, "late": 1,
        "stale": 1,
    }  # fmt: skip
    assert scanned.flush() == one_by_one.flush()
    # rack/0/1 = (550 + 600 + 100) x 1.5 + 1000
    assert [(a.entity, a.value) for a in scanned.flush()] == [("rack/0/1", 2875.0)]
