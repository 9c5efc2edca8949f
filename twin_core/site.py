"""The site file schema: site -> halls -> CDUs -> racks, cooling plant, electrical chain,
energy sources, workload, weather, controls and failures.

Every model forbids unknown keys and bounds its numbers, so a typo or an impossible
value fails at load time with the dotted path of the field (``SiteError``).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from twin_core.durations import parse_duration
from twin_core.inputs import clip, load_yaml

CATALOG_DIR = Path(__file__).parent / "catalog"

# Every number is finite (``allow_inf_nan=False`` below) and bounded: the largest value
# a facility could have, by orders of magnitude, yet small enough that the model's
# products of them (loss = l2 * P^2, a year of energy in float32) stay finite.
BIG = 1e12
TINY = 1e-6  # the smallest positive quantity: its reciprocal stays far from overflow
Pos = Annotated[float, Field(ge=TINY, le=BIG)]
NonNeg = Annotated[float, Field(ge=0, le=BIG)]
Real = Annotated[float, Field(ge=-BIG, le=BIG)]
Frac = Annotated[float, Field(ge=0, le=1)]
PosFrac = Annotated[float, Field(ge=1e-3, le=1)]  # efficiencies, speeds: 0.1 % at least
Celsius = Annotated[float, Field(ge=-60, le=120)]
DeltaC = Annotated[float, Field(ge=-100, le=100)]
RangeC = Annotated[float, Field(ge=0, le=100)]
Count = Annotated[int, Field(ge=0, le=100_000)]
PosCount = Annotated[int, Field(ge=1, le=100_000)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]
# DOE-2 / EnergyPlus chiller curve coefficients are of order 1 (temperatures in C).
Coef = Annotated[float, Field(ge=-100, le=100)]
PlrValue = Annotated[float, Field(ge=0, le=2)]  # part-load ratio
MAX_RACKS = 200_000  # ~14 million GPUs in NVL72 racks
MAX_FILE_NAME = 1024
FileName = Annotated[str, Field(min_length=1, max_length=MAX_FILE_NAME)]


class SiteError(ValueError):
    """A site file or override that does not validate; ``str()`` is one readable line."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- hardware


class EfficiencyCurve(Strict):
    """Conversion efficiency at 20/50/100 % of rated load (80 PLUS and UPS datasheet style).

    The model fits the standard three-term loss model loss = l0 + l1*P + l2*P^2
    exactly through these three points.
    """

    at_20: PosFrac
    at_50: PosFrac
    at_100: PosFrac


class GpuThermal(Strict):
    r_die_c_per_w: Pos = Field(description="die-to-coolant thermal resistance of one GPU, K/W")
    c_die_j_per_c: Pos = Field(description="die + cold plate heat capacity of one GPU, J/K")
    throttle_start_c: Celsius
    throttle_max_c: Celsius
    min_clock_fraction: PosFrac
    spread_fraction: Frac = Field(
        0.0, description="GPU-to-GPU spread (1 sigma) of thermal resistance, per-GPU runs"
    )

    @model_validator(mode="after")
    def _ordered(self) -> GpuThermal:
        if self.throttle_max_c <= self.throttle_start_c:
            raise ValueError("throttle_max_c must be above throttle_start_c")
        return self


class PowerSmoothing(Strict):
    """GB300-style rack power smoothing: power floor, ramp limit and energy storage, its
    state of charge steered back to ``target_soc`` over ``recentre_s`` (smoothing.py)."""

    supported: bool = False
    power_floor_fraction: Frac = 0.0
    ramp_w_per_s: Pos = 1e12
    storage_j: NonNeg = 0.0
    storage_power_w: Pos = BIG  # the store's charge/discharge limit; none by default
    target_soc: Frac = 0.5
    recentre_s: Pos = 120.0


MAX_PHASES = 8  # phases of one training iteration (a static array width in the model)


class TrainingPhase(Strict):
    """One part of a training iteration: its share of the iteration and the GPU power in
    it as a fraction of TDP (at or below the idle draw: idle)."""

    name: str
    fraction: Annotated[float, Field(gt=0, le=1)]
    power_fraction: Frac


