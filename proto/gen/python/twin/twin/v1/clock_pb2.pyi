from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClockCommand(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLOCK_COMMAND_UNSPECIFIED: _ClassVar[ClockCommand]
    CLOCK_COMMAND_TICK: _ClassVar[ClockCommand]
    CLOCK_COMMAND_START: _ClassVar[ClockCommand]
    CLOCK_COMMAND_STOP: _ClassVar[ClockCommand]

class RunEnd(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_END_UNSPECIFIED: _ClassVar[RunEnd]
    RUN_END_STOPPED: _ClassVar[RunEnd]
    RUN_END_COMPLETED: _ClassVar[RunEnd]
    RUN_END_FAILED: _ClassVar[RunEnd]
CLOCK_COMMAND_UNSPECIFIED: ClockCommand
CLOCK_COMMAND_TICK: ClockCommand
CLOCK_COMMAND_START: ClockCommand
CLOCK_COMMAND_STOP: ClockCommand
RUN_END_UNSPECIFIED: RunEnd
RUN_END_STOPPED: RunEnd
RUN_END_COMPLETED: RunEnd
RUN_END_FAILED: RunEnd

class RunSpec(_message.Message):
    __slots__ = ("scenario_name", "scenario_yaml", "overrides", "dt_s", "horizon_s")
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_YAML_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    DT_S_FIELD_NUMBER: _ClassVar[int]
    HORIZON_S_FIELD_NUMBER: _ClassVar[int]
    scenario_name: str
    scenario_yaml: str
    overrides: _containers.RepeatedScalarFieldContainer[str]
    dt_s: float
    horizon_s: float
    def __init__(self, scenario_name: _Optional[str] = ..., scenario_yaml: _Optional[str] = ..., overrides: _Optional[_Iterable[str]] = ..., dt_s: _Optional[float] = ..., horizon_s: _Optional[float] = ...) -> None: ...

class Speed(_message.Message):
    __slots__ = ("real_time_factor", "as_fast_as_possible")
    REAL_TIME_FACTOR_FIELD_NUMBER: _ClassVar[int]
    AS_FAST_AS_POSSIBLE_FIELD_NUMBER: _ClassVar[int]
    real_time_factor: float
    as_fast_as_possible: bool
    def __init__(self, real_time_factor: _Optional[float] = ..., as_fast_as_possible: _Optional[bool] = ...) -> None: ...

class Clock(_message.Message):
    __slots__ = ("run_id", "step", "time_s", "command", "spec", "real_time_factor", "wall_time_s", "end", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REAL_TIME_FACTOR_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    time_s: float
    command: ClockCommand
    spec: RunSpec
    real_time_factor: float
    wall_time_s: float
    end: RunEnd
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., time_s: _Optional[float] = ..., command: _Optional[_Union[ClockCommand, str]] = ..., spec: _Optional[_Union[RunSpec, _Mapping]] = ..., real_time_factor: _Optional[float] = ..., wall_time_s: _Optional[float] = ..., end: _Optional[_Union[RunEnd, str]] = ..., reason: _Optional[str] = ...) -> None: ...
