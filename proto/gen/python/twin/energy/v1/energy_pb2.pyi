from twin.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BatteryMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATTERY_MODE_UNSPECIFIED: _ClassVar[BatteryMode]
    BATTERY_MODE_OFF: _ClassVar[BatteryMode]
    BATTERY_MODE_PEAK_SHAVE: _ClassVar[BatteryMode]
    BATTERY_MODE_SWING_FIRMING: _ClassVar[BatteryMode]
    BATTERY_MODE_ARBITRAGE: _ClassVar[BatteryMode]
BATTERY_MODE_UNSPECIFIED: BatteryMode
BATTERY_MODE_OFF: BatteryMode
BATTERY_MODE_PEAK_SHAVE: BatteryMode
BATTERY_MODE_SWING_FIRMING: BatteryMode
BATTERY_MODE_ARBITRAGE: BatteryMode

class EnergyState(_message.Message):
    __slots__ = ("run_id", "step", "time_s", "grid_w", "battery_w", "generation_w", "soc", "supply_limit_w", "cost_usd_per_s", "emissions_t_per_s", "market_emissions_t_per_s", "ppa_w", "quantities")
    class QuantitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    GRID_W_FIELD_NUMBER: _ClassVar[int]
    BATTERY_W_FIELD_NUMBER: _ClassVar[int]
    GENERATION_W_FIELD_NUMBER: _ClassVar[int]
    SOC_FIELD_NUMBER: _ClassVar[int]
    SUPPLY_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    COST_USD_PER_S_FIELD_NUMBER: _ClassVar[int]
    EMISSIONS_T_PER_S_FIELD_NUMBER: _ClassVar[int]
    MARKET_EMISSIONS_T_PER_S_FIELD_NUMBER: _ClassVar[int]
    PPA_W_FIELD_NUMBER: _ClassVar[int]
    QUANTITIES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    time_s: float
    grid_w: float
    battery_w: float
    generation_w: float
    soc: float
    supply_limit_w: float
    cost_usd_per_s: float
    emissions_t_per_s: float
    market_emissions_t_per_s: float
    ppa_w: float
    quantities: _containers.ScalarMap[str, float]
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., time_s: _Optional[float] = ..., grid_w: _Optional[float] = ..., battery_w: _Optional[float] = ..., generation_w: _Optional[float] = ..., soc: _Optional[float] = ..., supply_limit_w: _Optional[float] = ..., cost_usd_per_s: _Optional[float] = ..., emissions_t_per_s: _Optional[float] = ..., market_emissions_t_per_s: _Optional[float] = ..., ppa_w: _Optional[float] = ..., quantities: _Optional[_Mapping[str, float]] = ...) -> None: ...

class EnergyConfig(_message.Message):
    __slots__ = ("run_id", "step", "battery_mode", "peak_threshold_w", "ramp_limit_w_per_s", "charge_below_usd_per_mwh", "discharge_above_usd_per_mwh", "battery_capacity_wh", "battery_power_w", "grid_import_limit_w")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BATTERY_MODE_FIELD_NUMBER: _ClassVar[int]
    PEAK_THRESHOLD_W_FIELD_NUMBER: _ClassVar[int]
    RAMP_LIMIT_W_PER_S_FIELD_NUMBER: _ClassVar[int]
    CHARGE_BELOW_USD_PER_MWH_FIELD_NUMBER: _ClassVar[int]
    DISCHARGE_ABOVE_USD_PER_MWH_FIELD_NUMBER: _ClassVar[int]
    BATTERY_CAPACITY_WH_FIELD_NUMBER: _ClassVar[int]
    BATTERY_POWER_W_FIELD_NUMBER: _ClassVar[int]
    GRID_IMPORT_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    battery_mode: BatteryMode
    peak_threshold_w: float
    ramp_limit_w_per_s: float
    charge_below_usd_per_mwh: float
    discharge_above_usd_per_mwh: float
    battery_capacity_wh: float
    battery_power_w: float
    grid_import_limit_w: float
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., battery_mode: _Optional[_Union[BatteryMode, str]] = ..., peak_threshold_w: _Optional[float] = ..., ramp_limit_w_per_s: _Optional[float] = ..., charge_below_usd_per_mwh: _Optional[float] = ..., discharge_above_usd_per_mwh: _Optional[float] = ..., battery_capacity_wh: _Optional[float] = ..., battery_power_w: _Optional[float] = ..., grid_import_limit_w: _Optional[float] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: EnergyState
    def __init__(self, state: _Optional[_Union[EnergyState, _Mapping]] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: EnergyConfig
    def __init__(self, config: _Optional[_Union[EnergyConfig, _Mapping]] = ...) -> None: ...

class SetBatteryMode(_message.Message):
    __slots__ = ("mode", "peak_threshold_w", "ramp_limit_w_per_s", "charge_below_usd_per_mwh", "discharge_above_usd_per_mwh")
    MODE_FIELD_NUMBER: _ClassVar[int]
    PEAK_THRESHOLD_W_FIELD_NUMBER: _ClassVar[int]
    RAMP_LIMIT_W_PER_S_FIELD_NUMBER: _ClassVar[int]
    CHARGE_BELOW_USD_PER_MWH_FIELD_NUMBER: _ClassVar[int]
    DISCHARGE_ABOVE_USD_PER_MWH_FIELD_NUMBER: _ClassVar[int]
    mode: BatteryMode
    peak_threshold_w: float
    ramp_limit_w_per_s: float
    charge_below_usd_per_mwh: float
    discharge_above_usd_per_mwh: float
    def __init__(self, mode: _Optional[_Union[BatteryMode, str]] = ..., peak_threshold_w: _Optional[float] = ..., ramp_limit_w_per_s: _Optional[float] = ..., charge_below_usd_per_mwh: _Optional[float] = ..., discharge_above_usd_per_mwh: _Optional[float] = ...) -> None: ...

class SetGridImportLimit(_message.Message):
    __slots__ = ("limit_w",)
    LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    limit_w: float
    def __init__(self, limit_w: _Optional[float] = ...) -> None: ...

class ClearGridImportLimit(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("set_battery_mode", "set_grid_import_limit", "clear_grid_import_limit")
    SET_BATTERY_MODE_FIELD_NUMBER: _ClassVar[int]
    SET_GRID_IMPORT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CLEAR_GRID_IMPORT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    set_battery_mode: SetBatteryMode
    set_grid_import_limit: SetGridImportLimit
    clear_grid_import_limit: ClearGridImportLimit
    def __init__(self, set_battery_mode: _Optional[_Union[SetBatteryMode, _Mapping]] = ..., set_grid_import_limit: _Optional[_Union[SetGridImportLimit, _Mapping]] = ..., clear_grid_import_limit: _Optional[_Union[ClearGridImportLimit, _Mapping]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("effective", "config")
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    effective: _common_pb2.Tick
    config: EnergyConfig
    def __init__(self, effective: _Optional[_Union[_common_pb2.Tick, _Mapping]] = ..., config: _Optional[_Union[EnergyConfig, _Mapping]] = ...) -> None: ...
