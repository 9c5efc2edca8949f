from twin.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PowerState(_message.Message):
    __slots__ = ("run_id", "step", "time_s", "meter_w", "it_w", "losses_w", "misc_w", "rack_cap_w", "cap_fraction", "limit_w", "ramp_w_per_s", "band_w", "quantities")
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
    METER_W_FIELD_NUMBER: _ClassVar[int]
    IT_W_FIELD_NUMBER: _ClassVar[int]
    LOSSES_W_FIELD_NUMBER: _ClassVar[int]
    MISC_W_FIELD_NUMBER: _ClassVar[int]
    RACK_CAP_W_FIELD_NUMBER: _ClassVar[int]
    CAP_FRACTION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    RAMP_W_PER_S_FIELD_NUMBER: _ClassVar[int]
    BAND_W_FIELD_NUMBER: _ClassVar[int]
    QUANTITIES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    time_s: float
    meter_w: float
    it_w: float
    losses_w: float
    misc_w: float
    rack_cap_w: _common_pb2.FloatArray
    cap_fraction: float
    limit_w: float
    ramp_w_per_s: float
    band_w: float
    quantities: _containers.ScalarMap[str, float]
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., time_s: _Optional[float] = ..., meter_w: _Optional[float] = ..., it_w: _Optional[float] = ..., losses_w: _Optional[float] = ..., misc_w: _Optional[float] = ..., rack_cap_w: _Optional[_Union[_common_pb2.FloatArray, _Mapping]] = ..., cap_fraction: _Optional[float] = ..., limit_w: _Optional[float] = ..., ramp_w_per_s: _Optional[float] = ..., band_w: _Optional[float] = ..., quantities: _Optional[_Mapping[str, float]] = ...) -> None: ...

class PowerConfig(_message.Message):
    __slots__ = ("run_id", "step", "interconnect_limit_w", "it_cap_w", "feeders", "failed_feeders")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    INTERCONNECT_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    IT_CAP_W_FIELD_NUMBER: _ClassVar[int]
    FEEDERS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FEEDERS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    interconnect_limit_w: float
    it_cap_w: float
    feeders: int
    failed_feeders: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., interconnect_limit_w: _Optional[float] = ..., it_cap_w: _Optional[float] = ..., feeders: _Optional[int] = ..., failed_feeders: _Optional[_Iterable[int]] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: PowerState
    def __init__(self, state: _Optional[_Union[PowerState, _Mapping]] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: PowerConfig
    def __init__(self, config: _Optional[_Union[PowerConfig, _Mapping]] = ...) -> None: ...

class SetInterconnectLimit(_message.Message):
    __slots__ = ("limit_w",)
    LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    limit_w: float
    def __init__(self, limit_w: _Optional[float] = ...) -> None: ...

class SetItCap(_message.Message):
    __slots__ = ("cap_w",)
    CAP_W_FIELD_NUMBER: _ClassVar[int]
    cap_w: float
    def __init__(self, cap_w: _Optional[float] = ...) -> None: ...

class ClearItCap(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FailFeeder(_message.Message):
    __slots__ = ("index",)
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    def __init__(self, index: _Optional[int] = ...) -> None: ...

class RepairFeeder(_message.Message):
    __slots__ = ("index",)
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    def __init__(self, index: _Optional[int] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("set_interconnect_limit", "set_it_cap", "clear_it_cap", "fail_feeder", "repair_feeder")
    SET_INTERCONNECT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    SET_IT_CAP_FIELD_NUMBER: _ClassVar[int]
    CLEAR_IT_CAP_FIELD_NUMBER: _ClassVar[int]
    FAIL_FEEDER_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FEEDER_FIELD_NUMBER: _ClassVar[int]
    set_interconnect_limit: SetInterconnectLimit
    set_it_cap: SetItCap
    clear_it_cap: ClearItCap
    fail_feeder: FailFeeder
    repair_feeder: RepairFeeder
    def __init__(self, set_interconnect_limit: _Optional[_Union[SetInterconnectLimit, _Mapping]] = ..., set_it_cap: _Optional[_Union[SetItCap, _Mapping]] = ..., clear_it_cap: _Optional[_Union[ClearItCap, _Mapping]] = ..., fail_feeder: _Optional[_Union[FailFeeder, _Mapping]] = ..., repair_feeder: _Optional[_Union[RepairFeeder, _Mapping]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("effective", "config")
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    effective: _common_pb2.Tick
    config: PowerConfig
    def __init__(self, effective: _Optional[_Union[_common_pb2.Tick, _Mapping]] = ..., config: _Optional[_Union[PowerConfig, _Mapping]] = ...) -> None: ...