def _check_phases(phases: list[TrainingPhase]) -> None:
    total = sum(ph.fraction for ph in phases)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"phases: fractions sum to {total:g}, they must sum to 1")


Phases = Annotated[list[TrainingPhase], Field(min_length=1, max_length=MAX_PHASES)]


class TrainingProfile(Strict):
    """A rack type's default training iteration: its period and phases."""

    iteration_s: Pos
    phases: Phases

    @model_validator(mode="after")
    def _sum(self) -> TrainingProfile:
        _check_phases(self.phases)
        return self


class RackType(Strict):
    gpus: PosCount
    gpu_idle_w: NonNeg
    gpu_tdp_w: Pos
    cpus: Count
    cpu_idle_w: NonNeg
    cpu_max_w: NonNeg
    switch_trays: Count
    switch_w: NonNeg
    other_w: NonNeg = Field(description="fans, NICs, DPUs, management: constant draw")
    liquid_fraction: Frac = Field(description="share of component heat taken by cold plates")
    peak_pflops_per_gpu: Pos
    psu_rated_w: Pos
    psu_efficiency: EfficiencyCurve
    coolant_flow_lpm: Pos
    thermal: GpuThermal
    smoothing: PowerSmoothing = PowerSmoothing()
    training: TrainingProfile | None = Field(
        None, description="default phase structure of a training job on this rack type"
    )

    @model_validator(mode="after")
    def _idle_below_max(self) -> RackType:
        if self.gpu_idle_w >= self.gpu_tdp_w:
            raise ValueError("gpu_idle_w must be below gpu_tdp_w")
        if self.cpu_idle_w > self.cpu_max_w:
            raise ValueError("cpu_idle_w must not exceed cpu_max_w")
        return self


class Hall(Strict):
    name: str
    cdus: PosCount
    racks_per_cdu: PosCount
    rack_type: str


# --------------------------------------------------------------------------- cooling


# A CoolProp fluid name: the HEOS (pure fluids) or INCOMP (brines, glycols) backend, with an
# optional mass fraction; no other backend, since REFPROP would load a library from a path.
CoolPropName = Annotated[
    str,
    Field(
        max_length=64,
        pattern=r"^(?:(?:HEOS|INCOMP)::)?[A-Za-z][A-Za-z0-9-]*(?:\[(?:0?\.\d+|0|1)\])?$",
    ),
]


class Fluid(Strict):
    """A loop's coolant: a CoolProp fluid whose density and specific heat are evaluated at
    the loop's design temperature when params are built, or fixed properties."""

    coolprop: CoolPropName | None = Field(
        default=None,
        description='e.g. "Water" or "INCOMP::MPG[0.25]" (propylene glycol, 25 % by mass)',
    )
    at_c: Celsius | None = Field(
        default=None,
        description="where CoolProp is evaluated; default: the facility supply setpoint",
    )
    cp_j_per_kg_k: Pos | None = None
    density_kg_per_m3: Pos | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Fluid:
        fixed = (self.cp_j_per_kg_k, self.density_kg_per_m3)
        if self.coolprop is None and None in fixed:
            raise ValueError("give coolprop, or both cp_j_per_kg_k and density_kg_per_m3")
        if self.coolprop is not None and fixed != (None, None):
            raise ValueError("give coolprop or fixed properties, not both")
        if self.coolprop is None and self.at_c is not None:
            raise ValueError("at_c applies only to a coolprop fluid")
        return self


class Pump(Strict):
    rated_flow_lps: Pos
    rated_head_kpa: Pos
    efficiency: PosFrac
    speed: PosFrac = Field(1.0, description="fixed speed fraction; affinity laws scale flow")


class CduPump(Strict):
    """The CDU's TCS pump; its flow is the sum of the racks' coolant flows at ``speed``."""

    rated_head_kpa: Pos
    efficiency: PosFrac
    speed: PosFrac = 1.0


class Cdu(Strict):
    ua_w_per_k: Pos = Field(description="heat exchanger UA at rated flows")
    loop_volume_m3: Pos = Field(description="TCS (secondary) loop volume per CDU")
    pump: CduPump


