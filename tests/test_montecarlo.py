"""Monte Carlo failure studies and N-1 sweeps (twin_core/montecarlo.py, reliability.py):
the sampled unavailability against MTTR/(MTBF+MTTR), the sweep naming the one
non-redundant unit of a site built with one, the CLI and gRPC faces, and bad input.

The sweep and the Monte Carlo run have the same variant count, horizon and failure-slot
count, so the module compiles one batched rollout."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from conftest import SITES
from served import served
from test_cli import twin
from typer.testing import CliRunner

from services import whatif_service
from twin.whatif.v1 import whatif_pb2 as pb
from twin.whatif.v1 import whatif_pb2_grpc
from twin_core import load_site
from twin_core.montecarlo import parse_monte_carlo, run_monte_carlo
from twin_core.reliability import (
    Rate,
    UpsBlock,
    class_units,
    exceeding,
    failure_slots,
    merge,
    sample_outages,
)
from twin_core.study import StudyError

pytestmark = pytest.mark.xdist_group("montecarlo")

SINGLE_CDU = SITES / "single_cdu.yaml"
HORIZON = {"duration": "2h", "dt": "60s", "record_every": "1h"}
# CDU: down 1 h in 5 (0.2); feeder: 1 h in 4 (0.25), analytic and fast enough to sample.
RATES = {"cdu": {"mtbf_h": 4, "mttr_h": 1}, "feeder": {"mtbf_h": 3, "mttr_h": 1}}


@pytest.fixture(scope="module")
def site():
    return load_site(SINGLE_CDU)


@pytest.fixture(scope="module")
def sweep(site):
    return run_monte_carlo(site, parse_monte_carlo({"sweep": "n-1", **HORIZON}))


def test_sampled_unavailability_matches_analytic_within_its_confidence_interval(site):
    rates = {"chiller": Rate(3.0, 3.0), "feeder": Rate(3.0, 1.0)}  # 0.5 and 0.25
    units = class_units(site, UpsBlock(4, 1))
    rng = np.random.default_rng(7)
    horizon = 48 * 3600.0
    shares: dict[str, list[float]] = {"chiller": [], "feeder": []}
    for _ in range(1000):
        outages = sample_outages(rng, rates, units, UpsBlock(4, 1), horizon)
        for cls in shares:
            down = sum(min(o.end_s, horizon) - o.start_s for o in outages if o.cls == cls)
            shares[cls].append(down / (units[cls] * horizon))
    for cls, values in shares.items():
        v = np.asarray(values)
        half = 2.576 * v.std(ddof=1) / np.sqrt(len(v))  # the 99 % confidence interval
        assert abs(v.mean() - rates[cls].unavailability) < half, (cls, v.mean(), half)
        assert half < 0.012  # tight enough to mean something (20,000 samples: 0.2497 +- 0.0007)


def test_merged_and_redundant_outages():
    assert merge([(5.0, 7.0), (0.0, 2.0), (1.0, 3.0)]) == [(0.0, 3.0), (5.0, 7.0)]
    # three modules down over [0, 10), [2, 6), [4, 8): more than one down on [2, 8)
    assert exceeding([(0.0, 10.0), (2.0, 6.0), (4.0, 8.0)], 1) == [(2.0, 8.0)]
    assert exceeding([(0.0, 10.0), (2.0, 6.0), (4.0, 8.0)], 2) == [(4.0, 6.0)]


def test_n1_sweep_names_the_one_non_redundant_unit(sweep):
    critical = [c.name for c in sweep.cases if c.critical]
    assert critical == ["cdu/0"]
    assert sweep.cases[0].name == "cdu/0"  # most lost FLOP first
    names = sorted(c.name for c in sweep.cases)
    assert names == sorted(
        ["chiller/0", "pump/0", "dry_cooler/0", "cdu/0", "feeder/0", "transformer/0", "ups/0"]
    )
    cdu = sweep.cases[0].metrics
    # The lone CDU down for 2 h: its racks run hot and throttle; the redundant units cost
    # nothing against the base.
    assert cdu["throttled_gpu_hours"] > 0.5 * 576 * 2 * 0.5
    assert cdu["hours_above_throttle_start"] > 1.0
    assert cdu["max_supply_c"] > sweep.base["max_supply_c"] + 10
    for case in sweep.cases[1:]:
        assert case.metrics["lost_eflop"] == pytest.approx(
            0.0, abs=1e-6 * sweep.base["delivered_eflop"]
        )


def test_monte_carlo_distribution_and_ranking(site):
    spec = parse_monte_carlo(
        {"samples": 7, "seed": 3, "classes": ["cdu", "feeder"], "rates": RATES, **HORIZON}
    )
    result = run_monte_carlo(site, spec)
    thr = np.asarray(result.samples["throttled_gpu_hours"])
    d = result.distributions["throttled_gpu_hours"]
    assert d.mean == pytest.approx(thr.mean())
    assert d.p50 == pytest.approx(np.percentile(thr, 50))
    assert d.p99 == pytest.approx(np.percentile(thr, 99))
    assert np.all(
        np.asarray(result.samples["lost_eflop"]) >= -1e-6 * result.base["delivered_eflop"]
    )
    # Every excess throttled GPU-hour is attributed once: the contributions add up to the
    # mean excess over the samples, ranked largest first.
    excess = np.clip(thr - result.base["throttled_gpu_hours"], 0, None)
    total = sum(c.throttled_gpu_hours for c in result.contributions)
    assert total == pytest.approx(excess.mean(), rel=1e-6)
    ranked = [c.throttled_gpu_hours for c in result.contributions]
    assert ranked == sorted(ranked, reverse=True)
    assert {c.equipment for c in result.contributions} >= {"cdu", "feeder"}
    if total > 0:
        assert sum(c.share for c in result.contributions) == pytest.approx(1.0)
    assert set(result.unavailability) == {"cdu", "feeder"}
    assert result.unavailability["cdu"][1] == pytest.approx(0.2)


def test_progress_moves_part_way_through_a_chunk_and_changes_nothing(site):
    """Records advanced in two calls (``segments``): progress after each, fractional
    within the one chunk of 8 variants, and the same samples as one call."""
    spec = parse_monte_carlo(
        {"samples": 7, "seed": 3, "classes": ["cdu", "feeder"], "rates": RATES, **HORIZON}
    )
    seen: list[tuple[float, int]] = []
    split = run_monte_carlo(site, spec, segments=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(4.0, 8), (8.0, 8)]  # half the records of all 8 variants, then all
    assert split.to_dict() == run_monte_carlo(site, spec).to_dict()


def test_losses_are_split_among_the_outages_in_force():
    from twin_core.contract import Equipment
    from twin_core.montecarlo import NONE_IN_FORCE, attribute
    from twin_core.reliability import Outage

    hour = 3600.0
    schedule = [
        Outage("cdu", Equipment.CDU, 0, 0.0, 2 * hour),  # records 0-1, and 2 (the lag)
        Outage("feeder", Equipment.FEEDER, 0, 1.5 * hour, 2 * hour),
    ]
    # (excess throttled GPU-h, lost EFLOP) per 1 h record
    loss = np.array([[10.0, 1.0], [30.0, 3.0], [4.0, 0.4], [5.0, 0.5]])
    out = attribute(schedule, loss, hour)
    # record 0: the CDU alone; record 1 (window 0-2 h): CDU 2 h, feeder 0.5 h -> 4:1;
    # record 2 (window 1-3 h): CDU 1 h, feeder 0.5 h -> 2:1; record 3: nothing in force.
    assert out["cdu"] == pytest.approx([10 + 24 + 4 * 2 / 3, 1 + 2.4 + 0.4 * 2 / 3])
    assert out["feeder"] == pytest.approx([6 + 4 / 3, 0.6 + 0.4 / 3])
    assert out[NONE_IN_FORCE] == pytest.approx([5.0, 0.5])


def test_n2_cases_pair_alike_units_and_other_feeder_paths(site):
    from twin_core.contract import Equipment
    from twin_core.montecarlo import sweep_cases

    spec = parse_monte_carlo({"sweep": "n-2", **HORIZON})
    block = UpsBlock(4, 1)
    names, outages = sweep_cases(site, spec, class_units(site, block), block, 7200.0)
    cases = dict(zip([" + ".join(n) for n in names], outages, strict=True))
    # 7 classes: 21 cross pairs + 6 same-class pairs (the lone CDU has no second)
    assert len(cases) == 27 and "cdu/0 + cdu/1" not in cases
    assert [(o.kind, o.index) for o in cases["feeder/0 + transformer/1"]] == [
        (Equipment.FEEDER, 0),
        (Equipment.FEEDER, 1),
    ]
    # two modules of one N+1 block take its path; one module alone takes nothing
    assert [(o.kind, o.index) for o in cases["ups/0 + ups/1"]] == [(Equipment.FEEDER, 0)]
    assert [(o.cls, o.index) for o in cases["feeder/0 + ups/4"]] == [("feeder", 0)]


def test_failure_slots_merge_one_unit_and_pad():
    from twin_core.contract import Equipment
    from twin_core.reliability import Outage

    outages = [
        Outage("feeder", Equipment.FEEDER, 0, 0.0, 10.0),
        Outage("transformer", Equipment.FEEDER, 0, 5.0, 20.0),  # the same path
        Outage("pump", Equipment.PUMP, 1, 3.0, 4.0),
    ]
    f = failure_slots(outages, 4, np.float64)
    assert list(f.kind) == [Equipment.FEEDER, Equipment.PUMP, -1, -1]
    assert list(f.start_s[:2]) == [0.0, 3.0] and list(f.end_s[:2]) == [20.0, 4.0]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"samples": 0}, "samples: Input should be greater than or equal to 1"),
        ({"classes": ["boiler"]}, "classes: unknown equipment class 'boiler'"),
        (
            {"rates": {"pump": {"mtbf_h": -5, "mttr_h": 8}}},
            "rates.pump.mtbf_h: Input should be greater than 0",
        ),
        (
            {"rates": {"boiler": {"mtbf_h": 5, "mttr_h": 8}}},
            "rates: unknown equipment class 'boiler'",
        ),
    ],
)
def test_bad_study_names_the_field(doc, message):
    with pytest.raises(StudyError) as err:
        parse_monte_carlo(doc)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def cli(*args: str):
    from services.cli.main import app

    return CliRunner().invoke(app, ["whatif", str(SINGLE_CDU), *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--monte-carlo", "-2"], "error: --monte-carlo: must be >= 1 sample, got -2"),
        (
            ["--monte-carlo", "5", "--classes", "boiler"],
            "error: --classes: unknown equipment class 'boiler'",
        ),
        (
            ["--monte-carlo", "5", "--rate", "pump=-5:8"],
            "error: --rate pump: mtbf_h must be a finite number > 0, got -5",
        ),
        (
            ["--monte-carlo", "5", "--rate", "boiler=5:8"],
            "error: --rate 'boiler=5:8': unknown equipment class 'boiler'",
        ),
    ],
)
def test_cli_bad_input_is_one_line(args, message):
    r = cli(*args)
    assert r.exit_code == 2
    assert r.output.startswith(message)
    assert r.output.count("\n") == 1


def test_cli_bad_sample_count_exits_non_zero_with_one_line():
    done = twin("whatif", str(SINGLE_CDU), "--monte-carlo", "0")
    assert done.returncode == 2
    assert done.stderr == "error: --monte-carlo: must be >= 1 sample, got 0\n"


def test_cli_sweep_writes_its_cases(tmp_path, sweep):
    r = cli("--sweep", "n-1", "--duration", "2h", "--dt", "60s", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    written = json.loads((tmp_path / "montecarlo.json").read_text())
    assert [c["name"] for c in written["cases"]] == [c.name for c in sweep.cases]
    assert [c["critical"] for c in written["cases"]] == [c.critical for c in sweep.cases]
    assert "cdu/0" in r.output


@pytest.fixture(scope="module")
def stub():
    with (
        served(lambda server: whatif_service.add_to_server(server)) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield whatif_pb2_grpc.WhatIfServiceStub(channel)


def test_grpc_sweep_equals_the_local_one(stub, sweep):
    request = pb.RunMonteCarloRequest(
        scenario=pb.Scenario(yaml=SINGLE_CDU.read_text()),
        sweep=pb.FAILURE_SWEEP_N_MINUS_1,
        duration=HORIZON["duration"],
        dt=HORIZON["dt"],
        record_every=HORIZON["record_every"],
    )
    reply = stub.RunMonteCarlo(request, timeout=600)
    assert [(c.name, c.critical) for c in reply.cases] == [
        (c.name, c.critical) for c in sweep.cases
    ]
    assert dict(reply.cases[0].metrics) == pytest.approx(sweep.cases[0].metrics)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"samples": 0}, "samples: Input should be greater than or equal to 1"),
        ({"samples": -4}, "samples: Input should be greater than or equal to 1"),
        ({"samples": 5, "classes": ["boiler"]}, "classes: unknown equipment class 'boiler'"),
        (
            {"samples": 5, "rates": [pb.ClassRate(equipment="pump", mtbf_h=-5, mttr_h=8)]},
            "rates.pump.mtbf_h: Input should be greater than 0",
        ),
        (
            {"samples": 5, "rates": [pb.ClassRate(equipment="boiler", mtbf_h=5, mttr_h=8)]},
            "rates.0.equipment: unknown equipment class 'boiler'",
        ),
    ],
)
def test_grpc_bad_input_is_invalid_argument(stub, fields, message):
    request = pb.RunMonteCarloRequest(scenario=pb.Scenario(yaml=SINGLE_CDU.read_text()), **fields)
    with pytest.raises(grpc.RpcError) as err:
        stub.RunMonteCarlo(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(message)
