from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetAvailabilityRequest(_message.Message):
    __slots__ = ("sku", "channel", "location_id")
    SKU_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    sku: str
    channel: str
    location_id: str
    def __init__(self, sku: _Optional[str] = ..., channel: _Optional[str] = ..., location_id: _Optional[str] = ...) -> None: ...

class BatchGetAvailabilityRequest(_message.Message):
    __slots__ = ("skus", "channel")
    SKUS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    skus: _containers.RepeatedScalarFieldContainer[str]
    channel: str
    def __init__(self, skus: _Optional[_Iterable[str]] = ..., channel: _Optional[str] = ...) -> None: ...

class BatchGetAvailabilityResponse(_message.Message):
    __slots__ = ("channel", "items")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    channel: str
    items: _containers.RepeatedCompositeFieldContainer[Availability]
    def __init__(self, channel: _Optional[str] = ..., items: _Optional[_Iterable[_Union[Availability, _Mapping]]] = ...) -> None: ...

class WatchAvailabilityRequest(_message.Message):
    __slots__ = ("skus", "channel", "location_ids", "low_stock", "min_delta")
    SKUS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LOCATION_IDS_FIELD_NUMBER: _ClassVar[int]
    LOW_STOCK_FIELD_NUMBER: _ClassVar[int]
    MIN_DELTA_FIELD_NUMBER: _ClassVar[int]
    skus: _containers.RepeatedScalarFieldContainer[str]
    channel: str
    location_ids: _containers.RepeatedScalarFieldContainer[str]
    low_stock: int
    min_delta: int
    def __init__(self, skus: _Optional[_Iterable[str]] = ..., channel: _Optional[str] = ..., location_ids: _Optional[_Iterable[str]] = ..., low_stock: _Optional[int] = ..., min_delta: _Optional[int] = ...) -> None: ...

class WatchAvailabilityResponse(_message.Message):
    __slots__ = ("availability", "version", "initial")
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    availability: Availability
    version: int
    initial: bool
    def __init__(self, availability: _Optional[_Union[Availability, _Mapping]] = ..., version: _Optional[int] = ..., initial: _Optional[bool] = ...) -> None: ...

class Availability(_message.Message):
    __slots__ = ("sku", "channel", "ats", "locations")
    SKU_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ATS_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    sku: str
    channel: str
    ats: int
    locations: _containers.RepeatedCompositeFieldContainer[LocationAvailability]
    def __init__(self, sku: _Optional[str] = ..., channel: _Optional[str] = ..., ats: _Optional[int] = ..., locations: _Optional[_Iterable[_Union[LocationAvailability, _Mapping]]] = ...) -> None: ...

class LocationAvailability(_message.Message):
    __slots__ = ("location_id", "on_hand", "reserved", "in_transit", "damaged", "safety_stock", "buffer", "ats")
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    IN_TRANSIT_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    BUFFER_FIELD_NUMBER: _ClassVar[int]
    ATS_FIELD_NUMBER: _ClassVar[int]
    location_id: str
    on_hand: int
    reserved: int
    in_transit: int
    damaged: int
    safety_stock: int
    buffer: int
    ats: int
    def __init__(self, location_id: _Optional[str] = ..., on_hand: _Optional[int] = ..., reserved: _Optional[int] = ..., in_transit: _Optional[int] = ..., damaged: _Optional[int] = ..., safety_stock: _Optional[int] = ..., buffer: _Optional[int] = ..., ats: _Optional[int] = ...) -> None: ...
