from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReservationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESERVATION_STATUS_UNSPECIFIED: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_HELD: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_RELEASED: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_EXPIRED: _ClassVar[ReservationStatus]
RESERVATION_STATUS_UNSPECIFIED: ReservationStatus
RESERVATION_STATUS_HELD: ReservationStatus
RESERVATION_STATUS_RELEASED: ReservationStatus
RESERVATION_STATUS_EXPIRED: ReservationStatus

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

class ReserveRequest(_message.Message):
    __slots__ = ("reservation_id", "channel", "expires_in_s", "lines")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    channel: str
    expires_in_s: int
    lines: _containers.RepeatedCompositeFieldContainer[ReservationLine]
    def __init__(self, reservation_id: _Optional[str] = ..., channel: _Optional[str] = ..., expires_in_s: _Optional[int] = ..., lines: _Optional[_Iterable[_Union[ReservationLine, _Mapping]]] = ...) -> None: ...

class ReservationLine(_message.Message):
    __slots__ = ("sku", "quantity", "location_id")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    location_id: str
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ..., location_id: _Optional[str] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("reservation", "replayed")
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    reservation: Reservation
    replayed: bool
    def __init__(self, reservation: _Optional[_Union[Reservation, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("already_released",)
    ALREADY_RELEASED_FIELD_NUMBER: _ClassVar[int]
    already_released: bool
    def __init__(self, already_released: _Optional[bool] = ...) -> None: ...

class GetReservationRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class ExtendReservationRequest(_message.Message):
    __slots__ = ("reservation_id", "expires_in_s")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    expires_in_s: int
    def __init__(self, reservation_id: _Optional[str] = ..., expires_in_s: _Optional[int] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("reservation_id", "channel", "status", "created_at", "expires_at", "lines")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    channel: str
    status: ReservationStatus
    created_at: str
    expires_at: str
    lines: _containers.RepeatedCompositeFieldContainer[ReservationLine]
    def __init__(self, reservation_id: _Optional[str] = ..., channel: _Optional[str] = ..., status: _Optional[_Union[ReservationStatus, str]] = ..., created_at: _Optional[str] = ..., expires_at: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[ReservationLine, _Mapping]]] = ...) -> None: ...

class InsufficientStock(_message.Message):
    __slots__ = ("lines", "omitted_lines")
    LINES_FIELD_NUMBER: _ClassVar[int]
    OMITTED_LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[LineShortage]
    omitted_lines: int
    def __init__(self, lines: _Optional[_Iterable[_Union[LineShortage, _Mapping]]] = ..., omitted_lines: _Optional[int] = ...) -> None: ...

class LineShortage(_message.Message):
    __slots__ = ("line", "sku", "location_id", "asked", "available")
    LINE_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    ASKED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    line: int
    sku: str
    location_id: str
    asked: int
    available: int
    def __init__(self, line: _Optional[int] = ..., sku: _Optional[str] = ..., location_id: _Optional[str] = ..., asked: _Optional[int] = ..., available: _Optional[int] = ...) -> None: ...
