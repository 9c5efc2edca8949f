from twin.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CoolingState(_message.Message):
    __slots__ = ("run_id", "step", "time_s", "tcs_supply_c", "electrical_w", "pumps_w", "fans_w", "chillers_w", "air_handling_w", "heat_rejected_w", "chillers_running", "chiller_load_w", "fan_speed", "fws_supply_c", "fws_return_c", "tcs_supply_mean_c", "tcs_supply_max_c", "water_m3_per_s", "ambient_c", "quantities", "tcs_supply_model_c", "tcs_return_model_c")
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
    TCS_SUPPLY_C_FIELD_NUMBER: _ClassVar[int]
    ELECTRICAL_W_FIELD_NUMBER: _ClassVar[int]
    PUMPS_W_FIELD_NUMBER: _ClassVar[int]
    FANS_W_FIELD_NUMBER: _ClassVar[int]
    CHILLERS_W_FIELD_NUMBER: _ClassVar[int]
    AIR_HANDLING_W_FIELD_NUMBER: _ClassVar[int]
    HEAT_REJECTED_W_FIELD_NUMBER: _ClassVar[int]
    CHILLERS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    CHILLER_LOAD_W_FIELD_NUMBER: _ClassVar[int]
    FAN_SPEED_FIELD_NUMBER: _ClassVar[int]
    FWS_SUPPLY_C_FIELD_NUMBER: _ClassVar[int]
    FWS_RETURN_C_FIELD_NUMBER: _ClassVar[int]
    TCS_SUPPLY_MEAN_C_FIELD_NUMBER: _ClassVar[int]
    TCS_SUPPLY_MAX_C_FIELD_NUMBER: _ClassVar[int]
    WATER_M3_PER_S_FIELD_NUMBER: _ClassVar[int]
    AMBIENT_C_FIELD_NUMBER: _ClassVar[int]
    QUANTITIES_FIELD_NUMBER: _ClassVar[int]
    TCS_SUPPLY_MODEL_C_FIELD_NUMBER: _ClassVar[int]
    TCS_RETURN_MODEL_C_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    time_s: float
    tcs_supply_c: _containers.RepeatedScalarFieldContainer[float]
    electrical_w: float
    pumps_w: float
    fans_w: float
    chillers_w: float
    air_handling_w: float
    heat_rejected_w: float
    chillers_running: float
    chiller_load_w: float
    fan_speed: float
    fws_supply_c: float
    fws_return_c: float
    tcs_supply_mean_c: float
    tcs_supply_max_c: float
    water_m3_per_s: float
    ambient_c: float
    quantities: _containers.ScalarMap[str, float]
    tcs_supply_model_c: _containers.RepeatedScalarFieldContainer[float]
    tcs_return_model_c: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., time_s: _Optional[float] = ..., tcs_supply_c: _Optional[_Iterable[float]] = ..., electrical_w: _Optional[float] = ..., pumps_w: _Optional[float] = ..., fans_w: _Optional[float] = ..., chillers_w: _Optional[float] = ..., air_handling_w: _Optional[float] = ..., heat_rejected_w: _Optional[float] = ..., chillers_running: _Optional[float] = ..., chiller_load_w: _Optional[float] = ..., fan_speed: _Optional[float] = ..., fws_supply_c: _Optional[float] = ..., fws_return_c: _Optional[float] = ..., tcs_supply_mean_c: _Optional[float] = ..., tcs_supply_max_c: _Optional[float] = ..., water_m3_per_s: _Optional[float] = ..., ambient_c: _Optional[float] = ..., quantities: _Optional[_Mapping[str, float]] = ..., tcs_supply_model_c: _Optional[_Iterable[float]] = ..., tcs_return_model_c: _Optional[_Iterable[float]] = ...) -> None: ...

class CoolingConfig(_message.Message):
    __slots__ = ("run_id", "step", "supply_c", "cdus", "pumps", "dry_coolers", "chillers", "failed")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SUPPLY_C_FIELD_NUMBER: _ClassVar[int]
    CDUS_FIELD_NUMBER: _ClassVar[int]
    PUMPS_FIELD_NUMBER: _ClassVar[int]
    DRY_COOLERS_FIELD_NUMBER: _ClassVar[int]
    CHILLERS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    supply_c: float
    cdus: int
    pumps: int
    dry_coolers: int
    chillers: int
    failed: _containers.RepeatedCompositeFieldContainer[_common_pb2.EquipmentRef]
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., supply_c: _Optional[float] = ..., cdus: _Optional[int] = ..., pumps: _Optional[int] = ..., dry_coolers: _Optional[int] = ..., chillers: _Optional[int] = ..., failed: _Optional[_Iterable[_Union[_common_pb2.EquipmentRef, _Mapping]]] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: CoolingState
    def __init__(self, state: _Optional[_Union[CoolingState, _Mapping]] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: CoolingConfig
    def __init__(self, config: _Optional[_Union[CoolingConfig, _Mapping]] = ...) -> None: ...

class SetSupplySetpoint(_message.Message):
    __slots__ = ("supply_c",)
    SUPPLY_C_FIELD_NUMBER: _ClassVar[int]
    supply_c: float
    def __init__(self, supply_c: _Optional[float] = ...) -> None: ...

class FailEquipment(_message.Message):
    __slots__ = ("equipment",)
    EQUIPMENT_FIELD_NUMBER: _ClassVar[int]
    equipment: _common_pb2.EquipmentRef
    def __init__(self, equipment: _Optional[_Union[_common_pb2.EquipmentRef, _Mapping]] = ...) -> None: ...

class RepairEquipment(_message.Message):
    __slots__ = ("equipment",)
    EQUIPMENT_FIELD_NUMBER: _ClassVar[int]
    equipment: _common_pb2.EquipmentRef
    def __init__(self, equipment: _Optional[_Union[_common_pb2.EquipmentRef, _Mapping]] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("set_supply_setpoint", "fail_equipment", "repair_equipment")
    SET_SUPPLY_SETPOINT_FIELD_NUMBER: _ClassVar[int]
    FAIL_EQUIPMENT_FIELD_NUMBER: _ClassVar[int]
    REPAIR_EQUIPMENT_FIELD_NUMBER: _ClassVar[int]
    set_supply_setpoint: SetSupplySetpoint
    fail_equipment: FailEquipment
    repair_equipment: RepairEquipment
    def __init__(self, set_supply_setpoint: _Optional[_Union[SetSupplySetpoint, _Mapping]] = ..., fail_equipment: _Optional[_Union[FailEquipment, _Mapping]] = ..., repair_equipment: _Optional[_Union[RepairEquipment, _Mapping]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("effective", "config")
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    effective: _common_pb2.Tick
    config: CoolingConfig
    def __init__(self, effective: _Optional[_Union[_common_pb2.Tick, _Mapping]] = ..., config: _Optional[_Union[CoolingConfig, _Mapping]] = ...) -> None: ...
