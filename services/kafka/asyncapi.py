"""The AsyncAPI document of every Kafka channel the service reads or writes, from the contracts.

FastStream derives AsyncAPI from a broker's subscribers and publishers, so this module declares a
broker that is never started: one endpoint per channel, each typed with its `events/` contract,
so the document and the wire models cannot drift apart. This is FastStream's place in the
service (docs/decisions/0026-one-kafka-consumer.md): the consumers themselves run on aiokafka
through `services.kafka.consumer`, and take raw records (bad JSON must reach them to be
dead-lettered), which FastStream could only document as an empty payload.

By default the document is the contract (logical topic names, the default broker); given a
deployment's settings it names that deployment's prefixed topics and brokers.
"""

from __future__ import annotations

import json
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic.json_schema import models_json_schema

from events import topics
from events.audit import SignedCheckpoint
from events.commands import Command, CommandResult
from events.dead_letters import DeadLetter
from events.kpi import KpiEvent
from events.okr import PAYLOADS, OkrEventEnvelope
from projections.projector import PROJECTOR_GROUP
from services.kafka.groups import COMMAND_HANDLER_GROUP, PRINCIPAL_HEADER, SCORER_GROUP
from services.settings import Settings

TITLE = "OKR Ledger"
VERSION = "0.1.0"
DESCRIPTION = (
    "Event-sourced objectives and key results. Other services send commands on okr.commands and "
    "read their outcome on okr.command-results; every stored decision is published on okr.events."
)
CONTRACT_BOOTSTRAP_SERVERS: str = Settings.model_fields["kafka_bootstrap_servers"].default
SCHEMA_REF = "#/components/schemas/{model}"


def describing_broker(topic_prefix: str = "", bootstrap_servers: str | None = None) -> KafkaBroker:
    """A broker that only describes: its handlers never run and it is never connected."""
    servers = (bootstrap_servers or CONTRACT_BOOTSTRAP_SERVERS).split(",")
    broker = KafkaBroker(
        [server.strip() for server in servers],
        description="The Kafka cluster OKR Ledger and its clients share.",
    )

    def topic(name: str) -> str:
        return f"{topic_prefix}{name}"

    @broker.subscriber(
        topic(topics.COMMANDS),
        title="commands",
        description=(
            "Commands from other services, keyed by objective id (events.commands.Command), "
            f"consumed by group {COMMAND_HANDLER_GROUP}. Each carries a `principal` header "
            "naming the sending service, which must be on the service's allow-list "
            "(OKR_KAFKA_COMMAND_PRINCIPALS) and is recorded as the actor. Each readable one gets "
            "a result on okr.command-results (rejected `unknown_principal` or `impersonation` "
            "when the sender may not act); a message that is not a command goes to okr.dlq."
        ),
    )
    async def handle_command(command: Command) -> None:
        """Described only; services.commands.consumer handles the real messages."""

    @broker.subscriber(
        topic(topics.EVENTS),
        title="events-projector",
        description=(
            f"The projector (group {PROJECTOR_GROUP}) reads every OKR event into the read models, "
            "deduplicating on (objective_id, version)."
        ),
    )
    async def project_event(event: OkrEventEnvelope) -> None:
        """Described only; the projector handles the real messages."""

    @broker.subscriber(
        topic(topics.KPI_EVENTS),
        title="kpi-events",
        description=(
            "KPI observations from other services, keyed by kpi_key (events.kpi.KpiEvent), "
            f"deduplicated on event_id. The scorer (group {SCORER_GROUP}) rescores the key "
            "results bound to each KPI; a message that breaks the contract goes to okr.dlq."
        ),
    )
    async def score_kpi_event(event: KpiEvent) -> None:
        """Described only; the scorer handles the real messages."""

    broker.publisher(
        topic(topics.COMMAND_RESULTS),
        title="command-results",
        description="The outcome of every readable command, keyed by command id.",
        schema=CommandResult,
    )
    broker.publisher(
        topic(topics.EVENTS),
        title="events",
        description=(
            "Every stored decision, keyed by objective id, in version order per objective, "
            "published at least once by the outbox relay. `payload` follows the schema named by "
            "`type` in components/schemas (events.okr.PAYLOADS), at `schema_version`. Retained "
            "forever: projections replay it from offset 0."
        ),
        schema=OkrEventEnvelope,
    )
    broker.publisher(
        topic(topics.DEAD_LETTERS),
        title="dead-letters",
        description=(
            "Messages no consumer can ever process, with the reason and their origin (topic, "
            "partition, offset); keyed like the original message."
        ),
        schema=DeadLetter,
    )
    broker.publisher(
        topic(topics.AUDIT_CHECKPOINTS),
        title="audit-checkpoints",
        description=(
            "Signed checkpoints of the transparency log over every stored event (docs/decisions/"
            "0020): the value is a C2SP tlog-checkpoint (origin, tree size, base64 RFC 6962 root) "
            "wrapped as a C2SP signed-note with an Ed25519 signature, UTF-8 text; the key is the "
            "log's origin; header `tree_size`. Published at least once, retained forever: "
            "auditors keep them and check later trees against them (`okr audit check`)."
        ),
        schema=SignedCheckpoint,
    )
    return broker


