"""Exogenous drivers: weather (EPW or synthetic from monthly normals), grid price, carbon
intensity, carbon-free share, PPA output and inference load.

Every driver is an hourly series for a whole year: row k is the instant k hours after
1 January 00:00 local standard time (the start of hour k), sliced from the run's start and
interpolated linearly inside the step, never expanded to per-step arrays. EPW records are
stamped at the hour's end and are moved onto this grid when read (``parse_epw``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twin_core.curves import wet_bulb_stull
from twin_core.inputs import clip
from twin_core.site import Series, Site, SiteError, resolve_file

HOURS_PER_YEAR = 8760
# Column order of the hourly driver matrix; inference pools follow. ``it_scale``
# multiplies every workload's utilization: 1, except where a measured IT load drives a
# rollout (calibrate.it_scale_from).
COLUMNS = ("ambient_c", "rh", "price", "carbon", "grid_cfe", "ppa_w", "it_scale")


def _ar1(n: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance AR(1) noise: persistent weather/market deviations."""
    out = np.empty(n)
    out[0] = rng.standard_normal()
    shocks = rng.standard_normal(n) * math.sqrt(1.0 - rho * rho)
    for i in range(1, n):
        out[i] = rho * out[i - 1] + shocks[i]
    return out


def _hour_of_day() -> np.ndarray:
    return np.arange(HOURS_PER_YEAR) % 24


def _day_of_year() -> np.ndarray:
    return np.arange(HOURS_PER_YEAR) // 24 + 1


MAX_DRIVER_FILE_BYTES = 64 * 1024 * 1024  # an hourly year is ~1.5 MB as EPW


def _read_text(path: Path, field: str, name: str) -> str:
    """A driver file's text. Errors name ``field`` and the file name as the site gives it,
    never what the file holds: a site may come from a client."""
    try:
        if not path.is_file():
            raise SiteError(f"{field}: {clip(name)!r} is not a regular file")
        if path.stat().st_size > MAX_DRIVER_FILE_BYTES:
            limit = MAX_DRIVER_FILE_BYTES // 2**20
            raise SiteError(f"{field}: {clip(name)!r} is larger than {limit} MiB")
        return path.read_text(errors="replace")
    except OSError as exc:
        raise SiteError(f"{field}: cannot read {clip(name)!r} ({exc.strerror})") from None


def parse_epw(path: Path, name: str | None = None) -> dict[str, np.ndarray]:
    """Dry bulb (C), relative humidity (0..1) and global horizontal irradiance (W/m2) of an
    EnergyPlus weather file, read with pvlib's ``read_epw``, on the twin's hourly grid.

    EPW record ``hour = h`` holds the dry bulb and humidity observed at h:00 and the
    irradiance received during the hour ending then (EnergyPlus Auxiliary Programs,
    "Weather Converter Program", hour field: the period from hour - 1 to hour). pvlib labels
    that record with the hour's start, (h - 1):00. The twin's samples are instants at the
    start of each hour (row k = k hours after 1 January 00:00 local standard time,
    interpolated linearly in between), so the observation goes to row k = label + 1 h (the
    last record, 31 December 24:00, becomes row 0 of the wrapping year) and the irradiance,
    an hourly mean, becomes the mean of the two hours either side of row k (the annual
    total unchanged)."""
    name = str(path) if name is None else name
    text = _read_text(path, "weather.epw", name)
    shipped = _shipped_parse(path, text)
    if shipped is not None:
        return shipped
    return _parse_epw_text(text, name)


# The parse of a catalog EPW, shipped beside it: reading pandas and pvlib in costs a few
# seconds of every start that uses the file, more than the rest of the site's set-up.
# Used only while its recorded SHA-256 is the file's; `python -m twin_core.drivers`
# rewrites them (tests/test_weather.py checks they equal the parse).
PARSED_SUFFIX = ".parsed.npz"
WEATHER_CATALOG = Path(__file__).parent / "catalog" / "weather"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _shipped_parse(path: Path, text: str) -> dict[str, np.ndarray] | None:
    parsed = path.with_name(path.name + PARSED_SUFFIX)
    if not parsed.is_file():
        return None
    with np.load(parsed) as z:
        if str(z["sha256"]) != _digest(text):
            return None
        return {k: z[k] for k in ("ambient_c", "rh", "ghi")}


