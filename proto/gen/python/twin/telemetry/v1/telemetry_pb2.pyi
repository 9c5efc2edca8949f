from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Quantity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUANTITY_UNSPECIFIED: _ClassVar[Quantity]
    QUANTITY_RACK_POWER_W: _ClassVar[Quantity]
    QUANTITY_GPU_TEMPERATURE_C: _ClassVar[Quantity]
    QUANTITY_SUPPLY_TEMPERATURE_C: _ClassVar[Quantity]
    QUANTITY_RETURN_TEMPERATURE_C: _ClassVar[Quantity]
    QUANTITY_FLOW_M3_PER_S: _ClassVar[Quantity]
    QUANTITY_EQUIPMENT_POWER_W: _ClassVar[Quantity]
    QUANTITY_FAN_SPEED: _ClassVar[Quantity]
    QUANTITY_EQUIPMENT_RUNNING: _ClassVar[Quantity]
    QUANTITY_METER_POWER_W: _ClassVar[Quantity]
    QUANTITY_BATTERY_POWER_W: _ClassVar[Quantity]
    QUANTITY_BATTERY_SOC: _ClassVar[Quantity]
    QUANTITY_AMBIENT_TEMPERATURE_C: _ClassVar[Quantity]
    QUANTITY_RELATIVE_HUMIDITY: _ClassVar[Quantity]
QUANTITY_UNSPECIFIED: Quantity
QUANTITY_RACK_POWER_W: Quantity
QUANTITY_GPU_TEMPERATURE_C: Quantity
QUANTITY_SUPPLY_TEMPERATURE_C: Quantity
QUANTITY_RETURN_TEMPERATURE_C: Quantity
QUANTITY_FLOW_M3_PER_S: Quantity
QUANTITY_EQUIPMENT_POWER_W: Quantity
QUANTITY_FAN_SPEED: Quantity
QUANTITY_EQUIPMENT_RUNNING: Quantity
QUANTITY_METER_POWER_W: Quantity
QUANTITY_BATTERY_POWER_W: Quantity
QUANTITY_BATTERY_SOC: Quantity
QUANTITY_AMBIENT_TEMPERATURE_C: Quantity
QUANTITY_RELATIVE_HUMIDITY: Quantity

class Measurement(_message.Message):
    __slots__ = ("site_id", "entity", "quantity", "time_s", "value")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    entity: str
    quantity: Quantity
    time_s: float
    value: float
    def __init__(self, site_id: _Optional[str] = ..., entity: _Optional[str] = ..., quantity: _Optional[_Union[Quantity, str]] = ..., time_s: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class MeasurementBatch(_message.Message):
    __slots__ = ("site_id", "source", "measurements")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENTS_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    source: str
    measurements: _containers.RepeatedCompositeFieldContainer[Measurement]
    def __init__(self, site_id: _Optional[str] = ..., source: _Optional[str] = ..., measurements: _Optional[_Iterable[_Union[Measurement, _Mapping]]] = ...) -> None: ...
