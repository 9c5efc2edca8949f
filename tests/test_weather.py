"""Weather: the shipped TMY3 year read with pvlib on the twin's hour grid, and the synthetic
year's hot tail fitted to ASHRAE design conditions."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import ROOT, SMALL
from pandas import DatetimeIndex
from pvlib.iotools import read_epw

from twin_core import drivers
from twin_core.curves import wet_bulb_stull
from twin_core.site import SiteError, load_site

OHARE = ROOT / "twin_core" / "catalog" / "weather" / "USA_IL_Chicago.OHare.Intl.AP.725300_TMY3.epw"
LOUGHTON = ROOT / "scenarios" / "loughton-uk.yaml"


@pytest.fixture(scope="module")
def ohare() -> dict[str, np.ndarray]:
    return drivers.parse_epw(OHARE)


def test_the_shipped_parse_is_pvlib_s_and_a_changed_file_is_parsed_again(tmp_path):
    # The parse shipped beside the catalog file (drivers.PARSED_SUFFIX) is pvlib's, bit for
    # bit: `python -m twin_core.drivers` rewrites it when the file changes.
    shipped = drivers._shipped_parse(OHARE, OHARE.read_text())
    assert shipped is not None
    fresh = drivers._parse_epw_text(OHARE.read_text(), OHARE.name)
    for k in ("ambient_c", "rh", "ghi"):
        np.testing.assert_array_equal(shipped[k], fresh[k])
    # A copy whose first record reads 5.0 C, beside the original's parse: its hash does not
    # match, so the file itself is read.
    lines = OHARE.read_text().splitlines(keepends=True)
    fields = lines[8].split(",")
    fields[6] = "5.0"
    lines[8] = ",".join(fields)
    copy = tmp_path / OHARE.name
    copy.write_text("".join(lines))
    parsed = OHARE.with_name(OHARE.name + drivers.PARSED_SUFFIX)
    (tmp_path / parsed.name).write_bytes(parsed.read_bytes())
    changed = drivers.parse_epw(copy)
    assert changed["ambient_c"][1] == 5.0 and shipped["ambient_c"][1] == -12.2
    np.testing.assert_array_equal(changed["ambient_c"][2:], shipped["ambient_c"][2:])


def raw_records() -> list[list[str]]:
    """The file's data records, split by hand (no pvlib): the reference for the reader."""
    with OHARE.open(newline="") as handle:
        return list(csv.reader(handle))[8:]


def test_records_land_on_the_instant_they_were_observed(ohare):
    rows = raw_records()
    # The first record is 1 January hour 1, observed at 01:00: row 1. The last one,
    # 31 December hour 24, is 1 January 00:00 of the wrapping year: row 0.
    assert rows[0][1:4] == ["1", "1", "1"] and rows[-1][1:4] == ["12", "31", "24"]
    assert ohare["ambient_c"][1] == -12.2 == float(rows[0][6])
    assert ohare["ambient_c"][0] == -6.1 == float(rows[-1][6])
    assert ohare["rh"][1] == 0.73 and ohare["rh"][0] == 0.81  # 73 % and 81 % in the file
    np.testing.assert_array_equal(ohare["ambient_c"][1:], [float(r[6]) for r in rows[:-1]])


def test_reader_agrees_with_pvlib_one_hour_after_its_labels(ohare):
    # pvlib labels a record with the start of its hour; the observation is at its end.
    frame, meta = read_epw(OHARE, coerce_year=2001)
    assert meta["TZ"] == -6.0 and len(frame) == 8760
    hours = (
        DatetimeIndex(frame.index).tz_localize(None) - np.datetime64("2001-01-01T00:00")
    ) // np.timedelta64(1, "h")
    rows = (np.asarray(hours) + 1) % 8760
    np.testing.assert_array_equal(ohare["ambient_c"][rows], frame["temp_air"].to_numpy())
    np.testing.assert_array_equal(ohare["rh"][rows], frame["relative_humidity"].to_numpy() / 100)
    # Irradiance is an hourly total: each row is the mean of the hours either side of it,
    # so the year's energy is unchanged.
    ghi = frame["ghi"].to_numpy()
    assert ohare["ghi"].sum() == pytest.approx(ghi.sum(), rel=1e-12)
    assert ohare["ghi"][12] == pytest.approx((ghi[11] + ghi[12]) / 2)  # 11-12 h and 12-13 h


