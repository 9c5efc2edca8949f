import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from twin.whatif.v1 import whatif_pb2 as _whatif_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CalibrationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALIBRATION_STATE_UNSPECIFIED: _ClassVar[CalibrationState]
    CALIBRATION_STATE_RUNNING: _ClassVar[CalibrationState]
    CALIBRATION_STATE_DONE: _ClassVar[CalibrationState]
    CALIBRATION_STATE_FAILED: _ClassVar[CalibrationState]
CALIBRATION_STATE_UNSPECIFIED: CalibrationState
CALIBRATION_STATE_RUNNING: CalibrationState
CALIBRATION_STATE_DONE: CalibrationState
CALIBRATION_STATE_FAILED: CalibrationState

class Parameter(_message.Message):
    __slots__ = ("path", "lower", "upper")
    PATH_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    path: str
    lower: float
    upper: float
    def __init__(self, path: _Optional[str] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ...) -> None: ...

class RunWindow(_message.Message):
    __slots__ = ("run_id", "start_s", "end_s")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    start_s: float
    end_s: float
    def __init__(self, run_id: _Optional[str] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ...) -> None: ...

class Series(_message.Message):
    __slots__ = ("quantity", "values")
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    quantity: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, quantity: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class MeasuredSeries(_message.Message):
    __slots__ = ("step_s", "start_s", "series")
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    step_s: float
    start_s: float
    series: _containers.RepeatedCompositeFieldContainer[Series]
    def __init__(self, step_s: _Optional[float] = ..., start_s: _Optional[float] = ..., series: _Optional[_Iterable[_Union[Series, _Mapping]]] = ...) -> None: ...

class CalibrateRequest(_message.Message):
    __slots__ = ("scenario", "run", "series", "fit", "dt", "resolution", "stats", "noise", "max_iterations", "reference_dt")
    class NoiseEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    FIT_FIELD_NUMBER: _ClassVar[int]
    DT_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_DT_FIELD_NUMBER: _ClassVar[int]
    scenario: _whatif_pb2.Scenario
    run: RunWindow
    series: MeasuredSeries
    fit: _containers.RepeatedCompositeFieldContainer[Parameter]
    dt: str
    resolution: str
    stats: str
    noise: _containers.ScalarMap[str, float]
    max_iterations: int
    reference_dt: str
    def __init__(self, scenario: _Optional[_Union[_whatif_pb2.Scenario, _Mapping]] = ..., run: _Optional[_Union[RunWindow, _Mapping]] = ..., series: _Optional[_Union[MeasuredSeries, _Mapping]] = ..., fit: _Optional[_Iterable[_Union[Parameter, _Mapping]]] = ..., dt: _Optional[str] = ..., resolution: _Optional[str] = ..., stats: _Optional[str] = ..., noise: _Optional[_Mapping[str, float]] = ..., max_iterations: _Optional[int] = ..., reference_dt: _Optional[str] = ...) -> None: ...

class CalibrateResponse(_message.Message):
    __slots__ = ("accepted", "progress", "result")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    accepted: CalibrationAccepted
    progress: CalibrationProgress
    result: Calibration
    def __init__(self, accepted: _Optional[_Union[CalibrationAccepted, _Mapping]] = ..., progress: _Optional[_Union[CalibrationProgress, _Mapping]] = ..., result: _Optional[_Union[Calibration, _Mapping]] = ...) -> None: ...

class CalibrationAccepted(_message.Message):
    __slots__ = ("calibration_id",)
    CALIBRATION_ID_FIELD_NUMBER: _ClassVar[int]
    calibration_id: str
    def __init__(self, calibration_id: _Optional[str] = ...) -> None: ...

class CalibrationProgress(_message.Message):
    __slots__ = ("calibration_id", "iteration", "max_iterations", "cost", "parameters", "elapsed_s")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CALIBRATION_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    calibration_id: str
    iteration: int
    max_iterations: int
    cost: float
    parameters: _containers.ScalarMap[str, float]
    elapsed_s: float
    def __init__(self, calibration_id: _Optional[str] = ..., iteration: _Optional[int] = ..., max_iterations: _Optional[int] = ..., cost: _Optional[float] = ..., parameters: _Optional[_Mapping[str, float]] = ..., elapsed_s: _Optional[float] = ...) -> None: ...

