"""How `okr serve` and `okr scorer` log: one format to stderr, and Kafka's client kept quiet.

aiokafka retries what fails on its own (a broker away, a coordinator moving, a topic just made),
and logs every attempt: a 28 s broker outage wrote 6,945 ERROR and WARNING lines, and a first
start, all well, logged "Topic okr.events not found" and ~25 `GroupCoordinatorNotAvailableError`
ERRORs. Our jobs say once when they stop working and once when they work again
(`projections.backoff.keep_running`), and `/health` says what is down, so here:

- aiokafka's INFO lines (every step of every group join) are not shown;
- its WARNING and ERROR records about what it retries itself (a retriable Kafka error, a
  connection refused or timed out, a topic or coordinator not there yet) are dropped;
- any other WARNING or ERROR of it (authorization refused, an unexpected error) is shown, once
  per message per `REPEAT_AFTER_S`, with how many like it were held back in between.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
KAFKA_CLIENT = "aiokafka"
REPEAT_AFTER_S = 600.0

RETRIED_MESSAGES = frozenset(
    {
        "Topic %s not found in cluster metadata",
        "Topic %s is not available during auto-create initialization",
        "Unable connect to node with id %s: %s",
        "Unable to request metadata from node with id %s: %r",
        "Unable to update metadata from %s",
        "No broker metadata found in MetadataResponse -- ignoring.",
        "Marking the coordinator dead (node %s)for group %s.",
        "Heartbeat session expired - marking coordinator dead",
        "Heartbeat failed for group %s because it is rebalancing",
        "Heartbeat failed for group %s: coordinator (node %s) is either not started or not valid",
        "Heartbeat failed for group %s: generation id is not  current.",
        "Heartbeat failed: local member_id was not recognized; resetting and re-joining group",
    }
)
"""aiokafka messages about what it retries, whatever their arguments."""


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """The process's logging: `level` and up to `stream` (stderr), aiokafka kept quiet."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(KafkaClientNoise())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger(KAFKA_CLIENT).setLevel(max(level, logging.WARNING))


def is_retried(record: logging.LogRecord) -> bool:
    """Whether the record is about something aiokafka retries itself."""
    if str(record.msg) in RETRIED_MESSAGES:
        return True
    args = record.args if isinstance(record.args, tuple) else ()
    return any(_retriable(arg) for arg in args)


def _retriable(value: object) -> bool:
    from aiokafka.errors import KafkaError

    if isinstance(value, KafkaError):
        return bool(getattr(value, "retriable", False))
    return isinstance(value, OSError | TimeoutError)  # asyncio's TimeoutError is this one


class KafkaClientNoise(logging.Filter):
    """Drops aiokafka's records about what it retries; shows its others once per message per
    `repeat_after_s`. Records of other loggers pass untouched."""

    def __init__(
        self, repeat_after_s: float = REPEAT_AFTER_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.repeat_after_s = repeat_after_s
        self.clock = clock
        self.dropped = 0
        """Records about retries dropped (tests read it)."""
        self._shown: dict[tuple[str, str], float] = {}
        self._held: Counter[tuple[str, str]] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if not (name == KAFKA_CLIENT or name.startswith(KAFKA_CLIENT + ".")):
            return True
        if record.levelno < logging.WARNING:
            return True
        if is_retried(record):
            self.dropped += 1
            return False
        key = (name, str(record.msg))
        now = self.clock()
        shown = self._shown.get(key)
        if shown is not None and now - shown < self.repeat_after_s:
            self._held[key] += 1
            return False
        self._shown[key] = now
        held = self._held.pop(key, 0)
        if held and shown is not None:
            record.msg = f"{record.msg} [{held} more like this in the last {now - shown:.0f}s]"
        return True
