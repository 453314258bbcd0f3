"""The Kafka command path: `okr.commands` in, one outcome per message out.

Result or dead letter, the rule:

- A message gets a *result* on `okr.command-results` (key = command id) when it names whom to
  answer: a JSON object whose `schema_version` is 1 (or absent), whose `body.type` is a command
  the contract defines, and whose `command_id` is a string of 1 to 200 characters. Such a message
  is a command even when it may not be applied, and nothing is written for a refused one:
  - first, who sends it: its `principal` header must name a principal of the allow-list
    (`OKR_KAFKA_COMMAND_PRINCIPALS`), else it is `rejected` with `unknown_principal`, before
    anything else is looked at; the principal is the recorded actor, and an `actor` field that
    names anyone else is `rejected` with `impersonation` (leaving it out is the normal case).
  - then its fields: an invalid one (a bad date, an empty title) is `rejected` with
    `invalid_command` and every problem, as the HTTP API answers 422. Domain refusals
    (unmeasurable key result, stale `expected_version`, unknown objective...) are `rejected` with
    the code `services.commands.rejections.reject` gives; success is `accepted` with the version.
  The header is only as trustworthy as the permission to write `okr.commands`: Kafka ACLs (SASL
  principals) must keep other clients off the topic (docs/decisions/0010-api-keys.md).
- A message gets a *dead letter* on `okr.dlq` when it is not a command at all, so nobody could be
  answered. Checked in this order, the first failure is the reason: no value (`empty`), not UTF-8
  JSON (`not_json`), not an object (`not_an_object`), `schema_version` other than 1
  (`unsupported_schema_version`), `body.type` missing or unknown (`unknown_type`), no usable
  `command_id` (`missing_id`). A command whose processing raises an error that is neither a
  refusal nor an outage (a bug of ours) is dead-lettered as `processing_failed`, so one message
  cannot stall its partition.

The envelope's `objective_id` is authoritative; the Kafka key (the objective id) only routes, so
all commands of an objective are handled in order by one consumer.

Delivery is at-least-once, made effectively-once by the receipts: the offset is committed only
after Kafka acknowledged the result or dead letter. A command redelivered after a crash is applied
once: its receipt, stored in the transaction of its events, makes `OkrApplication.handle` return
the first response with `replayed=true`, which is published again. Outages (event store or Kafka
unreachable) are retried in place with backoff, in order, never skipped. docs/decisions/0003.

It runs on the service's one Kafka consumer (`services.kafka.consumer`, docs/decisions/0005 and
0026): a fetched batch is processed record by record, each partition in offset order, and each
record's offset is committed (in the background, one commit in flight) once its outcome is
acknowledged. Its positions are Kafka's committed offsets: what a crash or a rebalance hands out
again is answered from the receipts. A record's headers reach it as Kafka sent them, binary or
null values included; it publishes through an idempotent `acks=all` producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from itertools import count
from typing import Any, get_args

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from events.commands import SCHEMA_VERSION, Command, CommandResult, Issue
from events.dead_letters import DeadLetterReason
from events.topics import COMMAND_RESULTS, COMMANDS
from projections.backoff import Backoff, Outage
from projections.failures import is_transient
from projections.job_health import current_job
from services.access.principals import AccessError, ImpersonationError, UnknownPrincipalError
from services.commands.application import OkrApplication
from services.commands.rejections import REJECTABLE, Rejection, reject
from services.kafka.admin import ensure_topics
from services.kafka.consumer import (
    CLOSE_TIMEOUT_S,
    Consumer,
    Fetched,
    Subscription,
    Work,
    acknowledged_producer,
    run_consumer,
)
from services.kafka.dead_letters import DeadLetterPublisher, KafkaRecord, send_with_producer
from services.kafka.groups import COMMAND_HANDLER_GROUP as GROUP_ID
from services.kafka.groups import PRINCIPAL_HEADER
from services.settings import Settings

log = logging.getLogger(__name__)

RETRY = Backoff(first_s=0.2, max_s=30.0)
"""Between attempts at one message while the event store or Kafka is unreachable."""
RECONNECT = Backoff(first_s=1.0, max_s=10.0)
"""Between attempts to start the consumer while Kafka is away."""
POLL_TIMEOUT_MS = 500
MAX_RECORDS = 100
"""Commands a fetch takes at most; they are processed one by one all the same."""
MAX_COMMAND_ID_LENGTH = 200
MAX_PROBLEMS = 50
MAX_PROBLEM_TEXT = 500


COMMAND_TYPES: frozenset[str] = frozenset(
    body.model_fields["type"].default for body in get_args(Command.model_fields["body"].annotation)
)


class NotACommandError(Exception):
    """The message cannot be read as a command envelope; it goes to the dead letters."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        self.reason: DeadLetterReason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def read_envelope(value: bytes | None) -> dict[str, Any]:
    """The JSON object of a message that names whom to answer, or why it does not (see the rule
    in the module docstring); its `command_id` is then a usable string."""
    if not value:
        raise NotACommandError("empty", "the message has no value")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise NotACommandError("not_json", f"the value is not UTF-8 JSON: {error}") from None
    if not isinstance(data, dict):
        raise NotACommandError("not_an_object", f"the value is a JSON {_json_kind(data)}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        raise NotACommandError(
            "unsupported_schema_version",
            f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION})",
        )
    body = data.get("body")
    body_type = body.get("type") if isinstance(body, dict) else None
    if not isinstance(body_type, str) or body_type not in COMMAND_TYPES:
        raise NotACommandError(
            "unknown_type",
            f"body.type {body_type!r} is not a command; known: {', '.join(sorted(COMMAND_TYPES))}",
        )
    command_id = data.get("command_id")
    if not isinstance(command_id, str) or not 1 <= len(command_id) <= MAX_COMMAND_ID_LENGTH:
        raise NotACommandError(
            "missing_id",
            f"command_id must be a string of 1 to {MAX_COMMAND_ID_LENGTH} characters, "
            f"got {_json_kind(command_id)}",
        )
    return data


