"""Drivers: EPW parsing, synthetic weather from monthly normals, series, PPAs, heat waves."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SMALL

from twin_core import drivers
from twin_core.site import SiteError, load_site


def write_epw(path, temps, rh=50.0, ghi=0.0):
    header = ["LOCATION,Test,WI,USA,TMY3,726400,42.95,-87.90,-6.0,211.0"] + ["X"] * 7
    rows = []
    for i, temp in enumerate(temps):
        date = np.datetime64("1999-01-01") + np.timedelta64(i // 24, "D")
        month, day = int(str(date)[5:7]), int(str(date)[8:10])
        fields = [1999, month, day, 1 + i % 24, 0, "A7", temp, 0.0, rh, 101325, 0, 0, 300, ghi]
        fields += [0] * 21
        rows.append(",".join(str(f) for f in fields))
    path.write_text("\n".join(header + rows) + "\n")


def test_epw_weather_is_read_and_sliced_from_the_start(tmp_path):
    temps = np.arange(8760) % 50 - 10.0  # a recognisable pattern
    write_epw(tmp_path / "site.epw", temps)
    site = load_site(
        SMALL,
        {"weather": {"epw": str(tmp_path / "site.epw")}, "start": {"day_of_year": 2, "hour": 5}},
    )
    matrix = drivers.hourly_matrix(site, drivers.load_drivers(site), 48)
    # Record i is stamped at the end of its hour (2 January 05:00 is record 24 + 4), and
    # the twin's row for an instant holds what was observed then.
    start = 24 + 5
    np.testing.assert_array_equal(matrix[:, 0], temps[start - 1 : start + 48])
    assert matrix[0, 1] == 0.5  # RH in 0..1


def test_short_epw_is_rejected(tmp_path):
    write_epw(tmp_path / "short.epw", [10.0] * 100)
    site = load_site(SMALL, {"weather": {"epw": str(tmp_path / "short.epw")}})
    with pytest.raises(
        SiteError, match=r"^weather\.epw: .* does not hold 8760 hourly EPW records$"
    ):
        drivers.load_drivers(site)


@pytest.mark.parametrize(
    ("first_record", "error"),
    [
        ("1999,1,1,2,", "does not hold one record for each hour of a 365-day year"),  # twice
        ("1999,2,30,1,", "holds a value that is not valid"),  # no such date
    ],
)
def test_epw_records_must_cover_the_year_once(tmp_path, first_record, error):
    write_epw(tmp_path / "bad.epw", [10.0] * 8760)
    lines = (tmp_path / "bad.epw").read_text().splitlines()
    lines[8] = first_record + lines[8].split(",", 4)[4]
    (tmp_path / "bad.epw").write_text("\n".join(lines) + "\n")
    site = load_site(SMALL, {"weather": {"epw": str(tmp_path / "bad.epw")}})
    with pytest.raises(SiteError) as info:
        drivers.load_drivers(site)
    assert str(info.value) == f"weather.epw: {str(tmp_path / 'bad.epw')!r} {error}"


def test_synthetic_weather_follows_monthly_normals(small):
    w = drivers.synthetic_weather(small.model_copy(update={}))
    temps = w["ambient_c"]
    july = temps[181 * 24 : 212 * 24]
    january = temps[: 31 * 24]
    assert july.mean() == pytest.approx(21.7, abs=1.0)  # small.yaml: Jun 20, Jul 22, Aug 21
    assert january.mean() == pytest.approx(-4.5, abs=1.5)
    by_hour = july.reshape(-1, 24).mean(axis=0)
    assert 13 <= int(np.argmax(by_hour)) <= 16 and 2 <= int(np.argmin(by_hour)) <= 5


def test_solar_ppa_scaled_to_capacity_factor_and_dark_at_night(small):
    ppa = drivers.ppa_output_w(small, drivers.weather(small)["ghi"])
    assert ppa.mean() == pytest.approx(0.2 * 1e6, rel=1e-6)  # 1 MW at CF 0.2
    midnight = ppa.reshape(365, 24)[:, 0]
    assert np.all(midnight == 0.0) and ppa.max() <= 1e6


def test_heat_wave_adds_to_the_ambient_for_its_hours(small):
    hot = load_site(SMALL, {"weather.heat_waves": [{"start_h": 2, "duration_h": 3, "delta_c": 8}]})

    def ambient(site):
        return drivers.hourly_matrix(site, drivers.load_drivers(site), 10)[:, 0]

    delta = ambient(hot) - ambient(small)
    np.testing.assert_allclose(delta, [0, 0, 8, 8, 8, 0, 0, 0, 0, 0, 0])


def test_series_from_csv_file_repeats_to_a_year(tmp_path):
    (tmp_path / "price.csv").write_text(
        "hour,usd\n" + "".join(f"{h},{h * 10}\n" for h in range(24))
    )
    site = load_site(
        SMALL,
        {"energy.grid.price_usd_per_mwh": {"file": str(tmp_path / "price.csv"), "column": "usd"}},
    )
    price = drivers.series(
        site.energy.grid.price_usd_per_mwh, "energy.grid.price_usd_per_mwh", site
    )
    assert len(price) == 8760 and price[25] == 10.0 and price[47] == 230.0


def test_series_file_with_missing_column(tmp_path):
    (tmp_path / "p.csv").write_text("a\n1\n")
    site = load_site(SMALL, {"energy.grid.price_usd_per_mwh": {"file": str(tmp_path / "p.csv")}})
    with pytest.raises(
        SiteError, match=r"^energy\.grid\.price_usd_per_mwh\.column: .* has no column 'value'$"
    ):
        drivers.load_drivers(site)
