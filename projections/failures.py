"""Which failures a retry can cure, and which never will.

Every consumer asks the same question of the same table: retry a *transient* failure in place
(broker or store unreachable, a timeout, a rebalance, a lost race), and never let a *permanent*
one (a record too large to publish, invalid data, a refused authorization, a bug met by one
record) block a partition: that record is set aside as a dead letter and the consumer moves on.
It imports nothing of ours, so `projections` and `services` share it.
"""

from __future__ import annotations

import sqlite3

import psycopg
from aiokafka import errors as kafka
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError

TRANSIENT_KAFKA_ERRORS: tuple[type[kafka.KafkaError], ...] = (
    kafka.KafkaTimeoutError,
    kafka.KafkaUnavailableError,
    kafka.RequestTimedOutError,
    kafka.BrokerNotAvailableError,
    kafka.CommitFailedError,
    kafka.RebalanceInProgressError,
    kafka.IllegalGenerationError,
    kafka.UnknownMemberIdError,
    kafka.ProducerClosed,
)
"""Kafka errors that aiokafka does not mark `retriable` but that a later attempt cures: the broker
is slow or away, the group is rebalancing, or the client is being replaced."""

TRANSIENT_STORE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    IntegrityError,
    sqlite3.OperationalError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
"""A store unreachable or locked, or a race lost to another writer (recomputed): eventsourcing's
wrappers for the event store, the drivers' own for the read store."""


def is_transient(error: BaseException) -> bool:
    """True when the same work may succeed later unchanged; False when it never will."""
    if isinstance(error, kafka.KafkaError):
        return bool(getattr(error, "retriable", False)) or isinstance(error, TRANSIENT_KAFKA_ERRORS)
    return isinstance(error, (*TRANSIENT_STORE_ERRORS, OSError))


def describe(error: BaseException) -> str:
    """`Type: message`, for logs, dead letters and `/health`."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


MAX_SET_ASIDE_IN_A_ROW = 10
"""Records set aside one after another with nothing processed in between: past this, the failure
is the consumer's (a bug, a broken store), not the records', so it stops setting them aside and
retries instead (stalled, but visibly: `/health` says `degraded`) rather than dead-letter a whole
stream."""


class SystemicFailureError(RuntimeError):
    """Record after record fails alone: not a poison record, so none more is set aside."""


class SetAsideStreak:
    """Counts records set aside in a row; past the limit, raises `SystemicFailureError` instead
    of letting another one be set aside, until a record is processed again."""

    def __init__(self, limit: int = MAX_SET_ASIDE_IN_A_ROW) -> None:
        self.limit = limit
        self.count = 0

    def processed(self) -> None:
        self.count = 0

    def setting_aside(self, error: BaseException) -> None:
        self.count += 1
        if self.count > self.limit:
            raise SystemicFailureError(
                f"{self.limit} records in a row failed alone, the last with {describe(error)}: "
                "not setting more aside"
            ) from error
