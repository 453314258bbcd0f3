"""All configuration of every OKR Ledger process, read once from `OKR_*` environment variables.

Nothing else in the code base reads `os.environ`: processes build a `Settings` at start and pass
it down, so a test can run a whole process against other settings without patching globals.
"""

from __future__ import annotations

import os
import socket
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.access.keys import ApiKeysError, parse_inline_keys
from services.access.principals import check_principal_name
from services.stores import is_postgres, postgres_location, sqlite_path

if TYPE_CHECKING:
    from faststream.security import BaseSecurity

ENV_PREFIX = "OKR_"
DEFAULT_EVENT_STORE_URL = "sqlite:///var/events.sqlite"
DEFAULT_READ_STORE_URL = "sqlite:///var/read.sqlite"


class KafkaSecurityProtocol(StrEnum):
    """The protocols Kafka clients speak; SASL mechanisms ride on the SASL_* ones."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class SettingsError(Exception):
    """Raised at start when a variable is invalid; its message names each offending variable."""


def _validate_store_url(value: str) -> str:
    if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        return value
    if value.startswith(("postgresql://", "postgres://")):
        return value
    raise ValueError("must be sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DBNAME")


class Settings(BaseSettings):
    """Every knob of the service; each field maps to `OKR_<FIELD NAME IN UPPER CASE>`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    kafka_security_protocol: KafkaSecurityProtocol = KafkaSecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: SaslMechanism = SaslMechanism.PLAIN
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")

    topic_prefix: str = Field(
        "", description="Prepended to every topic name, so environments can share a cluster."
    )
    topic_partitions: int = Field(6, ge=1, le=1000, description="Partitions of new topics.")
    topic_replication_factor: int = Field(1, ge=1, le=10)
    topic_min_insync_replicas: int = Field(
        1,
        ge=1,
        le=10,
        description="`min.insync.replicas` of new topics: a write with acks=all is refused "
        "unless this many replicas have it (2 with a replication factor of 3).",
    )

    event_store_url: str = Field(
        DEFAULT_EVENT_STORE_URL, description="System of record: sqlite:///PATH or postgresql://…"
    )
    read_store_url: str = Field(
        DEFAULT_READ_STORE_URL, description="Projections: sqlite:///PATH or postgresql://…"
    )

    aggregate_cache_size: int = Field(
        10_000,
        ge=0,
        description="Objectives kept in memory (0: none), so a busy one is not replayed.",
    )
    snapshot_interval: int = Field(
        200, ge=1, description="Store a snapshot every N events of an objective."
    )
    scorer_window_ms: int = Field(
        75,
        ge=0,
        le=60_000,
        description="Least time between the starts of two scorer batches. Each batch records one "
        "progress event per key result it moved, each relayed, projected and audited: a longer "
        "window means fewer events (at most 1000/N per key result a second) and more latency "
        "(docs/decisions/0013, 0014). An idle scorer scores the first records after a pause "
        "at once.",
    )
    scorer_workers: int = Field(
        2,
        ge=1,
        le=64,
        description="Worker processes that prepare big scorer batches, each its own batch "
        "(docs/decisions/0014). They work only on a backlog (batches of "
        "OKR_SCORER_WORKER_FROM records or more); on 2 cores, 2 workers scored a "
        "200,000-event backlog at 145-152k events/s, 1 worker at 98-126k.",
    )
    scorer_worker_from: int = Field(
        2_000,
        ge=0,
        description="Batches of at least this many records are read and summed up in a worker "
        "process while the scorer saves the previous batch (docs/decisions/0014); 0 never starts "
        "the worker. Smaller batches are prepared in the scorer, where the crossing costs more "
        "than it saves.",
    )
    serve_runs_scorer: bool = Field(
        True,
        description="`okr serve` also scores kpi.events; false when `okr scorer` runs as its own "
        "process (the deployment for live KPI latency: docs/decisions/0012).",
    )

    stale_after_days: float = Field(
        14, gt=0, description="A key result with no update for this long is reported stale."
    )
    pace_on_track: float = Field(0.7, ge=0, le=10, description="Score/expected ratio: on track.")
    pace_at_risk: float = Field(0.5, ge=0, le=10, description="Score/expected ratio: at risk.")

    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)

    api_keys_file: Path = Field(
        Path("var/api-keys.json"),
        description="API keys file (JSON list of principal, role, sha256); re-read on change.",
    )
    api_keys: str = Field(
        "", description="More API keys, fixed at start: principal:role:sha256hex, comma-separated."
    )
    kafka_command_principals: str = Field(
        "",
        description="Comma-separated principals whose commands okr.commands accepts (the "
        "`principal` header); empty: none.",
    )
    demo_api_key: SecretStr | None = Field(
        None, description="The key `okr demo` sends; without one it adds its own to the file."
    )
    max_body_bytes: int = Field(
        1_048_576,
        ge=1,
        description="Largest HTTP request body accepted; a larger one gets 413 unread.",
    )
    health_interval_s: float = Field(
        5.0,
        ge=0.1,
        le=3600,
        description="Seconds between two rounds of the health monitor (Kafka, both stores, lag); "
        "GET /health and GET /metrics answer from its last round, never probing per request.",
    )
    health_max_per_s: float = Field(
        200.0,
        gt=0,
        description="GET /health answers at most this many times a second (this many at once); "
        "past it each answer waits its turn, up to 2 s, then 429: a flood of callers cannot "
        "take the process's time from the writes.",
    )
    instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="This process's name in a fleet, which /health shows as the holder of the "
        "relay lock (63 bytes of it on PostgreSQL); default host:pid.",
    )

    audit_log_origin: str = Field(
        "okr-ledger.local/events",
        min_length=1,
        max_length=200,
        pattern=r"^[^\s+]+$",
        description="The transparency log's origin, the first line of every checkpoint: a name "
        "unique to this deployment (a host and path you own), so an auditor cannot mistake one "
        "ledger's checkpoints for another's.",
    )
    audit_signing_key_file: Path = Field(
        Path("var/audit-signing.key"),
        description="Ed25519 key that signs checkpoints; created with mode 600 at first use. "
        "Retired keys' verifier keys are kept beside it in <file>.verifiers.",
    )
    audit_signing_key: SecretStr | None = Field(
        None,
        description="The signing key itself (PRIVATE+KEY+name+id+base64), instead of the file.",
    )
    checkpoint_every_events: int = Field(
        1000, ge=1, description="Sign a checkpoint once this many events joined the log."
    )
    checkpoint_every_s: float = Field(
        60.0,
        gt=0,
        description="Sign a checkpoint at least this often while events join the log.",
    )

    local_kafka_version: str = Field("4.1.1", pattern=r"^\d+\.\d+\.\d+$")
    local_kafka_port: int = Field(9092, ge=1, le=65535)
    local_kafka_controller_port: int = Field(9093, ge=1, le=65535)
    local_kafka_data_dir: Path = Path("var/kafka")
    local_kafka_cache_dir: Path = Field(
        Path.home() / ".cache" / "okr-ledger" / "kafka",
        description="Where the resolved Kafka jars are kept, outside git.",
    )
    local_kafka_heap: str | None = Field(
        None,
        pattern=r"^\d+[kmg]$",
        description="JVM heap of each local Kafka node; default 1g alone, 384m in a cluster.",
    )
    kafka_home: Path | None = Field(
        None,
        validation_alias=AliasChoices("KAFKA_HOME", "OKR_KAFKA_HOME"),
        description="An unpacked Apache Kafka distribution to run instead of resolving jars.",
    )

    @field_validator("event_store_url", "read_store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        return _validate_store_url(value)

    @field_validator("topic_min_insync_replicas")
    @classmethod
    def _min_insync_replicas(cls, value: int, info: ValidationInfo) -> int:
        replicas = info.data.get("topic_replication_factor")
        if replicas is not None and value > replicas:
            raise ValueError(
                f"{value} is more than OKR_TOPIC_REPLICATION_FACTOR ({replicas}): every write "
                "with acks=all would be refused"
            )
        return value

    @field_validator("api_keys")
    @classmethod
    def _inline_api_keys(cls, value: str) -> str:
        try:
            parse_inline_keys(value)
        except ApiKeysError as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("kafka_command_principals")
    @classmethod
    def _command_principals(cls, value: str) -> str:
        for name in value.split(","):
            if name.strip():
                check_principal_name(name.strip())
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    def event_store_env(self) -> dict[str, str]:
        """The environment eventsourcing reads, rendered from our settings (nowhere else)."""
        env = {
            "MAPPER_TOPIC": "services.commands.event_store:PydanticMapper",
            "TRANSCODER_TOPIC": "services.commands.event_store:OrjsonTranscoder",
            "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
            "IS_SNAPSHOTTING_ENABLED": "y",
        }
        if self.aggregate_cache_size:
            # eventsourcing reads 0 as "unbounded", so "no cache" means leaving the key out.
            env["AGGREGATE_CACHE_MAXSIZE"] = str(self.aggregate_cache_size)
        if is_postgres(self.event_store_url):
            location = postgres_location(self.event_store_url)
            env |= {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "APPLICATION_RECORDER_TOPIC": (
                    "services.commands.event_store:PostgresReceiptRecorder"
                ),
                "POSTGRES_HOST": location.host,
                "POSTGRES_PORT": str(location.port),
                "POSTGRES_USER": location.user,
                "POSTGRES_PASSWORD": location.password,
                "POSTGRES_DBNAME": location.dbname,
                "POSTGRES_POOL_SIZE": "5",
                "POSTGRES_MAX_OVERFLOW": "10",
            }
        else:
            path = sqlite_path(self.event_store_url)
            path.parent.mkdir(parents=True, exist_ok=True)
            env |= {
                "PERSISTENCE_MODULE": "services.commands.event_store:CheckpointedSQLiteFactory",
                "APPLICATION_RECORDER_TOPIC": "services.commands.event_store:SQLiteReceiptRecorder",
                "SQLITE_DBNAME": str(path),
                "SQLITE_LOCK_TIMEOUT": "30",
            }
        return env

    def consumer_group(self, name: str) -> str:
        """Group ids carry the topic prefix, so environments sharing a cluster never share one."""
        return f"{self.topic_prefix}{name}"

    @property
    def instance(self) -> str:
        """`instance_id`, else host:pid: unique among the processes that share a store."""
        return self.instance_id or f"{socket.gethostname()}:{os.getpid()}"

    def topic(self, name: str) -> str:
        """The concrete topic name for a logical one (see `events.topics`)."""
        return f"{self.topic_prefix}{name}"

    def kafka_security(self) -> BaseSecurity | None:
        """The FastStream security object; `kafka_client_options` derives aiokafka's from it."""
        from faststream.security import (
            BaseSecurity,
            SASLPlaintext,
            SASLScram256,
            SASLScram512,
        )

        protocol = self.kafka_security_protocol
        if protocol is KafkaSecurityProtocol.PLAINTEXT:
            return None
        use_ssl = protocol in (KafkaSecurityProtocol.SSL, KafkaSecurityProtocol.SASL_SSL)
        ssl_context = self._ssl_context() if use_ssl else None
        if protocol is KafkaSecurityProtocol.SSL:
            return BaseSecurity(ssl_context=ssl_context, use_ssl=True)
        username = self.kafka_sasl_username or ""
        password = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
        sasl_class = {
            SaslMechanism.PLAIN: SASLPlaintext,
            SaslMechanism.SCRAM_SHA_256: SASLScram256,
            SaslMechanism.SCRAM_SHA_512: SASLScram512,
        }[self.kafka_sasl_mechanism]
        return sasl_class(username, password, ssl_context=ssl_context, use_ssl=use_ssl)

    def kafka_bootstrap_list(self) -> list[str]:
        """The brokers as a list: FastStream takes a string for ONE address, so a cluster's
        comma-separated list must be split before it reaches any client."""
        return [server.strip() for server in self.kafka_bootstrap_servers.split(",")]

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        from faststream.kafka.security import parse_security

        options: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap_list()}
        options.update(parse_security(self.kafka_security()))
        return options

    def _ssl_context(self) -> Any:
        from aiokafka.helpers import create_ssl_context

        return create_ssl_context(
            cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None,
            certfile=str(self.kafka_ssl_certfile) if self.kafka_ssl_certfile else None,
            keyfile=str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
        )


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; an invalid value becomes a `SettingsError` naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None


def describe_validation_error(error: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"])
        lines.append(f"  {ENV_PREFIX}{field.upper()}: {problem['msg']}")
    return "\n".join(lines)
