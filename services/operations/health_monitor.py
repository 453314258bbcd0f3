"""The health monitor: one background job that probes what the service depends on, on a timer.

Every `OKR_HEALTH_INTERVAL_S` seconds (after the previous round ended) it asks Kafka for its
metadata, runs a trivial query on the event store and on the read store, and measures consumer
lag and the relay's backlog, all at once, and keeps the last round (`Probe`) with its time.
`GET /health` and `GET /metrics` answer from that round and from the job board, so a caller,
however many there are, costs the service no broker or database round trip.

The log says it once when a dependency stops answering, and once when it is back, with how long
it was away and how many probes failed in between; nothing per failed probe. The monitor is a job
of the board itself ("health monitor"): if a round ever fails in an unforeseen way it says
`retrying` there, and a round older than `stale_after_s` is reported as the monitor being down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import PersistenceError

from projections.backoff import Backoff, keep_running
from projections.failures import describe
from services import stores
from services.kafka import admin as kafka_admin
from services.kafka import lag
from services.kafka.lag import KafkaLag
from services.relay import publisher
from services.relay.publisher import RelayLag

if TYPE_CHECKING:
    from services.commands.application import OkrApplication
    from services.settings import Settings

log = logging.getLogger(__name__)

JOB_NAME = "health monitor"
PROBE_TIMEOUT_S = 3.0
"""Each probe's own limit (Kafka metadata, a store query, the lag): a round ends within it."""
FIRST_ROUND_WAIT_S = PROBE_TIMEOUT_S + 1.0
"""How long the app's start waits for the first round (`first_round`), at most."""

DEPENDENCIES = ("kafka", "event_store", "read_store")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Probe:
    """One round: each dependency's problem (None when it answered), lag, backlog, and when."""

    checked_at: datetime
    monotonic: float
    """`time.monotonic()` when the round ended: how old it is, whatever the wall clock does."""
    problems: dict[str, str | None]
    kafka: KafkaLag
    relay: RelayLag | None = None
    """None when not measured: no application, or the event store failed (`relay_error`)."""
    relay_error: str | None = None

    def down(self) -> list[str]:
        return sorted(name for name, problem in self.problems.items() if problem is not None)

    @cached_property
    def lag_json(self) -> dict[str, Any]:
        """Consumer lag and relay backlog as `/health` shows them: built once per round."""
        body = self.kafka.to_json()
        if self.relay is not None:
            body["relay"] = {
                "ok": True,
                "position": self.relay.position,
                "stored": self.relay.stored,
                "pending": self.relay.pending,
            }
        elif self.relay_error is not None:
            body["relay"] = {"ok": False, "error": self.relay_error}
        return body

    def age_s(self) -> float:
        return max(0.0, time.monotonic() - self.monotonic)


@dataclass
class Outage:
    """A dependency that stopped answering: since when, and the probes that failed since."""

    since: datetime
    started: float
    failed_probes: int = 0


@dataclass
class HealthMonitor:
    """Probes on a timer (`run`, a background job) and keeps the last round (`last`)."""

    settings: Settings
    application: OkrApplication | None = None
    interval_s: float = 5.0
    clock: Callable[[], datetime] = _utc_now
    last: Probe | None = None
    outages: dict[str, Outage] = field(default_factory=dict)
    _probed: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _kafka: kafka_admin.HeldClients | None = field(default=None, init=False, repr=False)

    @property
    def kafka_clients(self) -> kafka_admin.HeldClients:
        """Kept open between rounds (`kafka_admin.HeldClients`)."""
        if self._kafka is None:
            self._kafka = kafka_admin.HeldClients(self.settings, PROBE_TIMEOUT_S)
        return self._kafka

    @property
    def stale_after_s(self) -> float:
        """A round older than this means the monitor itself stopped probing."""
        return 3 * self.interval_s + 2 * PROBE_TIMEOUT_S

    def is_stale(self) -> bool:
        return self.last is not None and self.last.age_s() > self.stale_after_s

    async def probe(self) -> Probe:
        """One round, every probe at once: neither's outage hides or delays another's."""
        settings = self.settings
        kafka, event_store, read_store, kafka_lag, (relay, relay_error) = await asyncio.gather(
            kafka_admin.probe_kafka(settings, PROBE_TIMEOUT_S, self.kafka_clients),
            asyncio.to_thread(stores.probe_store, settings.event_store_url, PROBE_TIMEOUT_S),
            asyncio.to_thread(stores.probe_store, settings.read_store_url, PROBE_TIMEOUT_S),
            lag.kafka_lag(settings, timeout_s=PROBE_TIMEOUT_S, held=self.kafka_clients),
            self._relay_lag(),
        )
        problems = {"kafka": kafka, "event_store": event_store, "read_store": read_store}
        probe = Probe(
            checked_at=self.clock(),
            monotonic=time.monotonic(),
            problems=problems,
            kafka=kafka_lag,
            relay=relay,
            relay_error=relay_error,
        )
        self._note_outages(probe)
        self.last = probe
        self._probed.set()
        return probe

    async def first_round(self, timeout_s: float = FIRST_ROUND_WAIT_S) -> bool:
        """Wait until a round is done (True), or `timeout_s` (False): the app starts serving
        once it knows, so `/health` says `starting` only when a round takes longer than that."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._probed.wait()
        except TimeoutError:
            return False
        return True

    async def _relay_lag(self) -> tuple[RelayLag | None, str | None]:
        if self.application is None:
            return None, None
        try:
            return await asyncio.to_thread(publisher.relay_lag, self.application), None
        except (PersistenceError, OSError) as error:
            return None, describe(error)

    def _note_outages(self, probe: Probe) -> None:
        """One line when a dependency stops answering, one when it is back; none in between."""
        for name, problem in probe.problems.items():
            outage = self.outages.get(name)
            if problem is not None:
                if outage is None:
                    self.outages[name] = Outage(probe.checked_at, probe.monotonic, 1)
                    log.warning(
                        "health: %s unreachable: %s (said once; probing every %gs)",
                        name,
                        problem,
                        self.interval_s,
                    )
                else:
                    outage.failed_probes += 1
            elif outage is not None:
                del self.outages[name]
                log.warning(
                    "health: %s reachable again after %.1fs (%d probe(s) failed)",
                    name,
                    probe.monotonic - outage.started,
                    outage.failed_probes,
                )

    async def run(self) -> None:
        """Probe until cancelled; registered on the current job board as `JOB_NAME`."""

        async def attempt(succeeded: Callable[[], None]) -> None:
            while True:
                await self.probe()
                succeeded()
                await asyncio.sleep(self.interval_s)

        try:
            await keep_running(
                JOB_NAME,
                attempt,
                backoff=Backoff(max_s=self.interval_s),
                resuming="probing",
                log=log,
            )
        finally:
            await self.kafka_clients.close()

    def check_json(self, name: str) -> dict[str, Any]:
        """A dependency as `/health` shows it to a reader."""
        assert self.last is not None
        problem = self.last.problems[name]
        body: dict[str, Any] = {"ok": problem is None}
        if problem is not None:
            body["error"] = problem
            outage = self.outages.get(name)
            if outage is not None:
                body |= {"since": outage.since.isoformat(), "failed_probes": outage.failed_probes}
        body["checked_at"] = self.last.checked_at.isoformat()
        return body
