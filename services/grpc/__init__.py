"""The gRPC API (contract section 7): ``python -m services.grpc``.

``server`` serves ``availability.v1.AvailabilityService`` with ``grpc.aio`` plus the
standard health and reflection services; ``access`` checks every call's credential
and scope (an interceptor); ``tls`` sets up TLS and mutual TLS; ``connections`` the
keepalive and the size and concurrency limits; ``watch`` feeds ``WatchAvailability``;
``messages`` holds the pure parts (request decoding and validation, answer <->
message conversion); ``gen`` the code generated from ``proto/`` by ``make protos``.
"""
