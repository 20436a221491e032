"""Load tests and benchmarks of the availability service (``make bench-grpc``)."""