class FacilityWater(Strict):
    fluid: Fluid
    loop_volume_m3: Pos
    pumps: PosCount = Field(description="installed facility water pumps")
    duty_pumps: PosCount = Field(description="pumps running at design flow (N of N+1)")
    pump: Pump

    @model_validator(mode="after")
    def _duty(self) -> FacilityWater:
        if self.duty_pumps > self.pumps:
            raise ValueError("duty_pumps must not exceed pumps")
        return self


class Adiabatic(Strict):
    enabled: bool = False
    threshold_c: Celsius = 30.0
    pad_effectiveness: Frac = 0.8


class DryCoolers(Strict):
    units: PosCount
    ua_w_per_k_per_unit: Pos = Field(description="UA at full fan speed")
    air_flow_m3s_per_unit: Pos
    fan_power_kw_per_unit: Pos
    min_speed: PosFrac = 0.2
    ua_exponent: Pos = 0.8
    adiabatic: Adiabatic = Adiabatic()


class CoolingTower(Strict):
    """Open cooling tower cells on the condenser water loop of water-cooled chillers.

    Variable-speed fans hold the design approach to the wet bulb while they can; the
    water needed is evaporation + drift + blowdown (cooling.py, tower.py)."""

    cells: PosCount
    design_heat_kw_per_cell: Pos = Field(
        description="heat a cell rejects at full fan speed with the design approach"
    )
    design_approach_k: Annotated[float, Field(gt=0, le=30)]
    design_wet_bulb_c: Celsius = Field(description="wet bulb of the design rating")
    fan_power_kw_per_cell: Pos = Field(description="at full speed; affinity law: speed^3")
    min_speed: PosFrac = 0.2
    condenser_pump: Pump = Field(description="one per chiller, running with it")
    drift_fraction: Annotated[float, Field(ge=0, le=0.01)] = Field(
        description="drift loss, share of the circulating water flow"
    )
    cycles_of_concentration: Annotated[float, Field(ge=1.1, le=50)]


class Chillers(Strict):
    """Trim chillers after the dry coolers, DOE-2 / EnergyPlus EIR model: air-cooled
    (condenser fans, the curves' condenser variable is the outdoor dry bulb) or
    water-cooled (condenser water from cooling towers, the variable is the water entering
    the condensers)."""

    units: Count
    capacity_kw: Pos
    cop_ref: Pos
    capft: tuple[Coef, Coef, Coef, Coef, Coef, Coef]
    eirft: tuple[Coef, Coef, Coef, Coef, Coef, Coef]
    eirfplr: tuple[Coef, Coef, Coef]
    min_plr: Frac = 0.1
    # Curve inputs are clamped to the range the curves were fitted over, as EnergyPlus does
    # with a curve's minimum/maximum values: a biquadratic must not be extrapolated.
    curve_leaving_c: tuple[Celsius, Celsius] = (-50.0, 120.0)
    curve_condenser_c: tuple[Celsius, Celsius] = (-60.0, 120.0)
    curve_plr: tuple[PlrValue, PlrValue] = (0.0, 1.0)  # the EIRFPLR curve's range
    condenser: Literal["air", "water"] = "air"
    cooling_tower: CoolingTower | None = None

    @model_validator(mode="after")
    def _ranges_and_condenser(self) -> Chillers:
        for name in ("curve_leaving_c", "curve_condenser_c", "curve_plr"):
            low, high = getattr(self, name)
            if low >= high:
                raise ValueError(f"{name}: minimum {low:g} must be below maximum {high:g}")
        if self.condenser == "water" and self.cooling_tower is None:
            raise ValueError("condenser 'water' needs a cooling_tower section")
        if self.condenser == "air" and self.cooling_tower is not None:
            raise ValueError("cooling_tower: only for condenser 'water' (this one is 'air')")
        return self


class Cooling(Strict):
    supply_c: Celsius = Field(description="facility water supply setpoint")
    tcs_fluid: Fluid
    cdu: Cdu
    facility_water: FacilityWater
    dry_coolers: DryCoolers
    chillers: Chillers
    air_handling_w_per_w: NonNeg = Field(
        0.03, description="air handler fan power per W of air-side heat moved to facility water"
    )