def write_shipped_parse(path: Path) -> Path:
    """Parse ``path`` with pvlib and write the result beside it (``PARSED_SUFFIX``)."""
    text = _read_text(path, "weather.epw", str(path))
    out = path.with_name(path.name + PARSED_SUFFIX)
    arrays = {"sha256": np.asarray(_digest(text)), **_parse_epw_text(text, path.name)}
    np.savez_compressed(out, allow_pickle=False, **arrays)
    return out


def _parse_epw_text(text: str, name: str) -> dict[str, np.ndarray]:
    rows = [line.split(",") for line in text.splitlines()[8:] if line.strip()]
    # Checked before pvlib parses anything, so that an error never quotes the file.
    if len(rows) != HOURS_PER_YEAR or any(len(r) < 22 for r in rows):
        raise SiteError(f"weather.epw: {clip(name)!r} does not hold 8760 hourly EPW records")
    # pandas behind them: imported only when a file is read.
    from pandas import DatetimeIndex
    from pvlib.iotools import read_epw

    try:
        frame, _ = read_epw(io.StringIO(text), coerce_year=_EPW_YEAR)
        local = DatetimeIndex(frame.index).tz_localize(None)  # local standard time
        start = local - np.datetime64(f"{_EPW_YEAR}-01-01T00:00")
        labels = np.asarray(start // np.timedelta64(1, "h"), dtype=np.int64)
        temp = frame["temp_air"].to_numpy(dtype=float)
        rh = frame["relative_humidity"].to_numpy(dtype=float)
        ghi = frame["ghi"].to_numpy(dtype=float)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        raise SiteError(f"weather.epw: {clip(name)!r} holds a value that is not valid") from None
    if not np.array_equal(np.sort(labels), np.arange(HOURS_PER_YEAR)):
        raise SiteError(
            f"weather.epw: {clip(name)!r} does not hold one record for each hour of a 365-day year"
        )
    if not all(np.isfinite(v).all() for v in (temp, rh, ghi)):
        raise SiteError(f"weather.epw: {clip(name)!r} holds a value that is not finite")
    if not (temp.min() >= -90 and temp.max() <= 70):
        raise SiteError(f"weather.epw: {clip(name)!r} holds a dry bulb outside -90..70 C")
    rows_at = (labels + 1) % HOURS_PER_YEAR  # observed at the hour's end
    hourly_ghi = np.empty(HOURS_PER_YEAR)
    hourly_ghi[labels] = np.maximum(ghi, 0.0)  # the hour starting at each label
    out = {"ambient_c": np.empty(HOURS_PER_YEAR), "rh": np.empty(HOURS_PER_YEAR)}
    out["ambient_c"][rows_at] = temp
    out["rh"][rows_at] = np.clip(rh / 100.0, 0.0, 1.0)
    out["ghi"] = 0.5 * (np.roll(hourly_ghi, 1) + hourly_ghi)
    return out


# Any non-leap year: TMY files splice months of different years, and a typical year has
# 365 days.
_EPW_YEAR = 2001


def _monthly_to_hourly(values: list[float]) -> np.ndarray:
    """Periodic linear interpolation of monthly normals (mid-month) to each hour."""
    mid = (np.arange(12) + 0.5) * (365.0 / 12.0)
    t = np.arange(HOURS_PER_YEAR) / 24.0
    return np.interp(t, np.concatenate([mid - 365, mid, mid + 365]), np.tile(values, 3))


def synthetic_weather(site: Site) -> dict[str, np.ndarray]:
    w = site.weather.synthetic
    assert w is not None
    rng = np.random.default_rng(w.seed)
    hod = _hour_of_day()
    # Daily minimum near 05:00 and maximum near 15:00 (a cosine with its peak at 15:00).
    diurnal = 0.5 * _monthly_to_hourly(w.monthly_diurnal_range_c)
    mean = _monthly_to_hourly(w.monthly_mean_c)
    swing = np.cos(2 * np.pi * (hod - 15) / 24)
    temp = mean + diurnal * swing + w.noise_std_c * _ar1(HOURS_PER_YEAR, 0.97, rng)
    rh = np.clip(_monthly_to_hourly(w.monthly_rh) - 0.15 * swing, 0.05, 1.0)
    ghi = clear_sky_ghi(site) * np.clip(0.75 + 0.2 * _ar1(HOURS_PER_YEAR, 0.9, rng), 0.2, 1.0)
    if w.cooling_design_db_c is not None:
        temp, rh = _fit_hot_tail(temp, rh, w.cooling_design_db_c, w.cooling_design_mcwb_c)
    return {"ambient_c": temp, "rh": rh, "ghi": ghi}


# ASHRAE's annual 0.4 % design dry bulb is exceeded 35 h of 8760; the stretch starts at
# the 2 % value (175 h), so the year below it (and its monthly means) stays as generated.
DESIGN_HOURS = 35
TAIL_HOURS = 175


def design_dry_bulb(temp: np.ndarray, hours: int = DESIGN_HOURS) -> float:
    """The dry bulb equalled or exceeded in ``hours`` hours of the year: the
    ``hours``-th hottest (ASHRAE's 0.4 % value by default)."""
    return float(np.sort(temp)[-hours])


def _fit_hot_tail(
    temp: np.ndarray, rh: np.ndarray, design_db: float, mcwb: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Raise the hours above the 2 % dry bulb so that the 0.4 % dry bulb equals
    ``design_db``: by a share of the gap that grows linearly from 0 at the 2 % value to all
    of it at the 0.4 % value, and all of it above (a monotone map, so the hours keep their
    order and the fit is exact; the hottest hours shift rather than stretch). The raised
    hours get the design's absolute humidity, so that the wet bulb at ``design_db`` equals
    the mean coincident wet bulb ``mcwb``."""
    q, base = design_dry_bulb(temp), design_dry_bulb(temp, TAIL_HOURS)
    if design_db <= base:
        raise SiteError(
            f"weather.synthetic.cooling_design_db_c: {design_db:g} C is not above the "
            f"generated year's 2 % dry bulb ({base:.1f} C); the monthly normals are too warm"
        )
    share = np.clip((temp - base) / max(q - base, 1e-9), 0.0, 1.0)
    temp = temp + (design_db - q) * share
    if mcwb is None:
        return temp, rh
    e_design = _rh_at_wet_bulb(design_db, mcwb) * _saturation_kpa(design_db)
    weight = np.clip((temp - base) / (design_db - base), 0.0, 1.0)
    held = np.clip(e_design / _saturation_kpa(temp), 0.05, 1.0)
    return temp, (1.0 - weight) * rh + weight * held


def _saturation_kpa(t_c):
    """Saturation vapour pressure over water (Alduchov & Eskridge 1996, Magnus form)."""
    return 0.61094 * np.exp(17.625 * t_c / (t_c + 243.04))


def _rh_at_wet_bulb(t_c: float, wet_bulb_c: float) -> float:
    """The relative humidity at which Stull's wet bulb of ``t_c`` is ``wet_bulb_c``."""

    def gap(rh: float) -> float:
        return float(wet_bulb_stull(t_c, rh)) - wet_bulb_c

    low, high = 0.05, 0.99
    if gap(low) >= 0 or gap(high) <= 0:
        raise SiteError(
            f"weather.synthetic.cooling_design_mcwb_c: {wet_bulb_c:g} C is not a wet bulb "
            f"of {t_c:g} C dry bulb at 5-99 % relative humidity"
        )
    for _ in range(60):  # bisection: the wet bulb rises with humidity
        mid = 0.5 * (low + high)
        low, high = (mid, high) if gap(mid) < 0 else (low, mid)
    return 0.5 * (low + high)


def clear_sky_ghi(site: Site) -> np.ndarray:
    """Haurwitz (1945) clear-sky GHI from solar geometry (Cooper declination, local standard
    time corrected to solar time by longitude)."""
    lat = math.radians(site.location.latitude)
    day = _day_of_year()
    decl = np.radians(23.45) * np.sin(2 * np.pi * (284 + day) / 365)
    # At each sample's instant, the start of its hour (see parse_epw).
    solar_time = _hour_of_day() + (site.location.longitude - 15 * site.location.utc_offset_h) / 15
    hour_angle = np.radians(15 * (solar_time - 12))
    cos_z = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    safe = np.maximum(cos_z, 1e-3)
    return np.where(cos_z > 0, 1098 * cos_z * np.exp(-0.057 / safe), 0.0)


def weather(site: Site) -> dict[str, np.ndarray]:
    """The site's weather year (its EPW file, or synthetic from monthly normals), before
    the scenario's offset and heat waves (``hourly_matrix`` adds those)."""
    if site.weather.epw:
        return parse_epw(resolve_file(site, site.weather.epw), site.weather.epw)
    return synthetic_weather(site)


def series(spec: Series, field: str, site: Site) -> np.ndarray:
    """An hourly year of ``spec``: a CSV column repeated to a year, or the synthetic shape."""
    if spec.file:
        return _series_file(spec, field, site)
    hod, day = _hour_of_day(), _day_of_year()
    rng = np.random.default_rng(spec.seed)
    values = (
        spec.mean
        + spec.daily_amplitude * np.cos(2 * np.pi * (hod - spec.peak_hour) / 24)
        + spec.seasonal_amplitude * np.cos(2 * np.pi * (day - spec.peak_day) / 365)
    )
    if spec.noise_std:
        values = values + spec.noise_std * _ar1(HOURS_PER_YEAR, 0.9, rng)
    return values


def _series_file(spec: Series, field: str, site: Site) -> np.ndarray:
    name = spec.file or ""
    text = _read_text(resolve_file(site, name), f"{field}.file", name)
    column = spec.column or "value"
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error:
        raise SiteError(f"{field}.file: {clip(name)!r} is not a CSV file") from None
    if not rows or column not in rows[0]:
        raise SiteError(f"{field}.column: {clip(name)!r} has no column {clip(column)!r}")
    try:
        values = np.array([float(r[column]) for r in rows])
    except (TypeError, ValueError):
        raise SiteError(
            f"{field}.file: column {clip(column)!r} of {clip(name)!r} holds a value that is "
            "not a number"
        ) from None
    if not np.isfinite(values).all() or np.abs(values).max() > 1e12:
        raise SiteError(f"{field}.file: {clip(name)!r} holds a value that is not finite")
    return np.resize(values, HOURS_PER_YEAR)


def ppa_output_w(site: Site, ghi: np.ndarray) -> np.ndarray:
    """Hourly PPA output (W) for all PPAs, each scaled to its annual capacity factor."""
    total = np.zeros(HOURS_PER_YEAR)
    for ppa in site.energy.ppas:
        rng = np.random.default_rng(ppa.seed)
        if ppa.kind == "solar":
            shape = ghi / 1000.0
        elif ppa.kind == "wind":
            speed = np.clip(8.0 + 3.5 * _ar1(HOURS_PER_YEAR, 0.95, rng), 0.0, None)
            # Generic turbine: cut-in 3 m/s, rated 12 m/s (cubic between), cut-out 25 m/s.
            shape = np.clip((speed**3 - 27.0) / (12.0**3 - 27.0), 0.0, 1.0) * (speed < 25.0)
        else:
            shape = np.ones(HOURS_PER_YEAR)
        total += _scale_to_capacity_factor(shape, ppa.capacity_factor) * ppa.capacity_mw * 1e6
    return total


def _scale_to_capacity_factor(shape: np.ndarray, target: float) -> np.ndarray:
    """Scale a profile so that, clipped at rated output, its mean equals ``target``."""
    scale = 0.0
    for _ in range(50):  # fixed point: clipping removes a little energy each round
        mean = np.clip(shape * scale, 0.0, 1.0).mean() if scale else shape.mean()
        if mean <= 0:
            return np.zeros_like(shape)
        scale = (scale or 1.0) * target / mean
    return np.clip(shape * scale, 0.0, 1.0)


def inference_utilization(site: Site) -> list[np.ndarray]:
    hod = _hour_of_day()
    pools = []
    for pool in site.workload.inference:
        rng = np.random.default_rng(pool.seed)
        util = pool.mean_util + pool.daily_amplitude * np.cos(
            2 * np.pi * (hod - pool.peak_hour) / 24
        )
        if pool.noise_std:
            util = util + pool.noise_std * _ar1(HOURS_PER_YEAR, 0.8, rng)
        pools.append(np.clip(util, 0.0, 1.0))
    return pools


def heat_wave_offsets(site: Site, hours: int) -> np.ndarray:
    """Extra ambient temperature for each hour after the start (heat waves)."""
    extra = np.zeros(hours)
    for wave in site.weather.heat_waves:
        start = int(wave.start_h)
        stop = math.ceil(wave.start_h + wave.duration_h)
        extra[start:stop] += wave.delta_c
    return extra


@dataclass(frozen=True, eq=False)
class DriverData:
    """A site's exogenous drivers for a whole year: every file it names read, every
    synthetic series drawn. ``build_params`` slices a run from it and reads no file.

    ``year``: (8760, len(COLUMNS) + inference pools), hour 0 = 1 January 00:00 local
    standard time; read-only, since studies share one among variants."""

    year: np.ndarray

    def __post_init__(self) -> None:
        self.year.flags.writeable = False

    @property
    def pools(self) -> int:
        return self.year.shape[1] - len(COLUMNS)


def load_drivers(site: Site) -> DriverData:
    """Read the site's weather and series files and draw its synthetic drivers (the only
    file I/O of the model; SiteError names the field of a bad file)."""
    w = weather(site)
    grid = site.energy.grid
    columns = [
        w["ambient_c"],
        w["rh"],
        series(grid.price_usd_per_mwh, "energy.grid.price_usd_per_mwh", site),
        np.maximum(series(grid.carbon_g_per_kwh, "energy.grid.carbon_g_per_kwh", site), 0.0),
        np.clip(series(grid.cfe_fraction, "energy.grid.cfe_fraction", site), 0.0, 1.0),
        ppa_output_w(site, w["ghi"]),
        np.ones(HOURS_PER_YEAR),
        *inference_utilization(site),
    ]
    return DriverData(np.stack(columns, axis=1))


# The site fields ``load_drivers`` reads; the offset, heat waves and start are applied
# when a run is sliced, so variants that change only those share one load.
_DRIVER_FIELDS: dict[str, Any] = {
    "location": True,
    "weather": {"epw", "synthetic"},
    "energy": {
        "grid": {"price_usd_per_mwh", "carbon_g_per_kwh", "cfe_fraction"},
        "ppas": True,
    },
    "workload": {"inference"},
}


def drivers_key(site: Site) -> tuple[str, str]:
    """What ``load_drivers(site)`` depends on: sites with equal keys have equal drivers
    (as long as their files are unchanged)."""
    doc = json.dumps(site.model_dump(include=_DRIVER_FIELDS), sort_keys=True)
    return str(site.base_dir), doc


class DriverCache:
    """``load_drivers`` once per distinct ``drivers_key``, for a batch of variants that
    mostly share their drivers. Short-lived on purpose: made per study, so a file edited
    between studies is read again; ``size`` bounds what it holds (~0.5 MB a site)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._loaded: dict[tuple[str, str], DriverData] = {}

    def __call__(self, site: Site) -> DriverData:
        key = drivers_key(site)
        data = self._loaded.get(key)
        if data is None:
            if len(self._loaded) >= self.size:
                self._loaded.pop(next(iter(self._loaded)))
            data = self._loaded[key] = load_drivers(site)
        return data


def hourly_matrix(site: Site, data: DriverData, hours: int) -> np.ndarray:
    """(hours + 1, len(COLUMNS) + pools) drivers from the run's start, wrapping the year,
    with the site's weather offset and heat waves added. Pure: no file is read."""
    if data.pools != len(site.workload.inference):
        raise ValueError(
            f"drivers: {data.pools} inference pools loaded, the site has "
            f"{len(site.workload.inference)} (load the drivers of this site)"
        )
    start = (site.start.day_of_year - 1) * 24 + site.start.hour
    index = (start + np.arange(hours + 1)) % HOURS_PER_YEAR
    matrix = data.year[index]  # a copy: fancy indexing
    matrix[:, 0] += site.weather.offset_c
    matrix[:, 0] += heat_wave_offsets(site, hours + 1)
    return matrix


def interpolate(matrix, hour, frac):
    """Linear interpolation of every driver between ``hour`` and ``hour + 1`` (JAX)."""
    import jax

    rows = jax.lax.dynamic_slice_in_dim(matrix, hour, 2, axis=0)
    return rows[0] * (1.0 - frac) + rows[1] * frac


if __name__ == "__main__":
    for epw in sorted(WEATHER_CATALOG.glob("*.epw")):
        print(write_shipped_parse(epw))
