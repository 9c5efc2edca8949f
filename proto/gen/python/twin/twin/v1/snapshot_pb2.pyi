from twin.twin.v1 import deviation_pb2 as _deviation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
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
    __slots__ = ("run_id", "site_id", "step", "time_s", "state", "quantities", "totals", "real_time_factor", "reason", "deviations", "halls")
    class QuantitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TotalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUANTITIES_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    REAL_TIME_FACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEVIATIONS_FIELD_NUMBER: _ClassVar[int]
    HALLS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    site_id: str
    step: int
    time_s: float
    state: RunState
    quantities: _containers.ScalarMap[str, float]
    totals: _containers.ScalarMap[str, float]
    real_time_factor: float
    reason: str
    deviations: _containers.RepeatedCompositeFieldContainer[_deviation_pb2.Deviation]
    halls: _containers.RepeatedCompositeFieldContainer[HallCdus]
    def __init__(self, run_id: _Optional[str] = ..., site_id: _Optional[str] = ..., step: _Optional[int] = ..., time_s: _Optional[float] = ..., state: _Optional[_Union[RunState, str]] = ..., quantities: _Optional[_Mapping[str, float]] = ..., totals: _Optional[_Mapping[str, float]] = ..., real_time_factor: _Optional[float] = ..., reason: _Optional[str] = ..., deviations: _Optional[_Iterable[_Union[_deviation_pb2.Deviation, _Mapping]]] = ..., halls: _Optional[_Iterable[_Union[HallCdus, _Mapping]]] = ...) -> None: ...

class HallCdus(_message.Message):
    __slots__ = ("name", "tcs_supply_c")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TCS_SUPPLY_C_FIELD_NUMBER: _ClassVar[int]
    name: str
    tcs_supply_c: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., tcs_supply_c: _Optional[_Iterable[float]] = ...) -> None: ...
