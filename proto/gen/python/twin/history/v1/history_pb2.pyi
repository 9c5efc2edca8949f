import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from twin.twin.v1 import deviation_pb2 as _deviation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Aggregate(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATE_UNSPECIFIED: _ClassVar[Aggregate]
    AGGREGATE_AVG: _ClassVar[Aggregate]
    AGGREGATE_MIN: _ClassVar[Aggregate]
    AGGREGATE_MAX: _ClassVar[Aggregate]
    AGGREGATE_LAST: _ClassVar[Aggregate]
    AGGREGATE_SUM: _ClassVar[Aggregate]
    AGGREGATE_PERCENTILE: _ClassVar[Aggregate]

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_UNSPECIFIED: _ClassVar[ExportFormat]
    EXPORT_FORMAT_CSV: _ClassVar[ExportFormat]
    EXPORT_FORMAT_PARQUET: _ClassVar[ExportFormat]
AGGREGATE_UNSPECIFIED: Aggregate
AGGREGATE_AVG: Aggregate
AGGREGATE_MIN: Aggregate
AGGREGATE_MAX: Aggregate
AGGREGATE_LAST: Aggregate
AGGREGATE_SUM: Aggregate
AGGREGATE_PERCENTILE: Aggregate
EXPORT_FORMAT_UNSPECIFIED: ExportFormat
EXPORT_FORMAT_CSV: ExportFormat
EXPORT_FORMAT_PARQUET: ExportFormat

class QueryRequest(_message.Message):
    __slots__ = ("site_id", "run_id", "metrics", "start_s", "end_s", "bucket_s", "aggregate", "percentile", "page_size", "page_token")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    BUCKET_S_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    run_id: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    start_s: float
    end_s: float
    bucket_s: float
    aggregate: Aggregate
    percentile: float
    page_size: int
    page_token: str
    def __init__(self, site_id: _Optional[str] = ..., run_id: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., bucket_s: _Optional[float] = ..., aggregate: _Optional[_Union[Aggregate, str]] = ..., percentile: _Optional[float] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Row(_message.Message):
    __slots__ = ("time_s", "values")
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    time_s: float
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, time_s: _Optional[float] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("metrics", "rows", "next_page_token")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[Row]
    next_page_token: str
    def __init__(self, metrics: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[Row, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("site_id", "page_size", "page_token")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    page_size: int
    page_token: str
    def __init__(self, site_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "site_id", "scenario", "started_at", "dt_s", "horizon_s", "status", "steps_stored")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DT_S_FIELD_NUMBER: _ClassVar[int]
    HORIZON_S_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STEPS_STORED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    site_id: str
    scenario: str
    started_at: _timestamp_pb2.Timestamp
    dt_s: float
    horizon_s: float
    status: str
    steps_stored: int
    def __init__(self, run_id: _Optional[str] = ..., site_id: _Optional[str] = ..., scenario: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dt_s: _Optional[float] = ..., horizon_s: _Optional[float] = ..., status: _Optional[str] = ..., steps_stored: _Optional[int] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CompareRunsRequest(_message.Message):
    __slots__ = ("site_id", "run_a", "run_b", "metrics", "start_s", "end_s", "bucket_s")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_A_FIELD_NUMBER: _ClassVar[int]
    RUN_B_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    BUCKET_S_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    run_a: str
    run_b: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    start_s: float
    end_s: float
    bucket_s: float
    def __init__(self, site_id: _Optional[str] = ..., run_a: _Optional[str] = ..., run_b: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., bucket_s: _Optional[float] = ...) -> None: ...

class MetricSummary(_message.Message):
    __slots__ = ("metric", "samples", "avg", "min", "max", "energy_mwh")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    AVG_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    ENERGY_MWH_FIELD_NUMBER: _ClassVar[int]
    metric: str
    samples: int
    avg: float
    min: float
    max: float
    energy_mwh: float
    def __init__(self, metric: _Optional[str] = ..., samples: _Optional[int] = ..., avg: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., energy_mwh: _Optional[float] = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("run_id", "dt_s", "steps", "metrics")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DT_S_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    dt_s: float
    steps: int
    metrics: _containers.RepeatedCompositeFieldContainer[MetricSummary]
    def __init__(self, run_id: _Optional[str] = ..., dt_s: _Optional[float] = ..., steps: _Optional[int] = ..., metrics: _Optional[_Iterable[_Union[MetricSummary, _Mapping]]] = ...) -> None: ...

class MetricDelta(_message.Message):
    __slots__ = ("metric", "avg", "min", "max", "energy_mwh")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    AVG_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    ENERGY_MWH_FIELD_NUMBER: _ClassVar[int]
    metric: str
    avg: float
    min: float
    max: float
    energy_mwh: float
    def __init__(self, metric: _Optional[str] = ..., avg: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., energy_mwh: _Optional[float] = ...) -> None: ...

class CompareRow(_message.Message):
    __slots__ = ("time_s", "a", "b")
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    time_s: float
    a: _containers.RepeatedScalarFieldContainer[float]
    b: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, time_s: _Optional[float] = ..., a: _Optional[_Iterable[float]] = ..., b: _Optional[_Iterable[float]] = ...) -> None: ...

class CompareRunsResponse(_message.Message):
    __slots__ = ("metrics", "a", "b", "deltas", "rows")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    a: RunSummary
    b: RunSummary
    deltas: _containers.RepeatedCompositeFieldContainer[MetricDelta]
    rows: _containers.RepeatedCompositeFieldContainer[CompareRow]
    def __init__(self, metrics: _Optional[_Iterable[str]] = ..., a: _Optional[_Union[RunSummary, _Mapping]] = ..., b: _Optional[_Union[RunSummary, _Mapping]] = ..., deltas: _Optional[_Iterable[_Union[MetricDelta, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[CompareRow, _Mapping]]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("site_id", "run_id", "metrics", "start_s", "end_s", "format", "chunk_bytes")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    run_id: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    start_s: float
    end_s: float
    format: ExportFormat
    chunk_bytes: int
    def __init__(self, site_id: _Optional[str] = ..., run_id: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., chunk_bytes: _Optional[int] = ...) -> None: ...

class ExportResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class QueryMeasuredRequest(_message.Message):
    __slots__ = ("site_id", "run_id", "entity", "quantity", "start_s", "end_s", "bucket_s")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    BUCKET_S_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    run_id: str
    entity: str
    quantity: str
    start_s: float
    end_s: float
    bucket_s: float
    def __init__(self, site_id: _Optional[str] = ..., run_id: _Optional[str] = ..., entity: _Optional[str] = ..., quantity: _Optional[str] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., bucket_s: _Optional[float] = ...) -> None: ...

class MeasuredRow(_message.Message):
    __slots__ = ("time_s", "measured", "modelled")
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    MEASURED_FIELD_NUMBER: _ClassVar[int]
    MODELLED_FIELD_NUMBER: _ClassVar[int]
    time_s: float
    measured: float
    modelled: float
    def __init__(self, time_s: _Optional[float] = ..., measured: _Optional[float] = ..., modelled: _Optional[float] = ...) -> None: ...

class QueryMeasuredResponse(_message.Message):
    __slots__ = ("entity", "quantity", "modelled", "rows")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    MODELLED_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    entity: str
    quantity: str
    modelled: str
    rows: _containers.RepeatedCompositeFieldContainer[MeasuredRow]
    def __init__(self, entity: _Optional[str] = ..., quantity: _Optional[str] = ..., modelled: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[MeasuredRow, _Mapping]]] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("run_id", "kinds")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_id: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "kind", "time_s", "body_json", "deviation")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    BODY_JSON_FIELD_NUMBER: _ClassVar[int]
    DEVIATION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    kind: str
    time_s: float
    body_json: str
    deviation: _deviation_pb2.Deviation
    def __init__(self, event_id: _Optional[str] = ..., kind: _Optional[str] = ..., time_s: _Optional[float] = ..., body_json: _Optional[str] = ..., deviation: _Optional[_Union[_deviation_pb2.Deviation, _Mapping]] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...
