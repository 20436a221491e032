"""The one configuration object, read from ``AVAILABILITY_*`` environment variables.

Contract variables (CONTRACT.md section 8) come first; the rest tune the stream
processor. Their defaults are the values a production Kafka wants; the development
stack (``dev.stack``) overrides the few that the development broker needs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.shopify_config import ShopifyTarget


class ApiKeySpec(BaseModel):
    """One static API key as configured: its id (the subject the audit records), the
    SHA-256 of the key (never the key itself) and its scopes (README "Security")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9._:@-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    scopes: tuple[str, ...]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AVAILABILITY_", extra="ignore")

    # --- contract (section 8) ---
    broker: str = "kafka://127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    http_port: int = Field(default=8080, ge=1, le=65535)
    grpc_port: int = Field(default=50051, ge=1, le=65535)
    topic_prefix: str = ""
    # Redis connections per process; calls beyond wait up to 5 s for a free one.
    redis_max_connections: int = Field(default=200, ge=1)
    # Redis Cluster mode (README "Redis Cluster"): redis_url names one node of the
    # cluster, the others are discovered; every key carries its SKU as hash tag.
    redis_cluster: bool = False
    # Open WatchAvailability streams one gRPC server holds; more get RESOURCE_EXHAUSTED.
    grpc_max_watches: int = Field(default=10_000, ge=1)

    # --- Kafka security (README "Configuration", "Deploying") ---
    # How every Kafka client (the worker's Faust app, the APIs' producers, the push, the
    # CLI) connects: infra.kafka.kafka_client_options and faust_broker_credentials.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # SASL_*: the mechanism, the user and its password (the value, or a file holding
    # it: a mounted Secret, read when a client is built; exactly one of the two).
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_sasl_password_file: str = ""
    # SSL and SASL_SSL: the CA certificate(s) the brokers' certificates are checked
    # against (empty: the system's CAs), and a client certificate and its key (PEM,
    # both or neither; the key's password when it is encrypted).
    kafka_ssl_ca_file: str = ""
    kafka_ssl_cert_file: str = ""
    kafka_ssl_key_file: str = ""
    kafka_ssl_key_password: SecretStr = SecretStr("")

    # --- access control (README "Security") ---
    # false: callers without a credential get every scope (behind an authenticating
    # gateway only); a credential that is sent is still verified.
    auth_required: bool = True
    # Static API keys, as a JSON list of {"id", "sha256", "scopes"}, and/or a file of
    # the same list (a mounted Secret), read at start.
    auth_api_keys: list[ApiKeySpec] = Field(default_factory=list)
    auth_api_keys_file: str = ""
    # OAuth2 client-credentials JWTs: the signing keys (a JWKS URL or file), and the
    # issuer and audience every token must name.
    auth_jwt_jwks_url: str = ""
    auth_jwt_jwks_file: str = ""
    auth_jwt_issuer: str = ""
    auth_jwt_audience: str = ""
    auth_jwt_algorithms: str = "RS256,ES256"
    auth_jwt_leeway: float = Field(default=30.0, ge=0, le=300)
    auth_jwks_refresh_interval: float = Field(default=300.0, ge=10)
    # The operator CLI's own credential (AVAILABILITY_TOKEN): its writes need the ops
    # scope, and the audit trail records its subject.
    token: SecretStr = SecretStr("")
    # /docs, /redoc and /openapi.json (open when served); /metrics open or behind
    # the metrics:read scope.
    http_docs: bool = True
    http_metrics_open: bool = True

    # --- gRPC server (README "gRPC API") ---
    # TLS: the server's certificate chain and private key (PEM files), both or neither
    # (neither: plaintext, for development). A client CA file too makes it mutual TLS:
    # every client must present a certificate that CA signed.
    grpc_tls_cert_file: str = ""
    grpc_tls_key_file: str = ""
    grpc_tls_client_ca_file: str = ""
    # The scopes of a call authenticated by its client certificate alone (space-separated;
    # a bearer token, when sent, is used instead). The default is what a POS terminal needs.
    grpc_client_cert_scopes: str = "availability:read availability:watch"
    # Server reflection (what grpcurl's list and describe use); open when on.
    grpc_reflection: bool = True
    # Open WatchAvailability streams per credential, beside grpc_max_watches per server.
    grpc_max_watches_per_identity: int = Field(default=1000, ge=1)
    # Calls in progress at once, watches included; more get RESOURCE_EXHAUSTED. Must
    # exceed grpc_max_watches, or a full watch cap would leave no room for reads.
    grpc_max_concurrent_rpcs: int = Field(default=12_000, ge=1)
    # The largest request accepted, in bytes (the largest valid one is about 200 KB).
    grpc_max_receive_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    # The server pings a connection that has been silent this many seconds and closes
    # it when the ping is not answered within the timeout: a terminal that vanished
    # without closing its connection gives its watches back within their sum.
    grpc_keepalive_time: float = Field(default=30.0, gt=0)
    grpc_keepalive_timeout: float = Field(default=10.0, gt=0)
    # Seconds a new watch waits for Redis to confirm its subscriptions (else UNAVAILABLE).
    grpc_watch_subscribe_timeout: float = Field(default=5.0, gt=0)

    # --- Shopify (README "Shopify") ---
    # The shops served: a JSON list of infra.shopify_config.ShopifyTarget.
    shopify_targets: list[ShopifyTarget] = Field(default_factory=list)

    # --- Shopify order webhooks (README "Shopify order webhooks") ---
    # Target name -> our location_id, for orders that name no location (online orders):
    # where their reservations are held. A target without one dead-letters such orders.
    shopify_webhook_default_locations: dict[str, str] = Field(default_factory=dict)
    # Seconds a delivered webhook id is remembered, to drop Shopify's repeats; longer
    # than Shopify's retries of one delivery (8 over about 4 hours).
    shopify_webhook_dedupe_ttl: int = Field(default=48 * 3600, ge=60)
    # Longest wait for the broker to acknowledge a webhook's events before answering
    # 503 (Shopify gives up on an answer after 5 s and retries).
    shopify_webhook_publish_timeout: float = Field(default=3.0, gt=0, le=4.5)

    # --- Shopify push (README "Shopify push") ---
    # The push process's Prometheus /metrics (0: not served).
    push_metrics_port: int = Field(default=9182, ge=0, le=65535)
    # Push policies in total (every push process and API replica holds them all).
    push_max_policies: int = Field(default=10_000, ge=1)
    # Calls under way at once per shop (the bucket paces them whatever this is).
    push_max_in_flight: int = Field(default=4, ge=1, le=64)
    # Seconds to wait for one answer from Shopify before the call is retried.
    push_call_timeout: float = Field(default=30.0, gt=0)
    # Seconds after a stale compare during which our figures may not raise the level
    # above what Shopify held (its sales reach our figures through the order webhooks).
    push_stale_hold: float = Field(default=30.0, ge=0)
    # Item ids are asked again after this many seconds; an unmapped SKU after the next.
    push_item_ttl: float = Field(default=86_400.0, gt=0)
    push_unmapped_retry: float = Field(default=600.0, gt=0)
    # A target stopped by 401/403 is tried again (its secret read anew) this often.
    push_stopped_retry: float = Field(default=300.0, gt=0)
    # Seconds between the push's status reports (Redis, for `push status`) and commits.
    push_status_interval: float = Field(default=1.0, gt=0)

    @property
    def push_policies_topic(self) -> str:
        """Source of truth for push policies: one partition, compacted, keyed by id."""
        return self.topic("availability.push_policies")

    @property
    def push_group(self) -> str:
        """The push processes' consumer group on the change feed."""
        return f"{self.faust_app_id}-push"

    # --- reservations (README "Reservations") ---
    # Seconds a hold counts while its reservation.created is not yet acknowledged by
    # the broker: should the API die between placing a hold and publishing it, the hold
    # is gone within this (the crash window). Longer than the publish timeout.
    reservation_publish_window: float = Field(default=30.0, ge=5, le=600)
    # Longest wait for the broker to acknowledge a reservation's events before the
    # request is answered 503 (and its holds taken back).
    reservation_publish_timeout: float = Field(default=3.0, gt=0, le=4.5)
    # Seconds a published hold counts while the worker has not folded its event (it
    # is handed over as soon as the worker has): the lead the API may have over a
    # lagging worker. Beyond it, the units count again only once the fold has them.
    reservation_handover_window: float = Field(default=120.0, ge=10, le=3600)
    # Seconds a reservation's record (for idempotent repeats and GET) is kept after
    # its expiry.
    reservation_record_ttl: float = Field(default=86_400.0, ge=60)

    # --- topics ---
    partitions: int = Field(default=8, ge=1, description="partitions of the topics we create")
    # Production defaults: three copies, and a write (acks=all) is acknowledged once two
    # have it, so one broker may be lost or restarted without losing or refusing writes.
    # The development stack sets 1 and 1 (dev.processes.DEV_OVERRIDES).
    replication_factor: int = Field(default=3, ge=1)
    min_insync_replicas: int = Field(default=2, ge=1)
    # Rules in total (every process holds them all); a PUT of a new one beyond is 409.
    max_rules: int = Field(default=10_000, ge=1)
    # How long the audit topic keeps its records (days; it is never compacted).
    audit_retention_days: int = Field(default=400, ge=1)

    # --- stream processor ---
    app_id: str = "availability"
    data_dir: str = ".data/worker"
    broker_session_timeout: float = Field(default=60.0, gt=0)
    broker_heartbeat_interval: float = Field(default=3.0, gt=0)
    # A group request (e.g. SyncGroup) that gets no answer is retried after this;
    # it must be at least the session timeout.
    broker_request_timeout: float = Field(default=90.0, gt=0)
    # Kafka's own default; Faust hard-codes 1500 ms, which the development broker
    # turns into seconds of latency.
    fetch_max_wait_ms: int = Field(default=500, ge=0)
    # 1 on the development broker: its end offsets are wrong after batched produce.
    producer_max_batch_size: int = Field(default=16384, ge=1)
    fold_batch_size: int = Field(default=1000, ge=1)
    fold_batch_within: float = Field(default=0.01, gt=0)
    fold_batch_max_wait: float = Field(default=0.05, ge=0)
    expiry_tick: float = Field(default=0.1, gt=0, description="seconds between expiry checks")
    heartbeat_interval: float = Field(default=1.0, gt=0, description="worker status to Redis")
    # Seconds between gc.freeze() calls in the worker (0: never); see streams.app.
    gc_freeze_interval: float = Field(default=10.0, ge=0)
    # The largest record the broker takes (Kafka's message.max.bytes, 1 MiB by
    # default): a dead letter whose original would not fit keeps only its start
    # (streams.dead_letters).
    dead_letter_max_bytes: int = Field(default=1024 * 1024, ge=16 * 1024)
    # Seconds an event's occurred_at or as_of may be ahead of the worker's clock;
    # later ones are dead-lettered (future_timestamp). Also how long a baseline must
    # be in the past before the sales it contains are forgotten (availability.state).
    max_future_skew: float = Field(default=300.0, ge=0)
    # Seconds after which closed and expired reservation lines and the ids of
    # transfers and damaged returns leave the state; events of those types older
    # than this are dead-lettered (too_old). README "State and recovery".
    state_horizon: float = Field(default=7 * 24 * 3600.0, gt=0)
    # A skipped offset range read directly (streams.partition_progress, README "Delivery
    # guarantees") is read in pieces of at most this many records / bytes, and
    # given up (logged, counted, and left to Kafka's redelivery) after this long.
    gap_read_max_records: int = Field(default=10_000, ge=1)
    gap_read_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    gap_read_timeout: float = Field(default=30.0, gt=0)
    ready_max_lag: int = Field(
        default=1000, ge=0, description="events behind that still count as caught up"
    )
    log_level: str = "info"
    # json: one JSON object per line (event_id and sku where they apply); text: for people.
    log_format: Literal["json", "text"] = "json"
    # Prometheus /metrics of a worker and of the gRPC server (0: not served). The HTTP
    # API serves its own on AVAILABILITY_HTTP_PORT.
    # The periodic drift check (python -m services.cli drift-job): off while 0 s.
    drift_interval: float = Field(default=0.0, ge=0)
    drift_export: str = ""
    drift_threshold: int = Field(default=0, ge=0)
    worker_metrics_port: int = Field(default=9180, ge=0, le=65535)
    grpc_metrics_port: int = Field(default=9181, ge=0, le=65535)

    @model_validator(mode="after")
    def _kafka_settings_agree(self) -> Settings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"AVAILABILITY_MIN_INSYNC_REPLICAS ({self.min_insync_replicas}) exceeds"
                f" AVAILABILITY_REPLICATION_FACTOR ({self.replication_factor}): no write"
                " with acks=all could ever be acknowledged"
            )
        if self.kafka_security_protocol.startswith("SASL_"):
            if not self.kafka_sasl_username:
                raise ValueError(
                    f"AVAILABILITY_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
                    " needs AVAILABILITY_KAFKA_SASL_USERNAME"
                )
            has_password = bool(self.kafka_sasl_password.get_secret_value())
            if has_password == bool(self.kafka_sasl_password_file):
                raise ValueError(
                    f"AVAILABILITY_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
                    " needs exactly one of AVAILABILITY_KAFKA_SASL_PASSWORD and"
                    " AVAILABILITY_KAFKA_SASL_PASSWORD_FILE"
                )
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise ValueError(
                "AVAILABILITY_KAFKA_SSL_CERT_FILE and AVAILABILITY_KAFKA_SSL_KEY_FILE"
                " go together (a client certificate and its key), both or neither"
            )
        return self

    @property
    def redis_url_shown(self) -> str:
        """``redis_url`` without its password, for messages and logs."""
        return redact_url(self.redis_url)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def redis_key_prefix(self) -> str:
        """Serving keys are namespaced by the topic prefix so that two deployments
        (or two test runs) can share one Redis without seeing each other."""
        return f"{self.topic_prefix}avail"

    @property
    def worker_status_max_age(self) -> float:
        """A worker status in Redis older than this (seconds) means the worker is gone."""
        return 3 * self.heartbeat_interval + 2

    @property
    def faust_app_id(self) -> str:
        """Consumer group and prefix of the processor's internal topics (changelogs)."""
        return f"{self.topic_prefix}{self.app_id}"

    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` for plain Kafka clients (scheme stripped)."""
        servers = []
        for part in self.broker.split(";"):
            for url in part.split(","):
                url = url.strip()
                if "://" in url:
                    url = url.split("://", 1)[1]
                if url:
                    servers.append(url.rstrip("/"))
        return ",".join(servers)

    # topic names (contract section 2, each with the prefix)
    @property
    def erp_topic(self) -> str:
        return self.topic("erp.balances")

    @property
    def pos_topic(self) -> str:
        return self.topic("pos.transactions")

    @property
    def transfers_topic(self) -> str:
        return self.topic("inventory.transfers")

    @property
    def reservations_topic(self) -> str:
        return self.topic("orders.reservations")

    @property
    def input_topics(self) -> tuple[str, ...]:
        return (self.erp_topic, self.pos_topic, self.transfers_topic, self.reservations_topic)

    @property
    def dlq_topic(self) -> str:
        return self.topic("availability.dlq")

    @property
    def dlq_replays_topic(self) -> str:
        """Which dead letters were replayed (``services.cli dead-letters replay``): one
        partition, compacted, keyed by the dead letter's ``<partition>:<offset>``."""
        return self.topic("availability.dlq.replays")

    @property
    def state_journal_topic(self) -> str:
        """The worker table's changelog: the journal of every SKU's state."""
        return f"{self.faust_app_id}-sku-state-changelog"

    @property
    def rekey_topic(self) -> str:
        """Internal: events whose Kafka key or partition does not match their sku."""
        return self.topic("availability.rekeyed")

    @property
    def changes_topic(self) -> str:
        """The change feed: every change of a serving record, keyed by SKU, compacted."""
        return self.topic("availability.changes")

    @property
    def partitioned_topics(self) -> tuple[str, ...]:
        """Every topic with ``partitions`` partitions, keyed (and partitioned) by SKU."""
        return (*self.input_topics, self.dlq_topic, self.rekey_topic, self.changes_topic)

    @property
    def rules_topic(self) -> str:
        """Source of truth for rules: one partition, compacted, keyed by rule_id."""
        return self.topic("availability.rules")

    @property
    def audit_topic(self) -> str:
        """Who changed which policy, and operators' actions: one partition, never
        compacted, kept ``audit_retention_days`` (``infra.audit``)."""
        return self.topic("availability.audit")


def redact_url(url: str) -> str:
    """``scheme://user:***@host...``: a URL's password replaced, the rest kept."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
