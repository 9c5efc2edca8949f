from twin.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ComputeState(_message.Message):
    __slots__ = ("run_id", "step", "time_s", "rack_ac_w", "heat_liquid_w", "heat_air_w", "ac_total_w", "gpu_temp_max_c", "gpu_temp_mean_c", "throttled_gpus", "delivered_pflops", "gpu_power_w", "rack_outlet_mean_c", "quantities", "rack_ac_model_w")
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
    RACK_AC_W_FIELD_NUMBER: _ClassVar[int]
    HEAT_LIQUID_W_FIELD_NUMBER: _ClassVar[int]
    HEAT_AIR_W_FIELD_NUMBER: _ClassVar[int]
    AC_TOTAL_W_FIELD_NUMBER: _ClassVar[int]
    GPU_TEMP_MAX_C_FIELD_NUMBER: _ClassVar[int]
    GPU_TEMP_MEAN_C_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_GPUS_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_PFLOPS_FIELD_NUMBER: _ClassVar[int]
    GPU_POWER_W_FIELD_NUMBER: _ClassVar[int]
    RACK_OUTLET_MEAN_C_FIELD_NUMBER: _ClassVar[int]
    QUANTITIES_FIELD_NUMBER: _ClassVar[int]
    RACK_AC_MODEL_W_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    time_s: float
    rack_ac_w: _common_pb2.FloatArray
    heat_liquid_w: _containers.RepeatedScalarFieldContainer[float]
    heat_air_w: float
    ac_total_w: float
    gpu_temp_max_c: float
    gpu_temp_mean_c: float
    throttled_gpus: int
    delivered_pflops: float
    gpu_power_w: float
    rack_outlet_mean_c: float
    quantities: _containers.ScalarMap[str, float]
    rack_ac_model_w: _common_pb2.FloatArray
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., time_s: _Optional[float] = ..., rack_ac_w: _Optional[_Union[_common_pb2.FloatArray, _Mapping]] = ..., heat_liquid_w: _Optional[_Iterable[float]] = ..., heat_air_w: _Optional[float] = ..., ac_total_w: _Optional[float] = ..., gpu_temp_max_c: _Optional[float] = ..., gpu_temp_mean_c: _Optional[float] = ..., throttled_gpus: _Optional[int] = ..., delivered_pflops: _Optional[float] = ..., gpu_power_w: _Optional[float] = ..., rack_outlet_mean_c: _Optional[float] = ..., quantities: _Optional[_Mapping[str, float]] = ..., rack_ac_model_w: _Optional[_Union[_common_pb2.FloatArray, _Mapping]] = ...) -> None: ...

class TrainingJob(_message.Message):
    __slots__ = ("name", "racks", "iteration_s", "compute_fraction", "compute_util", "comm_util", "checkpoint_every_s", "checkpoint_s", "checkpoint_util")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RACKS_FIELD_NUMBER: _ClassVar[int]
    ITERATION_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_UTIL_FIELD_NUMBER: _ClassVar[int]
    COMM_UTIL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_S_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_S_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_UTIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    racks: int
    iteration_s: float
    compute_fraction: float
    compute_util: float
    comm_util: float
    checkpoint_every_s: float
    checkpoint_s: float
    checkpoint_util: float
    def __init__(self, name: _Optional[str] = ..., racks: _Optional[int] = ..., iteration_s: _Optional[float] = ..., compute_fraction: _Optional[float] = ..., compute_util: _Optional[float] = ..., comm_util: _Optional[float] = ..., checkpoint_every_s: _Optional[float] = ..., checkpoint_s: _Optional[float] = ..., checkpoint_util: _Optional[float] = ...) -> None: ...

class RackCap(_message.Message):
    __slots__ = ("rack", "cap_w")
    RACK_FIELD_NUMBER: _ClassVar[int]
    CAP_W_FIELD_NUMBER: _ClassVar[int]
    rack: _common_pb2.RackRef
    cap_w: float
    def __init__(self, rack: _Optional[_Union[_common_pb2.RackRef, _Mapping]] = ..., cap_w: _Optional[float] = ...) -> None: ...

