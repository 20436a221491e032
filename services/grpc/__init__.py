"""The gRPC API (contract section 7): ``python -m services.grpc``.

``server`` serves ``availability.v1.AvailabilityService`` with ``grpc.aio`` plus the
standard health and reflection services; ``messages`` holds the pure parts (request
validation, answer <-> message conversion); ``gen`` the code generated from
``proto/`` by ``make protos``.
"""