# --------------------------------------------------------------------------- electrical


class Transformers(Strict):
    rating_mva: Pos
    no_load_loss_fraction: Frac
    load_loss_fraction: Frac = Field(description="copper loss at rated load, share of rating")


class Ups(Strict):
    rating_mw: Pos
    efficiency: EfficiencyCurve


class Power(Strict):
    interconnect_limit_mw: Pos
    feeders: PosCount = 1
    power_factor: PosFrac = 1.0
    transformers: Transformers
    ups: Ups
    distribution_loss_fraction: Frac = Field(description="busway/PDU I^2R loss at rated load")
    misc_fixed_mw: NonNeg = 0.0
    misc_fraction_of_it: Frac = 0.0
    cap_gain: PosFrac = Field(0.5, description="integral gain of the site power-cap loop")
    cap_min_fraction: Frac = 0.3


# --------------------------------------------------------------------------- energy


class Series(Strict):
    """An hourly series: a CSV file column, or a synthetic diurnal + seasonal + noise shape."""

    file: FileName | None = None
    column: str | None = None
    mean: Real = 0.0
    daily_amplitude: Real = 0.0
    peak_hour: Annotated[float, Field(ge=0, lt=24)] = 18.0
    seasonal_amplitude: Real = 0.0
    peak_day: Annotated[int, Field(ge=1, le=366)] = 200
    noise_std: NonNeg = 0.0
    seed: Seed = 0


class Grid(Strict):
    price_usd_per_mwh: Series
    carbon_g_per_kwh: Series
    cfe_fraction: Series = Field(description="carbon-free share of grid supply, 0..1")
    import_limit_mw: Pos | None = None


class Ppa(Strict):
    name: str
    kind: Literal["solar", "wind", "hydro"]
    capacity_mw: NonNeg
    capacity_factor: Frac = Field(description="annual mean capacity factor")
    seed: Seed = 0


class Battery(Strict):
    capacity_mwh: NonNeg = 0.0
    power_mw: NonNeg = 0.0
    round_trip_efficiency: PosFrac = 0.9
    initial_soc: Frac = 0.5
    mode: Literal["off", "peak_shave", "swing_firming", "arbitrage"] = "off"
    peak_threshold_mw: NonNeg = 0.0
    ramp_limit_mw_per_s: Pos = 1e9
    charge_below_usd_per_mwh: Real = 0.0
    discharge_above_usd_per_mwh: Real = 1e9


class Generation(Strict):
    capacity_mw: NonNeg = 0.0
    emission_t_per_mwh: NonNeg = 0.0
    cost_usd_per_mwh: NonNeg = 0.0
    dispatch: Literal["never", "when_limited"] = "never"


class Energy(Strict):
    grid: Grid
    ppas: list[Ppa] = []
    battery: Battery = Battery()
    generation: Generation = Generation()


# --------------------------------------------------------------------------- workload


TWO_PHASE = ("compute_fraction", "compute_util", "comm_util")


class TrainingJob(Strict):
    """A synchronous training job. Its iteration is either two phases (``compute_fraction``
    of it at ``compute_util``, the rest at ``comm_util``), or ``phases`` of its own, or,
    with neither, the ``training`` defaults of its racks' type (``iteration_s`` too)."""

    name: str
    racks: PosCount
    iteration_s: Pos | None = None
    compute_fraction: PosFrac | None = None
    compute_util: Frac | None = None
    comm_util: Frac | None = None
    phases: Phases | None = None
    checkpoint_every_s: Pos = 1e12
    checkpoint_s: NonNeg = 0.0
    checkpoint_util: Frac = 0.1
    start_s: NonNeg = 0.0

    @model_validator(mode="after")
    def _one_shape(self) -> TrainingJob:
        given = [f for f in TWO_PHASE if getattr(self, f) is not None]
        if given and self.phases is not None:
            raise ValueError(f"give phases or {', '.join(TWO_PHASE)}, not both")
        if given and len(given) < len(TWO_PHASE):
            missing = next(f for f in TWO_PHASE if f not in given)
            raise ValueError(f"{missing}: required with {given[0]} (a two-phase iteration)")
        if self.phases is not None:
            _check_phases(self.phases)
        return self