def test_design_dry_bulb_of_the_shipped_year(ohare):
    # By hand from the file's dry bulb column, hottest first: 35.0, 34.4, 33.9 (3 h),
    # 33.3 (12 h), 32.8 (10 h): 27 hours above 32.2 C, and 32.2 C holds hours 28 to 35 and
    # beyond. So the 0.4 % value (35th-hottest of 8760 hours) is 32.2 C, 0.7 K under the
    # ASHRAE 2021 design value the file's header quotes for O'Hare (32.9 C).
    column = np.array([float(r[6]) for r in raw_records()])
    assert np.sort(column)[::-1][:5].tolist() == [35.0, 34.4, 33.9, 33.9, 33.9]
    assert int((column > 32.2).sum()) == 27 and int((column >= 32.2).sum()) >= 35
    assert drivers.design_dry_bulb(ohare["ambient_c"]) == 32.2
    header = OHARE.read_text().splitlines()[1].split(",")
    cooling = header.index("Cooling")
    # Cooling, hottest month, its daily range, then the 0.4 % dry bulb and its MCWB.
    assert header[cooling + 1 : cooling + 5] == ["7", "9.8", "32.9", "23.4"]


def test_fairwater_runs_on_the_shipped_year(ohare):
    site = load_site(ROOT / "scenarios" / "fairwater-wi.yaml")
    year = drivers.load_drivers(site).year
    np.testing.assert_array_equal(year[:, 0], ohare["ambient_c"])


def test_synthetic_hot_tail_meets_the_ashrae_design_conditions():
    site = load_site(LOUGHTON)  # fitted to London Gatwick: 27.7 C, MCWB 19.1 C
    w = drivers.synthetic_weather(site)
    temp, rh = w["ambient_c"], w["rh"]
    assert drivers.design_dry_bulb(temp) == pytest.approx(27.7, abs=1e-9)
    hour = np.argsort(temp)[-drivers.DESIGN_HOURS]
    assert float(wet_bulb_stull(temp[hour], rh[hour])) == pytest.approx(19.1, abs=1e-6)
    # Only the hours above the 2 % value move, and by no more than the gap they close.
    raw = drivers.synthetic_weather(
        load_site(
            LOUGHTON,
            {
                "weather.synthetic.cooling_design_db_c": None,
                "weather.synthetic.cooling_design_mcwb_c": None,
            },
        )
    )
    moved = temp != raw["ambient_c"]
    assert 0 < moved.sum() < drivers.TAIL_HOURS
    gap = 27.7 - drivers.design_dry_bulb(raw["ambient_c"])
    assert gap > 2.0  # the unfitted year's tail was more than 2 K too thin
    assert np.all(temp - raw["ambient_c"] <= gap + 1e-9) and np.all(temp >= raw["ambient_c"])
    assert (
        np.argsort(temp, kind="stable").tolist()
        == np.argsort(raw["ambient_c"], kind="stable").tolist()
    )  # the hours keep their order


def test_design_below_the_generated_two_percent_value_is_refused():
    site = load_site(SMALL, {"weather.synthetic.cooling_design_db_c": 20.0})
    with pytest.raises(SiteError) as info:
        drivers.synthetic_weather(site)
    assert str(info.value).startswith(
        "weather.synthetic.cooling_design_db_c: 20 C is not above the generated year's "
        "2 % dry bulb ("
    )


def test_wet_bulb_above_the_dry_bulb_is_refused():
    with pytest.raises(SiteError) as info:
        load_site(
            SMALL,
            {
                "weather.synthetic.cooling_design_db_c": 30.0,
                "weather.synthetic.cooling_design_mcwb_c": 31.0,
            },
        )
    assert "cooling_design_mcwb_c needs cooling_design_db_c at or above it" in str(info.value)


def test_clear_sky_samples_are_instants_at_the_hour_start(small):
    # On its time zone's meridian, solar noon is 12:00 local standard time: the sample at
    # row 12 is the day's peak and the rows either side mirror each other.
    site = load_site(SMALL, {"location.longitude": -90.0})  # utc_offset_h -6: meridian 90 W
    day = drivers.clear_sky_ghi(site)[171 * 24 : 172 * 24]
    assert int(np.argmax(day)) == 12
    np.testing.assert_allclose(day[12 - np.arange(1, 8)], day[12 + np.arange(1, 8)], rtol=1e-12)


def test_a_site_names_a_bundled_year_by_its_file_name_from_anywhere(tmp_path):
    """The chart mounts the Fairwater site from a ConfigMap away from scenarios/, and a
    client may send it as text: the bare EPW name finds the bundled weather library."""
    from services.scenario import check_files, site_from_yaml

    text = (ROOT / "scenarios" / "fairwater-wi.yaml").read_text()
    (tmp_path / "site.yaml").write_text(text)
    mounted = load_site(tmp_path / "site.yaml")
    assert mounted.weather.epw == OHARE.name
    assert drivers.load_drivers(mounted)  # reads the bundled file
    sent = check_files(site_from_yaml(text, "scenario.yaml"), "scenario.yaml")
    assert drivers.load_drivers(sent)
    # A file of that name beside the site wins (the library is only the fallback).
    (tmp_path / OHARE.name).write_text("not an EPW\n")
    with pytest.raises(SiteError, match=r"weather\.epw"):
        drivers.load_drivers(load_site(tmp_path / "site.yaml"))