def asyncapi_document(
    topic_prefix: str = "", bootstrap_servers: str | None = None
) -> dict[str, Any]:
    """The document as JSON-ready data: the contract by default, else one deployment's view."""
    broker = describing_broker(topic_prefix, bootstrap_servers)
    specification = AsyncAPI(broker, title=TITLE, version=VERSION, description=DESCRIPTION)
    document: dict[str, Any] = specification.to_specification().to_jsonable()
    _add_event_payload_schemas(document)
    _add_command_headers(document)
    return _in_stable_order(document)


def asyncapi_json(topic_prefix: str = "", bootstrap_servers: str | None = None) -> str:
    """The document as committed in docs/asyncapi.json (stable formatting, final newline)."""
    document = asyncapi_document(topic_prefix, bootstrap_servers)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def deployment_asyncapi_json(settings: Settings) -> str:
    """The document with the topic names and brokers this deployment uses."""
    return asyncapi_json(settings.topic_prefix, settings.kafka_bootstrap_servers)


def _in_stable_order(document: dict[str, Any]) -> dict[str, Any]:
    """FastStream lists endpoints in an order that varies between processes (it goes through a
    set), which would make every regeneration a diff: the named maps are sorted by name."""

    def by_name(mapping: dict[str, Any]) -> dict[str, Any]:
        return dict(sorted(mapping.items()))

    for key in ("channels", "operations"):
        if key in document:
            document[key] = by_name(document[key])
    components = document.get("components", {})
    for key in ("messages", "schemas"):
        if key in components:
            components[key] = by_name(components[key])
    return document


COMMAND_HEADERS: dict[str, Any] = {
    "type": "object",
    "required": [PRINCIPAL_HEADER],
    "properties": {
        PRINCIPAL_HEADER: {
            "type": "string",
            "description": (
                "The service sending the command (UTF-8). It must be on the allow-list "
                "(OKR_KAFKA_COMMAND_PRINCIPALS), else the command is rejected with "
                "`unknown_principal`; it is the recorded actor, and a command whose `actor` "
                "names anyone else is rejected with `impersonation`."
            ),
        }
    },
}


def _add_command_headers(document: dict[str, Any]) -> None:
    """FastStream documents payloads only; the principal header of commands is added here."""
    messages = document.get("components", {}).get("messages", {})
    for name, message in messages.items():
        if name.startswith("commands:"):
            message["headers"] = COMMAND_HEADERS


def _add_event_payload_schemas(document: dict[str, Any]) -> None:
    """The envelope's `payload` is an object whose model depends on `type`; FastStream cannot
    see that, so each payload model is added beside the envelope under its type name."""
    _, definitions = models_json_schema(
        [(payload, "validation") for payload in PAYLOADS.values()], ref_template=SCHEMA_REF
    )
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in definitions["$defs"].items():
        if name in schemas and schemas[name] != schema:
            raise ValueError(f"two different schemas are named {name!r}")
        schemas[name] = schema