class InferencePool(Strict):
    name: str
    racks: PosCount
    mean_util: Frac
    daily_amplitude: Frac = 0.0
    peak_hour: Annotated[float, Field(ge=0, lt=24)] = 15.0
    noise_std: NonNeg = 0.0
    seed: Seed = 0


class Workload(Strict):
    training: list[TrainingJob] = []
    inference: list[InferencePool] = []


# --------------------------------------------------------------------------- weather


class HeatWave(Strict):
    start_h: NonNeg
    duration_h: Pos
    delta_c: DeltaC


class SyntheticWeather(Strict):
    monthly_mean_c: Annotated[list[Celsius], Field(min_length=12, max_length=12)]
    monthly_diurnal_range_c: Annotated[list[RangeC], Field(min_length=12, max_length=12)]
    monthly_rh: Annotated[list[Frac], Field(min_length=12, max_length=12)]
    noise_std_c: NonNeg = 0.0
    seed: Seed = 0
    # ASHRAE annual cooling design conditions of the nearest station (Handbook of
    # Fundamentals, ch. 14): the generated year's hot tail is fitted to them.
    cooling_design_db_c: Celsius | None = Field(
        default=None,
        description="0.4 % cooling dry bulb: the year's 35th-hottest hour is set to it",
    )
    cooling_design_mcwb_c: Celsius | None = Field(
        default=None, description="mean coincident wet bulb at that dry bulb"
    )

    @model_validator(mode="after")
    def _design(self) -> SyntheticWeather:
        db, mcwb = self.cooling_design_db_c, self.cooling_design_mcwb_c
        if mcwb is not None and (db is None or mcwb > db):
            raise ValueError("cooling_design_mcwb_c needs cooling_design_db_c at or above it")
        return self


class Weather(Strict):
    epw: FileName | None = None
    synthetic: SyntheticWeather | None = None
    offset_c: DeltaC = 0.0
    heat_waves: list[HeatWave] = []

    @model_validator(mode="after")
    def _one_source(self) -> Weather:
        if (self.epw is None) == (self.synthetic is None):
            raise ValueError("give exactly one of epw or synthetic")
        return self


# --------------------------------------------------------------------------- controls


class Controls(Strict):
    fan_kp: NonNeg = Field(default=0.05, description="dry-cooler fan PI gain, speed per K")
    fan_ki: NonNeg = Field(
        default=0.005, description="dry-cooler fan PI integral gain, speed per K s"
    )
    smoothing_enabled: bool = True
    it_power_cap_mw: Pos | None = None


class Failure(Strict):
    equipment: Literal["chiller", "pump", "cdu", "dry_cooler", "feeder"]
    index: Count = 0
    at: str | NonNeg
    repair_at: str | NonNeg | None = None

    @model_validator(mode="after")
    def _times(self) -> Failure:
        at = parse_duration_or_zero(self.at)
        if self.repair_at is not None and parse_duration_or_zero(self.repair_at) <= at:
            raise ValueError("repair_at must be after at")
        return self


def parse_duration_or_zero(text: str | float) -> float:
    return parse_duration(text, allow_zero=True)


class Location(Strict):
    latitude: Annotated[float, Field(ge=-90, le=90)]
    longitude: Annotated[float, Field(ge=-180, le=180)]
    utc_offset_h: Annotated[float, Field(ge=-12, le=14)] = 0.0


class Start(Strict):
    day_of_year: Annotated[int, Field(ge=1, le=365)] = 196
    hour: Annotated[int, Field(ge=0, le=23)] = 0