class ComputeConfig(_message.Message):
    __slots__ = ("run_id", "step", "slots", "cdus", "racks", "gpus", "rack_full_load_w", "all_racks_cap_w", "rack_caps", "training_jobs")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CDUS_FIELD_NUMBER: _ClassVar[int]
    RACKS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    RACK_FULL_LOAD_W_FIELD_NUMBER: _ClassVar[int]
    ALL_RACKS_CAP_W_FIELD_NUMBER: _ClassVar[int]
    RACK_CAPS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_JOBS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    slots: int
    cdus: int
    racks: int
    gpus: int
    rack_full_load_w: _common_pb2.FloatArray
    all_racks_cap_w: float
    rack_caps: _containers.RepeatedCompositeFieldContainer[RackCap]
    training_jobs: _containers.RepeatedCompositeFieldContainer[TrainingJob]
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., slots: _Optional[int] = ..., cdus: _Optional[int] = ..., racks: _Optional[int] = ..., gpus: _Optional[int] = ..., rack_full_load_w: _Optional[_Union[_common_pb2.FloatArray, _Mapping]] = ..., all_racks_cap_w: _Optional[float] = ..., rack_caps: _Optional[_Iterable[_Union[RackCap, _Mapping]]] = ..., training_jobs: _Optional[_Iterable[_Union[TrainingJob, _Mapping]]] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ComputeState
    def __init__(self, state: _Optional[_Union[ComputeState, _Mapping]] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: ComputeConfig
    def __init__(self, config: _Optional[_Union[ComputeConfig, _Mapping]] = ...) -> None: ...

class SetRackCap(_message.Message):
    __slots__ = ("rack", "cap_w")
    RACK_FIELD_NUMBER: _ClassVar[int]
    CAP_W_FIELD_NUMBER: _ClassVar[int]
    rack: _common_pb2.RackRef
    cap_w: float
    def __init__(self, rack: _Optional[_Union[_common_pb2.RackRef, _Mapping]] = ..., cap_w: _Optional[float] = ...) -> None: ...

class SetAllRackCaps(_message.Message):
    __slots__ = ("cap_w",)
    CAP_W_FIELD_NUMBER: _ClassVar[int]
    cap_w: float
    def __init__(self, cap_w: _Optional[float] = ...) -> None: ...

class ClearRackCaps(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateTrainingJob(_message.Message):
    __slots__ = ("name", "iteration_s", "compute_fraction", "compute_util", "comm_util", "checkpoint_util")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ITERATION_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_UTIL_FIELD_NUMBER: _ClassVar[int]
    COMM_UTIL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_UTIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    iteration_s: float
    compute_fraction: float
    compute_util: float
    comm_util: float
    checkpoint_util: float
    def __init__(self, name: _Optional[str] = ..., iteration_s: _Optional[float] = ..., compute_fraction: _Optional[float] = ..., compute_util: _Optional[float] = ..., comm_util: _Optional[float] = ..., checkpoint_util: _Optional[float] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("set_rack_cap", "set_all_rack_caps", "clear_rack_caps", "update_training_job")
    SET_RACK_CAP_FIELD_NUMBER: _ClassVar[int]
    SET_ALL_RACK_CAPS_FIELD_NUMBER: _ClassVar[int]
    CLEAR_RACK_CAPS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    set_rack_cap: SetRackCap
    set_all_rack_caps: SetAllRackCaps
    clear_rack_caps: ClearRackCaps
    update_training_job: UpdateTrainingJob
    def __init__(self, set_rack_cap: _Optional[_Union[SetRackCap, _Mapping]] = ..., set_all_rack_caps: _Optional[_Union[SetAllRackCaps, _Mapping]] = ..., clear_rack_caps: _Optional[_Union[ClearRackCaps, _Mapping]] = ..., update_training_job: _Optional[_Union[UpdateTrainingJob, _Mapping]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("effective", "config")
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    effective: _common_pb2.Tick
    config: ComputeConfig
    def __init__(self, effective: _Optional[_Union[_common_pb2.Tick, _Mapping]] = ..., config: _Optional[_Union[ComputeConfig, _Mapping]] = ...) -> None: ...
