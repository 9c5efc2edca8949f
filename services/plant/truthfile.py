"""The truth file: what the emulated plant is that the twin does not know.

    seed: 7                                   # sensor noise and dropouts
    overrides:                                # the true site: dotted site paths
      cooling.cdu.ua_w_per_k: 150000          # fouled CDU heat exchangers
      cooling.facility_water.pump.efficiency: 0.6
    sensors:
      noise: {cdu_supply_c: 0.05, rack_power_w: 300}   # 1 sigma, in the signal's unit
      bias:  [{signal: cdu_supply_c, entity: cdu/0, value: 0.8}]
      dropout: 0.01                           # chance that a reading is missing
    faults:
      - {kind: fouling, at: 10m, ramp: 1h, cdu: 0, ua_fraction: 0.5}
      - {kind: pump_failure, at: 30m, index: 0}        # a facility water pump, unreported
      - {kind: sensor_drift, at: 20m, signal: cdu_supply_c, entity: cdu/1, per_hour: 1.0}

Every problem is one ``TruthError`` line naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from twin_core.durations import parse_duration
from twin_core.inputs import load_yaml
from twin_core.site import Site, SiteError, format_validation_error, with_overrides

DEFAULT_TRUTH = Path(__file__).parent / "default_truth.yaml"

# The plant's measured signals (truth.py computes each): name -> unit.
SIGNALS: dict[str, str] = {
    "cdu_supply_c": "degC",  # TCS supply temperature after each CDU's heat exchanger
    "cdu_return_c": "degC",  # TCS return (supply + rack heat / loop capacity rate)
    "ambient_c": "degC",  # outdoor dry bulb
    "rack_power_w": "W",  # rack AC input (the rack's PDU / power shelf)
    "gpu_power_w": "W",  # each GPU's board power
    "gpu_temp_c": "degC",  # each GPU's die temperature
    "meter_power_w": "W",  # the site's grid meter
    "ups_output_w": "W",  # IT power after the UPS (and distribution)
}
Signal = Literal[tuple(SIGNALS)]  # type: ignore[valid-type]


class TruthError(ValueError):
    """A truth file that cannot be used; ``str()`` is one line naming file and field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def seconds(text: str | float) -> float:
    try:
        return parse_duration(text, allow_zero=True)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _check_duration(value: str | float) -> str | float:
    seconds(value)
    return value


# e.g. 90s, 10m, 2h; a number is seconds
Duration = Annotated[str | float, AfterValidator(_check_duration)]


class Bias(Strict):
    signal: Signal  # type: ignore[valid-type]
    entity: str = Field(min_length=1)  # cdu/0, rack/1/0 (all its GPUs for gpu_*), meter
    value: float  # added to the true value, in the signal's unit


class SensorErrors(Strict):
    noise: dict[Signal, Annotated[float, Field(ge=0)]] = {}  # type: ignore[valid-type]
    bias: list[Bias] = []
    dropout: float = Field(default=0.0, ge=0, lt=1)


class Fouling(Strict):
    """A CDU heat exchanger's UA falls linearly to ``ua_fraction`` of its value at
    ``at`` over ``ramp`` and stays there."""

    kind: Literal["fouling"]
    at: Duration
    ramp: Duration = 0.0
    cdu: int = Field(ge=0)
    ua_fraction: float = Field(gt=0, le=1)


class PumpFailure(Strict):
    """A facility water pump fails at ``at`` (until ``repair_at``) and nobody says so."""

    kind: Literal["pump_failure"]
    at: Duration
    repair_at: Duration | None = None
    index: int = Field(default=0, ge=0)


class SensorDrift(Strict):
    """One sensor's reading drifts from ``at`` by ``per_hour`` (signal unit) each hour."""

    kind: Literal["sensor_drift"]
    at: Duration
    signal: Signal  # type: ignore[valid-type]
    entity: str = Field(min_length=1)
    per_hour: float


Fault = Annotated[Fouling | PumpFailure | SensorDrift, Field(discriminator="kind")]


class Truth(Strict):
    seed: int = Field(default=0, ge=0, lt=2**32)
    overrides: dict[str, Any] = {}
    sensors: SensorErrors = SensorErrors()
    faults: list[Fault] = []

    def true_site(self, base: Site) -> Site:
        """``base`` with the overrides and the pump failures (as site failures); a
        SiteError names the override or fault."""
        site = with_overrides(base, dict(self.overrides))
        failures = [f.model_dump() for f in site.failures]
        for i, fault in enumerate(self.faults):
            if isinstance(fault, PumpFailure):
                pumps = site.cooling.facility_water.pumps
                if fault.index >= pumps:
                    raise SiteError(f"faults.{i}.index: {fault.index} out of range, "
                                    f"the site has {pumps} facility water pump(s)")  # fmt: skip
                at = seconds(fault.at)
                end = None if fault.repair_at is None else seconds(fault.repair_at)
                failures.append({"equipment": "pump", "index": fault.index, "at": at,
                                 "repair_at": end})  # fmt: skip
        try:
            return with_overrides(site, {"failures": failures}) if failures else site
        except SiteError as exc:
            raise SiteError(f"faults: {exc}") from None

    def record(self, site: Site) -> dict[str, Any]:
        """The truth as plain data (the --truth-out record): the true values of the
        overridden parameters, the sensor errors and the faults (times in seconds)."""
        doc = site.model_dump(mode="json")
        true_values = {path: get_path(doc, path) for path in self.overrides}
        faults = []
        for fault in self.faults:
            item = fault.model_dump(mode="json")
            for key in ("at", "ramp", "repair_at"):
                if item.get(key) is not None:
                    item[f"{key}_s"] = seconds(item.pop(key))
            faults.append(item)
        return {
            "site": site.name,
            "seed": self.seed,
            "parameters": true_values,
            "sensors": self.sensors.model_dump(mode="json"),
            "faults": faults,
        }


def get_path(doc: Any, path: str) -> Any:
    for key in path.split("."):
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    return doc


def parse_truth(text: str, name: str = "<truth>") -> Truth:
    doc = load_yaml(text, name, TruthError)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise TruthError(f"{name}: the top level must be a mapping")
    try:
        return Truth.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"]]
        # the union member's tag ("faults.0.fouling.cdu") is not in the file
        if len(loc) >= 3 and loc[0] == "faults" and loc[2] in ("fouling", "pump_failure",
                                                               "sensor_drift"):  # fmt: skip
            del loc[2]
        message = format_validation_error(err).split(": ", 1)[-1]
        raise TruthError(f"{name}: {'.'.join(loc)}: {message}") from None


def load_truth(path: str | Path | None) -> tuple[Truth, str]:
    """The truth file (default: the packaged one) and its name for messages."""
    path = Path(path) if path is not None else DEFAULT_TRUTH
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TruthError(f"{path}: cannot read the truth file ({exc.__class__.__name__})") from None
    return parse_truth(text, str(path)), str(path)


def resolve_truth(truth: Truth, base: Site, name: str) -> Site:
    """The true site; TruthError naming the file and the override or fault."""
    try:
        return truth.true_site(base)
    except SiteError as exc:
        text = str(exc)
        where = "" if text.startswith("faults") else "overrides: "
        raise TruthError(f"{name}: {where}{text}") from None
