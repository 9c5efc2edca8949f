from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_PAUSED: _ClassVar[RunState]
    RUN_STATE_STOPPED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_PAUSED: RunState
RUN_STATE_STOPPED: RunState
RUN_STATE_FAILED: RunState

class SiteSnapshot(_message.Message):
    __slots__ = ("run_id", "site_id", "step", "time_s", "state", "pue", "it_mw", "facility_mw", "cooling_mw", "losses_mw", "tcs_supply_mean_c", "tcs_supply_max_c", "facility_supply_c", "gpu_temp_max_c", "gpu_temp_mean_c", "throttled_gpus", "grid_mw", "battery_mw", "ppa_mw", "generation_mw", "cost_usd", "emissions_t", "market_emissions_t", "delivered_pflops", "real_time_factor", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PUE_FIELD_NUMBER: _ClassVar[int]
    IT_MW_FIELD_NUMBER: _ClassVar[int]
    FACILITY_MW_FIELD_NUMBER: _ClassVar[int]
    COOLING_MW_FIELD_NUMBER: _ClassVar[int]
    LOSSES_MW_FIELD_NUMBER: _ClassVar[int]
    TCS_SUPPLY_MEAN_C_FIELD_NUMBER: _ClassVar[int]
    TCS_SUPPLY_MAX_C_FIELD_NUMBER: _ClassVar[int]
    FACILITY_SUPPLY_C_FIELD_NUMBER: _ClassVar[int]
    GPU_TEMP_MAX_C_FIELD_NUMBER: _ClassVar[int]
    GPU_TEMP_MEAN_C_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_GPUS_FIELD_NUMBER: _ClassVar[int]
    GRID_MW_FIELD_NUMBER: _ClassVar[int]
    BATTERY_MW_FIELD_NUMBER: _ClassVar[int]
    PPA_MW_FIELD_NUMBER: _ClassVar[int]
    GENERATION_MW_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    EMISSIONS_T_FIELD_NUMBER: _ClassVar[int]
    MARKET_EMISSIONS_T_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_PFLOPS_FIELD_NUMBER: _ClassVar[int]
    REAL_TIME_FACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    site_id: str
    step: int
    time_s: float
    state: RunState
    pue: float
    it_mw: float
    facility_mw: float
    cooling_mw: float
    losses_mw: float
    tcs_supply_mean_c: float
    tcs_supply_max_c: float
    facility_supply_c: float
    gpu_temp_max_c: float
    gpu_temp_mean_c: float
    throttled_gpus: int
    grid_mw: float
    battery_mw: float
    ppa_mw: float
    generation_mw: float
    cost_usd: float
    emissions_t: float
    market_emissions_t: float
    delivered_pflops: float
    real_time_factor: float
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., site_id: _Optional[str] = ..., step: _Optional[int] = ..., time_s: _Optional[float] = ..., state: _Optional[_Union[RunState, str]] = ..., pue: _Optional[float] = ..., it_mw: _Optional[float] = ..., facility_mw: _Optional[float] = ..., cooling_mw: _Optional[float] = ..., losses_mw: _Optional[float] = ..., tcs_supply_mean_c: _Optional[float] = ..., tcs_supply_max_c: _Optional[float] = ..., facility_supply_c: _Optional[float] = ..., gpu_temp_max_c: _Optional[float] = ..., gpu_temp_mean_c: _Optional[float] = ..., throttled_gpus: _Optional[int] = ..., grid_mw: _Optional[float] = ..., battery_mw: _Optional[float] = ..., ppa_mw: _Optional[float] = ..., generation_mw: _Optional[float] = ..., cost_usd: _Optional[float] = ..., emissions_t: _Optional[float] = ..., market_emissions_t: _Optional[float] = ..., delivered_pflops: _Optional[float] = ..., real_time_factor: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...
