from twin.telemetry.v1 import telemetry_pb2 as _telemetry_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviationCause(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVIATION_CAUSE_UNSPECIFIED: _ClassVar[DeviationCause]
    DEVIATION_CAUSE_SENSOR: _ClassVar[DeviationCause]
    DEVIATION_CAUSE_EQUIPMENT: _ClassVar[DeviationCause]
    DEVIATION_CAUSE_LOAD: _ClassVar[DeviationCause]

class DeviationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVIATION_STATUS_UNSPECIFIED: _ClassVar[DeviationStatus]
    DEVIATION_STATUS_RAISED: _ClassVar[DeviationStatus]
    DEVIATION_STATUS_CLEARED: _ClassVar[DeviationStatus]
DEVIATION_CAUSE_UNSPECIFIED: DeviationCause
DEVIATION_CAUSE_SENSOR: DeviationCause
DEVIATION_CAUSE_EQUIPMENT: DeviationCause
DEVIATION_CAUSE_LOAD: DeviationCause
DEVIATION_STATUS_UNSPECIFIED: DeviationStatus
DEVIATION_STATUS_RAISED: DeviationStatus
DEVIATION_STATUS_CLEARED: DeviationStatus

class Deviation(_message.Message):
    __slots__ = ("event_id", "run_id", "site_id", "entity", "quantity", "status", "cause", "departure", "departure_sigmas", "sigma", "unit", "step", "time_s", "measured_time_s", "raised_step", "reason", "suspect")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    DEPARTURE_FIELD_NUMBER: _ClassVar[int]
    DEPARTURE_SIGMAS_FIELD_NUMBER: _ClassVar[int]
    SIGMA_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    MEASURED_TIME_S_FIELD_NUMBER: _ClassVar[int]
    RAISED_STEP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUSPECT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    run_id: str
    site_id: str
    entity: str
    quantity: _telemetry_pb2.Quantity
    status: DeviationStatus
    cause: DeviationCause
    departure: float
    departure_sigmas: float
    sigma: float
    unit: str
    step: int
    time_s: float
    measured_time_s: float
    raised_step: int
    reason: str
    suspect: str
    def __init__(self, event_id: _Optional[str] = ..., run_id: _Optional[str] = ..., site_id: _Optional[str] = ..., entity: _Optional[str] = ..., quantity: _Optional[_Union[_telemetry_pb2.Quantity, str]] = ..., status: _Optional[_Union[DeviationStatus, str]] = ..., cause: _Optional[_Union[DeviationCause, str]] = ..., departure: _Optional[float] = ..., departure_sigmas: _Optional[float] = ..., sigma: _Optional[float] = ..., unit: _Optional[str] = ..., step: _Optional[int] = ..., time_s: _Optional[float] = ..., measured_time_s: _Optional[float] = ..., raised_step: _Optional[int] = ..., reason: _Optional[str] = ..., suspect: _Optional[str] = ...) -> None: ...
