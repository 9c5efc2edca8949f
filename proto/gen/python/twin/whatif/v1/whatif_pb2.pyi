import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Granularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANULARITY_UNSPECIFIED: _ClassVar[Granularity]
    GRANULARITY_RACK: _ClassVar[Granularity]
    GRANULARITY_GPU: _ClassVar[Granularity]

class StudyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STUDY_STATE_UNSPECIFIED: _ClassVar[StudyState]
    STUDY_STATE_RUNNING: _ClassVar[StudyState]
    STUDY_STATE_DONE: _ClassVar[StudyState]
    STUDY_STATE_FAILED: _ClassVar[StudyState]

class Objective(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECTIVE_UNSPECIFIED: _ClassVar[Objective]
    OBJECTIVE_FACILITY_ENERGY: _ClassVar[Objective]
    OBJECTIVE_COST: _ClassVar[Objective]
    OBJECTIVE_EMISSIONS: _ClassVar[Objective]

class FailureSweep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_SWEEP_UNSPECIFIED: _ClassVar[FailureSweep]
    FAILURE_SWEEP_MONTE_CARLO: _ClassVar[FailureSweep]
    FAILURE_SWEEP_N_MINUS_1: _ClassVar[FailureSweep]
    FAILURE_SWEEP_N_MINUS_2: _ClassVar[FailureSweep]
GRANULARITY_UNSPECIFIED: Granularity
GRANULARITY_RACK: Granularity
GRANULARITY_GPU: Granularity
STUDY_STATE_UNSPECIFIED: StudyState
STUDY_STATE_RUNNING: StudyState
STUDY_STATE_DONE: StudyState
STUDY_STATE_FAILED: StudyState
OBJECTIVE_UNSPECIFIED: Objective
OBJECTIVE_FACILITY_ENERGY: Objective
OBJECTIVE_COST: Objective
OBJECTIVE_EMISSIONS: Objective
FAILURE_SWEEP_UNSPECIFIED: FailureSweep
FAILURE_SWEEP_MONTE_CARLO: FailureSweep
FAILURE_SWEEP_N_MINUS_1: FailureSweep
FAILURE_SWEEP_N_MINUS_2: FailureSweep

class Scenario(_message.Message):
    __slots__ = ("name", "yaml")
    NAME_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    name: str
    yaml: str
    def __init__(self, name: _Optional[str] = ..., yaml: _Optional[str] = ...) -> None: ...

class Override(_message.Message):
    __slots__ = ("path", "value", "append")
    PATH_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    APPEND_FIELD_NUMBER: _ClassVar[int]
    path: str
    value: str
    append: bool
    def __init__(self, path: _Optional[str] = ..., value: _Optional[str] = ..., append: _Optional[bool] = ...) -> None: ...

class GridAxis(_message.Message):
    __slots__ = ("path", "values", "range")
    PATH_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    path: str
    values: _containers.RepeatedScalarFieldContainer[str]
    range: str
    def __init__(self, path: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ..., range: _Optional[str] = ...) -> None: ...

class Variant(_message.Message):
    __slots__ = ("name", "overrides")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    name: str
    overrides: _containers.RepeatedCompositeFieldContainer[Override]
    def __init__(self, name: _Optional[str] = ..., overrides: _Optional[_Iterable[_Union[Override, _Mapping]]] = ...) -> None: ...

class Constraints(_message.Message):
    __slots__ = ("max_gpu_temp_c", "max_ramp_mw_per_s", "ignore_interconnect")
    MAX_GPU_TEMP_C_FIELD_NUMBER: _ClassVar[int]
    MAX_RAMP_MW_PER_S_FIELD_NUMBER: _ClassVar[int]
    IGNORE_INTERCONNECT_FIELD_NUMBER: _ClassVar[int]
    max_gpu_temp_c: float
    max_ramp_mw_per_s: float
    ignore_interconnect: bool
    def __init__(self, max_gpu_temp_c: _Optional[float] = ..., max_ramp_mw_per_s: _Optional[float] = ..., ignore_interconnect: _Optional[bool] = ...) -> None: ...

class StudySpec(_message.Message):
    __slots__ = ("name", "scenario", "duration", "dt", "record_every", "granularity", "base", "vary", "variants", "constraints", "series", "series_every", "float64")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    DT_FIELD_NUMBER: _ClassVar[int]
    RECORD_EVERY_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    VARY_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    SERIES_EVERY_FIELD_NUMBER: _ClassVar[int]
    FLOAT64_FIELD_NUMBER: _ClassVar[int]
    name: str
    scenario: Scenario
    duration: str
    dt: str
    record_every: str
    granularity: Granularity
    base: _containers.RepeatedCompositeFieldContainer[Override]
    vary: _containers.RepeatedCompositeFieldContainer[GridAxis]
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    constraints: Constraints
    series: _containers.RepeatedScalarFieldContainer[str]
    series_every: str
    float64: bool
    def __init__(self, name: _Optional[str] = ..., scenario: _Optional[_Union[Scenario, _Mapping]] = ..., duration: _Optional[str] = ..., dt: _Optional[str] = ..., record_every: _Optional[str] = ..., granularity: _Optional[_Union[Granularity, str]] = ..., base: _Optional[_Iterable[_Union[Override, _Mapping]]] = ..., vary: _Optional[_Iterable[_Union[GridAxis, _Mapping]]] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., constraints: _Optional[_Union[Constraints, _Mapping]] = ..., series: _Optional[_Iterable[str]] = ..., series_every: _Optional[str] = ..., float64: _Optional[bool] = ...) -> None: ...

class RunStudyRequest(_message.Message):
    __slots__ = ("spec", "study_yaml")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STUDY_YAML_FIELD_NUMBER: _ClassVar[int]
    spec: StudySpec
    study_yaml: str
    def __init__(self, spec: _Optional[_Union[StudySpec, _Mapping]] = ..., study_yaml: _Optional[str] = ...) -> None: ...

class RunStudyResponse(_message.Message):
    __slots__ = ("accepted", "progress", "result")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    accepted: StudyAccepted
    progress: StudyProgress
    result: Study
    def __init__(self, accepted: _Optional[_Union[StudyAccepted, _Mapping]] = ..., progress: _Optional[_Union[StudyProgress, _Mapping]] = ..., result: _Optional[_Union[Study, _Mapping]] = ...) -> None: ...

class StudyAccepted(_message.Message):
    __slots__ = ("study_id", "variants")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    variants: int
    def __init__(self, study_id: _Optional[str] = ..., variants: _Optional[int] = ...) -> None: ...

class StudyProgress(_message.Message):
    __slots__ = ("study_id", "variants_done", "variants_total", "elapsed_s")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_DONE_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    variants_done: float
    variants_total: int
    elapsed_s: float
    def __init__(self, study_id: _Optional[str] = ..., variants_done: _Optional[float] = ..., variants_total: _Optional[int] = ..., elapsed_s: _Optional[float] = ...) -> None: ...

class ConstraintCheck(_message.Message):
    __slots__ = ("name", "value", "limit", "passed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    limit: float
    passed: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., limit: _Optional[float] = ..., passed: _Optional[bool] = ...) -> None: ...

class SeriesValues(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class VariantResult(_message.Message):
    __slots__ = ("name", "overrides", "racks", "gpus", "kpis", "deltas", "constraints", "passed", "series")
    class KpisEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class DeltasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    RACKS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    KPIS_FIELD_NUMBER: _ClassVar[int]
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    overrides: _containers.RepeatedCompositeFieldContainer[Override]
    racks: int
    gpus: int
    kpis: _containers.ScalarMap[str, float]
    deltas: _containers.ScalarMap[str, float]
    constraints: _containers.RepeatedCompositeFieldContainer[ConstraintCheck]
    passed: bool
    series: _containers.RepeatedCompositeFieldContainer[SeriesValues]
    def __init__(self, name: _Optional[str] = ..., overrides: _Optional[_Iterable[_Union[Override, _Mapping]]] = ..., racks: _Optional[int] = ..., gpus: _Optional[int] = ..., kpis: _Optional[_Mapping[str, float]] = ..., deltas: _Optional[_Mapping[str, float]] = ..., constraints: _Optional[_Iterable[_Union[ConstraintCheck, _Mapping]]] = ..., passed: _Optional[bool] = ..., series: _Optional[_Iterable[_Union[SeriesValues, _Mapping]]] = ...) -> None: ...

class Study(_message.Message):
    __slots__ = ("study_id", "name", "site_id", "state", "duration_s", "dt_s", "variants", "wall_s", "error", "created_at", "kpi_units", "study_yaml")
    class KpiUnitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    DT_S_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    KPI_UNITS_FIELD_NUMBER: _ClassVar[int]
    STUDY_YAML_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    name: str
    site_id: str
    state: StudyState
    duration_s: float
    dt_s: float
    variants: _containers.RepeatedCompositeFieldContainer[VariantResult]
    wall_s: float
    error: str
    created_at: _timestamp_pb2.Timestamp
    kpi_units: _containers.ScalarMap[str, str]
    study_yaml: str
    def __init__(self, study_id: _Optional[str] = ..., name: _Optional[str] = ..., site_id: _Optional[str] = ..., state: _Optional[_Union[StudyState, str]] = ..., duration_s: _Optional[float] = ..., dt_s: _Optional[float] = ..., variants: _Optional[_Iterable[_Union[VariantResult, _Mapping]]] = ..., wall_s: _Optional[float] = ..., error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kpi_units: _Optional[_Mapping[str, str]] = ..., study_yaml: _Optional[str] = ...) -> None: ...

class GetStudyRequest(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class GetStudyResponse(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: Study
    def __init__(self, study: _Optional[_Union[Study, _Mapping]] = ...) -> None: ...

class ListStudiesRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class StudySummary(_message.Message):
    __slots__ = ("study_id", "name", "site_id", "state", "variants", "created_at", "wall_s")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    name: str
    site_id: str
    state: StudyState
    variants: int
    created_at: _timestamp_pb2.Timestamp
    wall_s: float
    def __init__(self, study_id: _Optional[str] = ..., name: _Optional[str] = ..., site_id: _Optional[str] = ..., state: _Optional[_Union[StudyState, str]] = ..., variants: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., wall_s: _Optional[float] = ...) -> None: ...

class ListStudiesResponse(_message.Message):
    __slots__ = ("studies",)
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    studies: _containers.RepeatedCompositeFieldContainer[StudySummary]
    def __init__(self, studies: _Optional[_Iterable[_Union[StudySummary, _Mapping]]] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("scenario", "overrides", "duration", "dt", "float64")
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    DT_FIELD_NUMBER: _ClassVar[int]
    FLOAT64_FIELD_NUMBER: _ClassVar[int]
    scenario: Scenario
    overrides: _containers.RepeatedCompositeFieldContainer[Override]
    duration: str
    dt: str
    float64: bool
    def __init__(self, scenario: _Optional[_Union[Scenario, _Mapping]] = ..., overrides: _Optional[_Iterable[_Union[Override, _Mapping]]] = ..., duration: _Optional[str] = ..., dt: _Optional[str] = ..., float64: _Optional[bool] = ...) -> None: ...

class SensitivitiesRequest(_message.Message):
    __slots__ = ("rollout", "kpis", "parameters")
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    KPIS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    kpis: _containers.RepeatedScalarFieldContainer[str]
    parameters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ..., kpis: _Optional[_Iterable[str]] = ..., parameters: _Optional[_Iterable[str]] = ...) -> None: ...

class KpiGradient(_message.Message):
    __slots__ = ("kpi", "value", "gradient")
    class GradientEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    KPI_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    kpi: str
    value: float
    gradient: _containers.ScalarMap[str, float]
    def __init__(self, kpi: _Optional[str] = ..., value: _Optional[float] = ..., gradient: _Optional[_Mapping[str, float]] = ...) -> None: ...

class SensitivitiesResponse(_message.Message):
    __slots__ = ("at", "kpis")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    AT_FIELD_NUMBER: _ClassVar[int]
    KPIS_FIELD_NUMBER: _ClassVar[int]
    at: _containers.ScalarMap[str, float]
    kpis: _containers.RepeatedCompositeFieldContainer[KpiGradient]
    def __init__(self, at: _Optional[_Mapping[str, float]] = ..., kpis: _Optional[_Iterable[_Union[KpiGradient, _Mapping]]] = ...) -> None: ...

class Bound(_message.Message):
    __slots__ = ("parameter", "lower", "upper")
    PARAMETER_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    parameter: str
    lower: float
    upper: float
    def __init__(self, parameter: _Optional[str] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ...) -> None: ...

class OptimizeRequest(_message.Message):
    __slots__ = ("rollout", "objective", "bounds", "constraints", "iterations")
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    objective: Objective
    bounds: _containers.RepeatedCompositeFieldContainer[Bound]
    constraints: Constraints
    iterations: int
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ..., objective: _Optional[_Union[Objective, str]] = ..., bounds: _Optional[_Iterable[_Union[Bound, _Mapping]]] = ..., constraints: _Optional[_Union[Constraints, _Mapping]] = ..., iterations: _Optional[int] = ...) -> None: ...

class OptimizeResponse(_message.Message):
    __slots__ = ("start", "start_objective", "best", "best_objective", "feasible", "constraints", "objective_trace")
    class StartEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class BestEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    START_FIELD_NUMBER: _ClassVar[int]
    START_OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    BEST_OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_TRACE_FIELD_NUMBER: _ClassVar[int]
    start: _containers.ScalarMap[str, float]
    start_objective: float
    best: _containers.ScalarMap[str, float]
    best_objective: float
    feasible: bool
    constraints: _containers.RepeatedCompositeFieldContainer[ConstraintCheck]
    objective_trace: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, start: _Optional[_Mapping[str, float]] = ..., start_objective: _Optional[float] = ..., best: _Optional[_Mapping[str, float]] = ..., best_objective: _Optional[float] = ..., feasible: _Optional[bool] = ..., constraints: _Optional[_Iterable[_Union[ConstraintCheck, _Mapping]]] = ..., objective_trace: _Optional[_Iterable[float]] = ...) -> None: ...

class ClassRate(_message.Message):
    __slots__ = ("equipment", "mtbf_h", "mttr_h")
    EQUIPMENT_FIELD_NUMBER: _ClassVar[int]
    MTBF_H_FIELD_NUMBER: _ClassVar[int]
    MTTR_H_FIELD_NUMBER: _ClassVar[int]
    equipment: str
    mtbf_h: float
    mttr_h: float
    def __init__(self, equipment: _Optional[str] = ..., mtbf_h: _Optional[float] = ..., mttr_h: _Optional[float] = ...) -> None: ...

class RunMonteCarloRequest(_message.Message):
    __slots__ = ("scenario", "sweep", "samples", "seed", "duration", "dt", "record_every", "classes", "rates", "float64")
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    DT_FIELD_NUMBER: _ClassVar[int]
    RECORD_EVERY_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    RATES_FIELD_NUMBER: _ClassVar[int]
    FLOAT64_FIELD_NUMBER: _ClassVar[int]
    scenario: Scenario
    sweep: FailureSweep
    samples: int
    seed: int
    duration: str
    dt: str
    record_every: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    rates: _containers.RepeatedCompositeFieldContainer[ClassRate]
    float64: bool
    def __init__(self, scenario: _Optional[_Union[Scenario, _Mapping]] = ..., sweep: _Optional[_Union[FailureSweep, str]] = ..., samples: _Optional[int] = ..., seed: _Optional[int] = ..., duration: _Optional[str] = ..., dt: _Optional[str] = ..., record_every: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., rates: _Optional[_Iterable[_Union[ClassRate, _Mapping]]] = ..., float64: _Optional[bool] = ...) -> None: ...

class MetricDistribution(_message.Message):
    __slots__ = ("metric", "unit", "mean", "ci95", "p50", "p95", "p99")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    CI95_FIELD_NUMBER: _ClassVar[int]
    P50_FIELD_NUMBER: _ClassVar[int]
    P95_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    metric: str
    unit: str
    mean: float
    ci95: float
    p50: float
    p95: float
    p99: float
    def __init__(self, metric: _Optional[str] = ..., unit: _Optional[str] = ..., mean: _Optional[float] = ..., ci95: _Optional[float] = ..., p50: _Optional[float] = ..., p95: _Optional[float] = ..., p99: _Optional[float] = ...) -> None: ...

class EquipmentContribution(_message.Message):
    __slots__ = ("equipment", "throttled_gpu_hours", "lost_eflop", "unit_hours_down", "share")
    EQUIPMENT_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_GPU_HOURS_FIELD_NUMBER: _ClassVar[int]
    LOST_EFLOP_FIELD_NUMBER: _ClassVar[int]
    UNIT_HOURS_DOWN_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    equipment: str
    throttled_gpu_hours: float
    lost_eflop: float
    unit_hours_down: float
    share: float
    def __init__(self, equipment: _Optional[str] = ..., throttled_gpu_hours: _Optional[float] = ..., lost_eflop: _Optional[float] = ..., unit_hours_down: _Optional[float] = ..., share: _Optional[float] = ...) -> None: ...

class ClassUnavailability(_message.Message):
    __slots__ = ("equipment", "sampled", "analytic")
    EQUIPMENT_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    ANALYTIC_FIELD_NUMBER: _ClassVar[int]
    equipment: str
    sampled: float
    analytic: float
    def __init__(self, equipment: _Optional[str] = ..., sampled: _Optional[float] = ..., analytic: _Optional[float] = ...) -> None: ...

class SweepCase(_message.Message):
    __slots__ = ("name", "failed", "metrics", "critical")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    failed: _containers.RepeatedScalarFieldContainer[str]
    metrics: _containers.ScalarMap[str, float]
    critical: bool
    def __init__(self, name: _Optional[str] = ..., failed: _Optional[_Iterable[str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., critical: _Optional[bool] = ...) -> None: ...

class RunMonteCarloResponse(_message.Message):
    __slots__ = ("name", "site_id", "sweep", "duration_s", "dt_s", "base", "distributions", "contributions", "unavailability", "cases", "wall_s")
    class BaseEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    DT_S_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    CASES_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    site_id: str
    sweep: FailureSweep
    duration_s: float
    dt_s: float
    base: _containers.ScalarMap[str, float]
    distributions: _containers.RepeatedCompositeFieldContainer[MetricDistribution]
    contributions: _containers.RepeatedCompositeFieldContainer[EquipmentContribution]
    unavailability: _containers.RepeatedCompositeFieldContainer[ClassUnavailability]
    cases: _containers.RepeatedCompositeFieldContainer[SweepCase]
    wall_s: float
    def __init__(self, name: _Optional[str] = ..., site_id: _Optional[str] = ..., sweep: _Optional[_Union[FailureSweep, str]] = ..., duration_s: _Optional[float] = ..., dt_s: _Optional[float] = ..., base: _Optional[_Mapping[str, float]] = ..., distributions: _Optional[_Iterable[_Union[MetricDistribution, _Mapping]]] = ..., contributions: _Optional[_Iterable[_Union[EquipmentContribution, _Mapping]]] = ..., unavailability: _Optional[_Iterable[_Union[ClassUnavailability, _Mapping]]] = ..., cases: _Optional[_Iterable[_Union[SweepCase, _Mapping]]] = ..., wall_s: _Optional[float] = ...) -> None: ...