def principal_of(record: KafkaRecord) -> str:
    """The sender named by the record's `principal` header; `UnknownPrincipalError` if none."""
    values = {value for name, value in record.headers if name == PRINCIPAL_HEADER}
    if not values:
        raise UnknownPrincipalError(
            f"the command has no {PRINCIPAL_HEADER!r} header naming the service that sends it"
        )
    if len(values) > 1:
        raise UnknownPrincipalError(
            f"the command has several different {PRINCIPAL_HEADER!r} headers"
        )
    [value] = values
    try:
        return (value or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise UnknownPrincipalError(f"the {PRINCIPAL_HEADER!r} header is not UTF-8") from None


def as_principal(data: dict[str, Any], principal: str, allowed: frozenset[str]) -> dict[str, Any]:
    """The envelope with its actor set to the allow-listed `principal` that sent it."""
    if principal not in allowed:
        raise UnknownPrincipalError(
            f"principal {principal!r} may not send commands (not in OKR_KAFKA_COMMAND_PRINCIPALS)"
        )
    actor = data.get("actor")
    if actor is not None and actor != principal:
        raise ImpersonationError(
            f"the command says its actor is {actor!r} but {principal!r} sent it; leave actor out"
        )
    return {**data, "actor": principal}


def allowed_principals(settings: Settings) -> frozenset[str]:
    return frozenset(
        name.strip() for name in settings.kafka_command_principals.split(",") if name.strip()
    )


def _json_kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def rejected(command_id: str, command: Command | None, rejection: Rejection) -> CommandResult:
    """The rejection, with at most `MAX_PROBLEMS` problems of bounded length: a command with
    thousands of unknown fields must still get an answer that fits on Kafka."""
    problems = [_bounded(problem) for problem in rejection.problems[:MAX_PROBLEMS]]
    if len(rejection.problems) > MAX_PROBLEMS:
        problems.append(
            Issue(
                code="more_problems",
                field="(command)",
                message=f"{len(rejection.problems) - MAX_PROBLEMS} more problems not listed",
            )
        )
    return CommandResult(
        command_id=command_id,
        status="rejected",
        objective_id=command.objective_id if command is not None else None,
        error=rejection.error,
        problems=problems,
    )


def _bounded(problem: Issue) -> Issue:
    def cut(text: str) -> str:
        return text if len(text) <= MAX_PROBLEM_TEXT else f"{text[:MAX_PROBLEM_TEXT]}…"

    return Issue(code=cut(problem.code), field=cut(problem.field), message=cut(problem.message))


class CommandConsumer:
    """Turns one consumed record into exactly one acknowledged outcome on Kafka."""

    def __init__(
        self,
        application: OkrApplication,
        publish_result: Callable[[CommandResult], Awaitable[object]],
        dead_letters: DeadLetterPublisher,
        principals: frozenset[str],
    ) -> None:
        self.application = application
        self.principals = principals
        """Who may send commands; an empty set refuses every one."""
        self.publish_result = publish_result
        self.dead_letters = dead_letters

    async def process_until_done(self, record: KafkaRecord) -> None:
        """Outages are waited out on this very message: skipping it would lose a command. Any
        other failure sets the message aside (`processing_failed`): it would fail again."""
        where = f"command at {record.topic}[{record.partition}]@{record.offset}"
        outage = Outage(where, current_job(), log)
        for attempt in count(1):
            try:
                await self._process_or_set_aside(record)
            except Exception as error:
                if not is_transient(error):
                    raise
                delay = RETRY.delay_s(attempt)
                outage.failed(error, "retrying this very message", delay)
                await asyncio.sleep(delay)
            else:
                outage.succeeded()
                return

    async def _process_or_set_aside(self, record: KafkaRecord) -> None:
        try:
            await self.process(record)
        except Exception as error:
            if is_transient(error):
                raise
            log.exception(
                "command at %s[%d]@%d failed; dead-lettering it",
                record.topic,
                record.partition,
                record.offset,
            )
            await self.dead_letters.publish(record, "processing_failed", error)

    async def process(self, record: KafkaRecord) -> None:
        try:
            data = read_envelope(record.value)
        except NotACommandError as error:
            await self.dead_letters.publish(record, error.reason, error.detail)
            return
        try:
            command = Command.model_validate(
                as_principal(data, principal_of(record), self.principals)
            )
        except (AccessError, ValidationError) as error:
            if isinstance(error, AccessError):
                log.warning("command %r refused: %s", data["command_id"], error)
            await self.publish_result(rejected(data["command_id"], None, reject(error)))
            return
        try:
            result = await asyncio.to_thread(self.application.handle, command)
        except REJECTABLE as error:
            result = rejected(command.command_id, command, reject(error))
        await self.publish_result(result)


def command_subscription(settings: Settings) -> Subscription:
    """`okr.commands` as the command handler's group, from Kafka's committed offsets."""
    return Subscription(
        name="command consumer",
        topics=(settings.topic(COMMANDS),),
        group_id=settings.consumer_group(GROUP_ID),
        client_options=settings.kafka_client_options(),
    )


def result_publisher(
    settings: Settings, producer: AIOKafkaProducer
) -> Callable[[CommandResult], Awaitable[object]]:
    """Publishes a result on `okr.command-results`, keyed by command id; returns once Kafka
    acknowledged it."""
    topic = settings.topic(COMMAND_RESULTS)
    headers = [("content-type", b"application/json")]

    async def publish_result(result: CommandResult) -> None:
        await producer.send_and_wait(
            topic,
            result.model_dump_json().encode(),
            key=result.command_id.encode(),
            headers=headers,
        )

    return publish_result


async def answer_batch(commands: CommandConsumer, consumer: Consumer, fetched: Fetched) -> None:
    """Each record's outcome, partition after partition, in offset order; each offset handed to
    the commits once the outcome is acknowledged. A partition revoked meanwhile is left to its
    new holder, which starts after the last offset committed here."""
    for tp, records in fetched.items():
        for record in records:
            if tp not in consumer.assigned():
                break
            await _finishing(commands.process_until_done(record), consumer, tp, record.offset)
            consumer.commit({tp: record.offset + 1}, 1)


async def _finishing(
    answering: Coroutine[Any, Any, None], consumer: Consumer, tp: TopicPartition, offset: int
) -> None:
    """Answer one record; if the consumer is stopped meanwhile, let the answer finish first
    (within `CLOSE_TIMEOUT_S`) and commit it, so a graceful stop repeats nothing. Outages being
    waited out are abandoned at the bound: nothing of theirs is committed."""
    task = asyncio.ensure_future(answering)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, CLOSE_TIMEOUT_S)
            consumer.commit({tp: offset + 1}, 1)
        raise


async def run_command_consumer(
    settings: Settings, application: OkrApplication, *, backoff: Backoff = RECONNECT
) -> None:
    """Consume `okr.commands` until cancelled; Kafka being down at start is waited for."""
    group_id = settings.consumer_group(GROUP_ID)
    principals = allowed_principals(settings)

    @contextlib.asynccontextmanager
    async def opening() -> AsyncIterator[Work]:
        await ensure_topics(settings)
        async with acknowledged_producer(settings.kafka_client_options(), group_id) as producer:
            commands = CommandConsumer(
                application,
                result_publisher(settings, producer),
                DeadLetterPublisher(
                    settings, send_with_producer(producer), consumer_group=group_id
                ),
                principals,
            )

            async def answer(consumer: Consumer, succeeded: Callable[[], None]) -> None:
                while True:
                    fetched = await consumer.fetch(POLL_TIMEOUT_MS, MAX_RECORDS)
                    if fetched:
                        await answer_batch(commands, consumer, fetched)
                        succeeded()

            yield answer

    await run_consumer(
        command_subscription(settings), opening, backoff=backoff, resuming="reconnecting", log=log
    )
