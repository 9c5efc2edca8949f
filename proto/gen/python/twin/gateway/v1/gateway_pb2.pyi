from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("site_id", "accepted", "rejected", "published", "held", "substituted", "ticks", "batches", "restarts", "ahead")
    class RejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    SUBSTITUTED_FIELD_NUMBER: _ClassVar[int]
    TICKS_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    AHEAD_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    accepted: int
    rejected: _containers.ScalarMap[str, int]
    published: int
    held: int
    substituted: int
    ticks: int
    batches: int
    restarts: int
    ahead: int
    def __init__(self, site_id: _Optional[str] = ..., accepted: _Optional[int] = ..., rejected: _Optional[_Mapping[str, int]] = ..., published: _Optional[int] = ..., held: _Optional[int] = ..., substituted: _Optional[int] = ..., ticks: _Optional[int] = ..., batches: _Optional[int] = ..., restarts: _Optional[int] = ..., ahead: _Optional[int] = ...) -> None: ...
