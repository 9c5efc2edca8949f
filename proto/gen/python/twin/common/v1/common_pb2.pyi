from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EquipmentKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EQUIPMENT_KIND_UNSPECIFIED: _ClassVar[EquipmentKind]
    EQUIPMENT_KIND_CHILLER: _ClassVar[EquipmentKind]
    EQUIPMENT_KIND_PUMP: _ClassVar[EquipmentKind]
    EQUIPMENT_KIND_CDU: _ClassVar[EquipmentKind]
    EQUIPMENT_KIND_DRY_COOLER: _ClassVar[EquipmentKind]
    EQUIPMENT_KIND_FEEDER: _ClassVar[EquipmentKind]
EQUIPMENT_KIND_UNSPECIFIED: EquipmentKind
EQUIPMENT_KIND_CHILLER: EquipmentKind
EQUIPMENT_KIND_PUMP: EquipmentKind
EQUIPMENT_KIND_CDU: EquipmentKind
EQUIPMENT_KIND_DRY_COOLER: EquipmentKind
EQUIPMENT_KIND_FEEDER: EquipmentKind

class Tick(_message.Message):
    __slots__ = ("run_id", "step", "time_s")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    time_s: float
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., time_s: _Optional[float] = ...) -> None: ...

class FloatArray(_message.Message):
    __slots__ = ("values", "shape")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[float]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class RackRef(_message.Message):
    __slots__ = ("slot", "cdu")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    CDU_FIELD_NUMBER: _ClassVar[int]
    slot: int
    cdu: int
    def __init__(self, slot: _Optional[int] = ..., cdu: _Optional[int] = ...) -> None: ...

class EquipmentRef(_message.Message):
    __slots__ = ("kind", "index")
    KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    kind: EquipmentKind
    index: int
    def __init__(self, kind: _Optional[_Union[EquipmentKind, str]] = ..., index: _Optional[int] = ...) -> None: ...
