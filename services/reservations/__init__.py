"""The reservation API's logic, shared by HTTP (and gRPC): ``ReservationService``."""