class Site(Strict):
    name: str
    location: Location
    start: Start = Start()
    rack_types: dict[str, RackType] = {}
    halls: Annotated[list[Hall], Field(min_length=1)]
    cooling: Cooling
    power: Power
    energy: Energy
    workload: Workload = Workload()
    weather: Weather
    controls: Controls = Controls()
    failures: list[Failure] = []
    _base_dir: str = PrivateAttr(default=".")

    @model_validator(mode="after")
    def _references(self) -> Site:
        if self.rack_count > MAX_RACKS:
            raise ValueError(f"halls: {self.rack_count} racks, a site holds at most {MAX_RACKS}")
        for i, hall in enumerate(self.halls):
            if hall.rack_type not in self.rack_types:
                known = ", ".join(sorted(self.rack_types)) or "none"
                raise ValueError(
                    f"halls.{i}.rack_type: unknown rack type {hall.rack_type!r} (known: {known})"
                )
        assigned = sum(j.racks for j in self.workload.training) + sum(
            p.racks for p in self.workload.inference
        )
        if assigned > self.rack_count:
            raise ValueError(
                f"workload: assigns {assigned} racks but the site has {self.rack_count}"
            )
        kinds = self.job_rack_types()
        for i, job in enumerate(self.workload.training):
            if self.rack_types[kinds[i]].training is not None:
                continue
            if job.iteration_s is None or (job.phases is None and job.compute_fraction is None):
                raise ValueError(
                    f"workload.training.{i}: rack type {kinds[i]!r} has no "
                    "training defaults: give iteration_s and phases (or compute_fraction, "
                    "compute_util, comm_util)"
                )
        limits = self.installed_units()
        for i, failure in enumerate(self.failures):
            if failure.index >= limits[failure.equipment]:
                raise ValueError(
                    f"failures.{i}.index: {failure.index} out of range, the site has "
                    f"{limits[failure.equipment]} {failure.equipment} unit(s)"
                )
        return self

    def job_rack_types(self) -> list[str]:
        """The rack type holding most of each training job's racks. Racks are assigned in
        site order, hall by hall (params.py): training jobs first, then inference pools."""
        slots = [(h.rack_type, h.cdus * h.racks_per_cdu) for h in self.halls]
        kinds, cursor = [], 0
        for job in self.workload.training:
            held: dict[str, int] = {}
            start, end, first = cursor, cursor + job.racks, 0
            for name, count in slots:
                overlap = min(end, first + count) - max(start, first)
                if overlap > 0:
                    held[name] = held.get(name, 0) + overlap
                first += count
            kinds.append(max(held, key=lambda k: held[k]))
            cursor = end
        return kinds

    @property
    def base_dir(self) -> Path:
        """The folder the site's relative weather and series file names resolve in."""
        return Path(self._base_dir)

    @property
    def cdu_count(self) -> int:
        return sum(h.cdus for h in self.halls)

    def installed_units(self) -> dict[str, int]:
        """Units installed of each kind of equipment that can fail, by label."""
        return {
            "chiller": self.cooling.chillers.units,
            "pump": self.cooling.facility_water.pumps,
            "cdu": self.cdu_count,
            "dry_cooler": self.cooling.dry_coolers.units,
            "feeder": self.power.feeders,
        }

    @property
    def rack_count(self) -> int:
        return sum(h.cdus * h.racks_per_cdu for h in self.halls)

    @property
    def gpu_count(self) -> int:
        return sum(h.cdus * h.racks_per_cdu * self.rack_types[h.rack_type].gpus for h in self.halls)


# --------------------------------------------------------------------------- loading


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line: the dotted path of the first problem (after ``prefix``) and what it is."""
    first = err.errors()[0]
    path = prefix + ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {message}{more}" if path else f"{message}{more}"


def load_catalog() -> dict[str, Any]:
    """Built-in rack types (sourced in the catalog file); a site may add or override them.
    A copy: callers may change it."""
    return copy.deepcopy(_catalog())


@functools.cache
def _catalog() -> dict[str, Any]:
    types: dict[str, Any] = {}
    for path in sorted(CATALOG_DIR.glob("*.yaml")):
        types.update(yaml.safe_load(path.read_text())["rack_types"])
    return types


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, recursing into mappings (a site tweaks one catalog field)."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.0.c`` inside nested dicts/lists; the path must exist up to its last key."""
    keys = path.split(".")
    node: Any = doc
    for depth, key in enumerate(keys[:-1]):
        node = _child(node, key, ".".join(keys[: depth + 1]))
    last = keys[-1]
    if isinstance(node, list):
        index = _index(node, last, path)
        node[index] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SiteError(f"{path}: cannot set a field inside a {type(node).__name__}")