class Estimate(_message.Message):
    __slots__ = ("path", "start", "value", "std_error", "identifiable", "lower", "upper", "at_bound", "step_correction")
    PATH_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STD_ERROR_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIABLE_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    AT_BOUND_FIELD_NUMBER: _ClassVar[int]
    STEP_CORRECTION_FIELD_NUMBER: _ClassVar[int]
    path: str
    start: float
    value: float
    std_error: float
    identifiable: bool
    lower: float
    upper: float
    at_bound: bool
    step_correction: float
    def __init__(self, path: _Optional[str] = ..., start: _Optional[float] = ..., value: _Optional[float] = ..., std_error: _Optional[float] = ..., identifiable: _Optional[bool] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., at_bound: _Optional[bool] = ..., step_correction: _Optional[float] = ...) -> None: ...

class FitStats(_message.Message):
    __slots__ = ("n", "cv_rmse_pct", "nmbe_pct", "r2")
    N_FIELD_NUMBER: _ClassVar[int]
    CV_RMSE_PCT_FIELD_NUMBER: _ClassVar[int]
    NMBE_PCT_FIELD_NUMBER: _ClassVar[int]
    R2_FIELD_NUMBER: _ClassVar[int]
    n: int
    cv_rmse_pct: float
    nmbe_pct: float
    r2: float
    def __init__(self, n: _Optional[int] = ..., cv_rmse_pct: _Optional[float] = ..., nmbe_pct: _Optional[float] = ..., r2: _Optional[float] = ...) -> None: ...

class QuantityFit(_message.Message):
    __slots__ = ("quantity", "before", "after")
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    quantity: str
    before: FitStats
    after: FitStats
    def __init__(self, quantity: _Optional[str] = ..., before: _Optional[_Union[FitStats, _Mapping]] = ..., after: _Optional[_Union[FitStats, _Mapping]] = ...) -> None: ...

class Calibration(_message.Message):
    __slots__ = ("calibration_id", "site_id", "run_id", "state", "created_at", "window_start_s", "window_offset_s", "step_s", "duration_s", "stats_s", "estimates", "fits", "warnings", "iterations", "converged", "cost_before", "cost_after", "site_yaml", "wall_s", "error")
    CALIBRATION_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_OFFSET_S_FIELD_NUMBER: _ClassVar[int]
    STEP_S_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    STATS_S_FIELD_NUMBER: _ClassVar[int]
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    FITS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    COST_BEFORE_FIELD_NUMBER: _ClassVar[int]
    COST_AFTER_FIELD_NUMBER: _ClassVar[int]
    SITE_YAML_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    calibration_id: str
    site_id: str
    run_id: str
    state: CalibrationState
    created_at: _timestamp_pb2.Timestamp
    window_start_s: float
    window_offset_s: float
    step_s: float
    duration_s: float
    stats_s: float
    estimates: _containers.RepeatedCompositeFieldContainer[Estimate]
    fits: _containers.RepeatedCompositeFieldContainer[QuantityFit]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    iterations: int
    converged: bool
    cost_before: float
    cost_after: float
    site_yaml: str
    wall_s: float
    error: str
    def __init__(self, calibration_id: _Optional[str] = ..., site_id: _Optional[str] = ..., run_id: _Optional[str] = ..., state: _Optional[_Union[CalibrationState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_start_s: _Optional[float] = ..., window_offset_s: _Optional[float] = ..., step_s: _Optional[float] = ..., duration_s: _Optional[float] = ..., stats_s: _Optional[float] = ..., estimates: _Optional[_Iterable[_Union[Estimate, _Mapping]]] = ..., fits: _Optional[_Iterable[_Union[QuantityFit, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ..., iterations: _Optional[int] = ..., converged: _Optional[bool] = ..., cost_before: _Optional[float] = ..., cost_after: _Optional[float] = ..., site_yaml: _Optional[str] = ..., wall_s: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class GetCalibrationRequest(_message.Message):
    __slots__ = ("calibration_id",)
    CALIBRATION_ID_FIELD_NUMBER: _ClassVar[int]
    calibration_id: str
    def __init__(self, calibration_id: _Optional[str] = ...) -> None: ...

class GetCalibrationResponse(_message.Message):
    __slots__ = ("calibration",)
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    calibration: Calibration
    def __init__(self, calibration: _Optional[_Union[Calibration, _Mapping]] = ...) -> None: ...

class ListCalibrationsRequest(_message.Message):
    __slots__ = ("run_id", "limit")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    limit: int
    def __init__(self, run_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListCalibrationsResponse(_message.Message):
    __slots__ = ("calibrations",)
    CALIBRATIONS_FIELD_NUMBER: _ClassVar[int]
    calibrations: _containers.RepeatedCompositeFieldContainer[Calibration]
    def __init__(self, calibrations: _Optional[_Iterable[_Union[Calibration, _Mapping]]] = ...) -> None: ...
