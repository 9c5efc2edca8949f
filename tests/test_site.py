"""Site schema: bad input is rejected with the dotted path of the field and the reason."""

from __future__ import annotations

import pytest
from conftest import SMALL

from twin_core import build_params, load_drivers
from twin_core.site import SiteError, load_site, set_path


def error_of(overrides: dict) -> str:
    with pytest.raises(SiteError) as info:
        load_site(SMALL, overrides)
    return str(info.value)


def test_small_site_counts(small):
    assert (small.cdu_count, small.rack_count, small.gpu_count) == (2, 8, 576)
    assert small.rack_types["GB200_NVL72"].gpu_tdp_w == 1200  # from the built-in catalog


def test_unknown_field_is_named():
    assert error_of({"cooling.bogus": 1}) == "cooling.bogus: unknown field"


def test_negative_flow_is_named():
    message = error_of({"cooling.facility_water.pump.rated_flow_lps": -5})
    assert message == (
        "cooling.facility_water.pump.rated_flow_lps: Input should be greater than or equal to "
        "0.000001"
    )


def test_out_of_range_fraction():
    message = error_of({"rack_types.GB200_NVL72.liquid_fraction": 1.5})
    assert (
        message == "rack_types.GB200_NVL72.liquid_fraction: Input should be less than or equal to 1"
    )


def test_wrong_type():
    message = error_of({"cooling.supply_c": "warm"})
    assert (
        message
        == "cooling.supply_c: Input should be a valid number, unable to parse string as a number"
    )


def test_unknown_rack_type():
    message = error_of({"halls.0.rack_type": "H100_HGX"})
    assert (
        message
        == "halls.0.rack_type: unknown rack type 'H100_HGX' (known: GB200_NVL72, GB300_NVL72)"
    )


def test_workload_larger_than_site():
    assert (
        error_of({"workload.training.0.racks": 9}) == "workload: assigns 9 racks but the site has 8"
    )


def test_failure_index_out_of_range():
    message = error_of({"failures": [{"equipment": "chiller", "index": 2, "at": "1h"}]})
    assert message == "failures.0.index: 2 out of range, the site has 2 chiller unit(s)"


def test_failure_repair_before_failure():
    message = error_of({"failures": [{"equipment": "pump", "at": "2h", "repair_at": "1h"}]})
    assert message == "failures.0: repair_at must be after at"


def test_throttle_band_ordered():
    message = error_of({"rack_types.GB200_NVL72.thermal.throttle_max_c": 80})
    assert (
        message == "rack_types.GB200_NVL72.thermal: throttle_max_c must be above throttle_start_c"
    )


def test_duty_pumps_bounded():
    message = error_of({"cooling.facility_water.duty_pumps": 3})
    assert message == "cooling.facility_water: duty_pumps must not exceed pumps"


def test_catalog_field_override_keeps_the_rest():
    site = load_site(SMALL, {"rack_types.GB200_NVL72.gpu_tdp_w": 1000})
    assert site.rack_types["GB200_NVL72"].gpu_tdp_w == 1000
    assert site.rack_types["GB200_NVL72"].gpus == 72


def test_bad_list_index():
    with pytest.raises(SiteError, match=r"^halls\.3: no list item '3' \(list has 1 items\)$"):
        load_site(SMALL, {"halls.3.cdus": 2})


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SiteError, match=r"bad\.yaml: invalid YAML at line 2"):
        load_site(path)


def test_missing_file(tmp_path):
    with pytest.raises(SiteError, match=r"nope\.yaml: no such scenario file$"):
        load_site(tmp_path / "nope.yaml")


def test_dt_must_divide_an_hour(small):
    with pytest.raises(SiteError, match=r"^dt: 7 s must divide an hour"):
        build_params(small, load_drivers(small), horizon_s=3600, dt=7.0)


def test_set_path_creates_mapping_and_rejects_scalars():
    doc = {"a": {"b": 1}, "l": [1, 2]}
    set_path(doc, "a.c.d", 3)
    assert doc["a"]["c"] == {"d": 3}
    with pytest.raises(SiteError, match=r"^a\.b\.x: cannot set a field inside a int$"):
        set_path(doc, "a.b.x", 1)


def test_parse_overrides_reads_yaml_values_and_names_bad_items():
    from twin_core.site import parse_overrides

    assert parse_overrides(["cooling.supply_c=32", "controls.smoothing_enabled=false"]) == {
        "cooling.supply_c": 32,
        "controls.smoothing_enabled": False,
    }
    with pytest.raises(SiteError) as info:
        parse_overrides(["oops"], "spec.overrides")
    assert str(info.value) == "spec.overrides 'oops': expected path=value, e.g. cooling.supply_c=32"
