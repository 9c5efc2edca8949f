from twin.twin.v1 import clock_pb2 as _clock_pb2
from twin.twin.v1 import snapshot_pb2 as _snapshot_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartRequest(_message.Message):
    __slots__ = ("spec", "speed", "paused")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    spec: _clock_pb2.RunSpec
    speed: _clock_pb2.Speed
    paused: bool
    def __init__(self, spec: _Optional[_Union[_clock_pb2.RunSpec, _Mapping]] = ..., speed: _Optional[_Union[_clock_pb2.Speed, _Mapping]] = ..., paused: _Optional[bool] = ...) -> None: ...

class StartResponse(_message.Message):
    __slots__ = ("run_id", "site_id", "snapshot")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    site_id: str
    snapshot: _snapshot_pb2.SiteSnapshot
    def __init__(self, run_id: _Optional[str] = ..., site_id: _Optional[str] = ..., snapshot: _Optional[_Union[_snapshot_pb2.SiteSnapshot, _Mapping]] = ...) -> None: ...

class PauseRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class PauseResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.SiteSnapshot
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.SiteSnapshot, _Mapping]] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ResumeResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.SiteSnapshot
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.SiteSnapshot, _Mapping]] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("run_id", "ticks")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TICKS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    ticks: int
    def __init__(self, run_id: _Optional[str] = ..., ticks: _Optional[int] = ...) -> None: ...

class StepResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.SiteSnapshot
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.SiteSnapshot, _Mapping]] = ...) -> None: ...

class SetSpeedRequest(_message.Message):
    __slots__ = ("run_id", "speed")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    speed: _clock_pb2.Speed
    def __init__(self, run_id: _Optional[str] = ..., speed: _Optional[_Union[_clock_pb2.Speed, _Mapping]] = ...) -> None: ...

class SetSpeedResponse(_message.Message):
    __slots__ = ("speed",)
    SPEED_FIELD_NUMBER: _ClassVar[int]
    speed: _clock_pb2.Speed
    def __init__(self, speed: _Optional[_Union[_clock_pb2.Speed, _Mapping]] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class StopResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.SiteSnapshot
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.SiteSnapshot, _Mapping]] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetSnapshotResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.SiteSnapshot
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.SiteSnapshot, _Mapping]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("run_id", "every_steps")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    every_steps: int
    def __init__(self, run_id: _Optional[str] = ..., every_steps: _Optional[int] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.SiteSnapshot
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.SiteSnapshot, _Mapping]] = ...) -> None: ...
