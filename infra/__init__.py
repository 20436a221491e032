"""The layer the worker, the APIs and the operator CLI stand on: configuration
(``config``), logging (``logs``), Redis access (``store``), Kafka clients (``kafka``,
``topics``) and the rules log (``rules_log``). It imports the domain
(``availability``) and nothing above it."""