def _child(node: Any, key: str, where: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, where)]
    if isinstance(node, dict):
        if key not in node or node[key] is None:
            node[key] = {}
        return node[key]
    raise SiteError(f"{where}: cannot descend into a {type(node).__name__}")


def _index(node: list[Any], key: str, where: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise SiteError(f"{where}: no list item {key!r} (list has {len(node)} items)")
    return int(key)


def parse_value(text: str) -> Any:
    """A ``--set`` value: YAML scalar or flow collection (``40``, ``true``, ``[1, 2]``)."""
    try:
        return load_yaml(text, "value", SiteError)
    except SiteError as exc:
        problem = str(exc).removeprefix("value: ")
        raise SiteError(f"cannot parse value {clip(text)!r}: {problem}") from None


def parse_overrides(items: list[str], option: str = "--set") -> dict[str, Any]:
    """``["cooling.supply_c=32", ...]`` -> ``{"cooling.supply_c": 32, ...}``; a SiteError
    names the option and the path."""
    overrides: dict[str, Any] = {}
    for item in items:
        path, sep, value = item.partition("=")
        if not sep or not path.strip():
            raise SiteError(
                f"{option} {clip(item)!r}: expected path=value, e.g. cooling.supply_c=32"
            )
        try:
            overrides[path.strip()] = parse_value(value)
        except SiteError as exc:
            raise SiteError(f"{option} {clip(path.strip())}: {exc}") from None
    return overrides


def build_site(
    doc: dict[str, Any], overrides: dict[str, Any] | None = None, base_dir: str | Path = "."
) -> Site:
    """Validate a site document (after dotted-path overrides) into a ``Site``."""
    if not isinstance(doc, dict):
        raise SiteError("site file: top level must be a mapping")
    doc = copy.deepcopy(doc)
    for path, value in (overrides or {}).items():
        set_path(doc, path, value)
    doc["rack_types"] = _deep_merge(load_catalog(), doc.get("rack_types") or {})
    try:
        site = Site.model_validate(doc)
    except ValidationError as err:
        raise SiteError(format_validation_error(err)) from None
    site._base_dir = str(base_dir)
    return site


def with_overrides(site: Site, overrides: dict[str, Any]) -> Site:
    """A copy of ``site`` with dotted-path overrides applied and validated."""
    return build_site(site.model_dump(), overrides, site.base_dir)


def load_site(path: str | Path, overrides: dict[str, Any] | None = None) -> Site:
    path = Path(path)
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise SiteError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not text"
        raise SiteError(f"{path}: cannot read ({reason})") from None
    doc = load_yaml(text, str(path), SiteError)
    if not isinstance(doc, dict):
        raise SiteError(f"{path}: top level must be a mapping")
    # Relative weather and series files are resolved against the scenario's folder.
    return build_site(doc, overrides, path.parent.resolve())


def site_files(site: Site) -> list[tuple[str, str]]:
    """(dotted field, file name) of every file ``site`` names: weather and grid series."""
    grid = site.energy.grid
    named = [("weather.epw", site.weather.epw)] + [
        (f"energy.grid.{name}.file", getattr(grid, name).file)
        for name in ("price_usd_per_mwh", "carbon_g_per_kwh", "cfe_fraction")
    ]
    return [(path, value) for path, value in named if value]


# Typical-year weather files the model ships (their provenance in its README.md): a site
# names one by its bare file name, so a site sent as text, or mounted from a ConfigMap
# away from scenarios/, finds it too.
WEATHER_LIBRARY = Path(__file__).resolve().parent / "catalog" / "weather"


def resolve_file(site: Site, name: str) -> Path:
    """A weather or series file named in ``site``, relative to its scenario folder; a bare
    file name not there is looked up in the bundled weather library."""
    path = Path(name)
    if path.is_absolute():
        return path
    beside = site.base_dir / path
    if not beside.exists() and len(path.parts) == 1 and (WEATHER_LIBRARY / path).is_file():
        return WEATHER_LIBRARY / path
    return beside
