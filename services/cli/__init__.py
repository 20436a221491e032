"""Operator commands: ``python -m services.cli`` (or the ``availability-ops`` script)."""
