"""`okr demo`: the seed's business scenario, played against a running service, scores moving live.

A new user's first question is "what does it do?"; the answer should take a minute, not a
tutorial. The demo creates the seed's objectives over the current quarter (so pace means
something), through the HTTP API of a running `okr serve`, the path any client takes: every key
result measurable, activated, bound to a KPI. Then it publishes drifting KPI measurements on
`kpi.events`, as other services would, a few per second per KPI, and prints the scores as the
scorer moves them, then where to look.

The quarter is compressed into the run: each KPI drifts from its baseline toward (and for some
past) its target over `--seconds`. Every run creates new objectives and new event ids, so it can
be re-run at will; the KPIs themselves are shared streams, as in production, so a second run's
`sum` key result counts the quarter's sales of every run.

It authenticates like any client, with an API key: `--api-key` / `OKR_DEMO_API_KEY`, or, against
a service on this machine, an `okr-demo` editor key it adds to the keys file itself (replacing
the one of its previous run), which the service picks up without a restart.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiokafka import AIOKafkaProducer

from events.kpi import KpiEvent
from events.topics import KPI_EVENTS
from services.access.keys import ApiKeysError, add_key, can_write
from services.access.principals import Role
from services.devtools.demo_scenario import (
    SALES,
    SCENARIO,
    DemoObjective,
    current_quarter,
    demo_kpis,
)
from services.kafka.admin import ensure_topics
from services.settings import Settings

ACTOR = "okr-demo"
"""The principal of the demo's own API key (the actor of its commands) and its KPI events'
source."""
REPORT_EVERY_S = 5.0
SETTLE_S = 30.0
"""How long the demo waits, after its last event, for the scorer to have stored them all."""
POLL_S = 0.25
HTTP_TIMEOUT_S = 15.0

Echo = Callable[[str], None]


class DemoError(Exception):
    """The demo cannot go on: no service answers, or it refused a command; the message says."""


# --- talking to the service -----------------------------------------------------------------------


def service_url(settings: Settings) -> str:
    """Where a local `okr serve` with these settings answers (a wildcard bind: on loopback)."""
    host = settings.http_host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}"


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def demo_api_key(settings: Settings, url: str, given: str | None, echo: Echo) -> str:
    """The key to send: given, configured, or (service on this machine) made for the demo."""
    if given:
        return given
    if settings.demo_api_key is not None:
        return settings.demo_api_key.get_secret_value()
    path = settings.api_keys_file
    if not (is_loopback(url) and can_write(path)):
        raise DemoError(
            f"the service at {url} needs an API key: pass --api-key (or set OKR_DEMO_API_KEY) "
            f"with an editor key, e.g. from `okr keys add --principal {ACTOR} --role editor` "
            "on the service's machine"
        )
    return _own_key(path, echo)


def _own_key(path: Path, echo: Echo) -> str:
    try:
        issued = add_key(path, ACTOR, Role.EDITOR, replace_principal=True)
    except (ApiKeysError, OSError) as error:
        raise DemoError(f"cannot add the demo's API key to {path}: {error}") from None
    echo(f"API key: an editor key for {ACTOR} added to {path} (its earlier ones removed)")
    return issued.key


@dataclass(frozen=True)
class CreatedObjective:
    objective_id: str
    title: str
    team: str
    key_result_ids: tuple[str, ...]


class DemoClient:
    """The few calls of the HTTP API the demo makes; any refusal stops it with the reason."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise DemoError(f"{method} {self.http.base_url}{path} failed: {error}") from None
        if response.status_code >= 400:
            raise DemoError(f"{method} {path} answered {response.status_code}: {response.text}")
        return response.json()

    async def wait_until_healthy(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        problem = "no answer"
        while True:
            try:
                response = await self.http.get("/health")
                if response.status_code == 200:
                    return
                problem = f"it reports {', '.join(response.json().get('down', [])) or 'trouble'}"
            except httpx.TransportError as error:
                problem = f"no answer ({error})"
            if time.monotonic() >= deadline:
                raise DemoError(
                    f"no healthy OKR Ledger at {self.http.base_url}: {problem}. Start it with "
                    "`okr serve` (or `scripts/run.sh --demo`), or point --url at it."
                )
            await asyncio.sleep(POLL_S)

    async def create(self, objective: DemoObjective, period: tuple[date, date]) -> CreatedObjective:
        """Created, activated and bound: ready for KPI events to move."""
        created = await self.call("POST", "/objectives", json=objective.body(period))
        objective_id = created["objective_id"]
        # The key result ids come from the stored objective: read it at the version written.
        view = await self.call(
            "GET", f"/objectives/{objective_id}", params={"min_version": created["version"]}
        )
        key_result_ids = tuple(kr["key_result_id"] for kr in view["key_results"])
        await self.call("POST", f"/objectives/{objective_id}/activate")
        for key_result_id, key_result in zip(key_result_ids, objective.key_results, strict=True):
            await self.call(
                "PUT",
                f"/objectives/{objective_id}/key-results/{key_result_id}/kpi",
                json={"kpi_key": key_result.kpi.key, "aggregation": key_result.aggregation},
            )
        return CreatedObjective(objective_id, objective.title, objective.team, key_result_ids)

    async def accepted_counts(self) -> dict[str, int]:
        listing = await self.call("GET", "/kpis")
        return {item["kpi_key"]: item["accepted"] for item in listing["items"]}

    async def objective(self, objective_id: str, *, caught_up: bool = False) -> dict[str, Any]:
        """The projected objective; `caught_up`: once the projection has every stored event of
        it (its version in the event store, from `as-of`), so final scores are final."""
        params: dict[str, Any] = {}
        if caught_up:
            stored = await self.call(
                "GET",
                f"/objectives/{objective_id}/as-of",
                params={"at": datetime.now(UTC).isoformat()},
            )
            params = {"min_version": stored["version"], "wait": SETTLE_S}
        view: dict[str, Any] = await self.call("GET", f"/objectives/{objective_id}", params=params)
        return view


# --- the run --------------------------------------------------------------------------------------


@dataclass
class DemoReport:
    base_url: str
    period: tuple[date, date]
    objectives: list[CreatedObjective] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    """KPI events published, per KPI."""
    settled: bool = False
    """Whether the scorer had stored every event sent when the demo ended."""
    scores: dict[str, float] = field(default_factory=dict)
    """Objective id -> score, as read at the end."""


async def run_demo(
    settings: Settings,
    *,
    seconds: float = 60.0,
    events_per_second: float = 3.0,
    base_url: str | None = None,
    wait_for_service_s: float = 30.0,
    api_key: str | None = None,
    echo: Echo = print,
    rng: random.Random | None = None,
) -> DemoReport:
    """Create the scenario through the HTTP API, then publish KPI events for `seconds`."""
    rng = rng or random.Random()
    url = base_url or service_url(settings)
    period = current_quarter(datetime.now(UTC).date())
    report = DemoReport(url, period)
    async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_S) as http:
        client = DemoClient(http)
        await client.wait_until_healthy(wait_for_service_s)
        key = demo_api_key(settings, url, api_key, echo)
        http.headers["Authorization"] = f"Bearer {key}"
        echo(f"OKR Ledger at {url}; the scenario runs over {period[0]} .. {period[1]}")
        for objective in SCENARIO:
            created = await client.create(objective, period)
            report.objectives.append(created)
            echo(f"  created, activated, bound: {created.title} ({created.objective_id})")
        before = await client.accepted_counts()
        await ensure_topics(settings)
        echo(
            f"publishing {events_per_second:g} KPI events/s per KPI on "
            f"{settings.topic(KPI_EVENTS)} for {seconds:g} s; scores as the scorer moves them:"
        )
        report.sent = await _publish(
            settings, client, report, seconds, events_per_second, rng, echo
        )
        report.settled = await _settle(client, before, report.sent)
        if not report.settled:
            echo(
                f"  (the scorer had not stored every event after {SETTLE_S:g} s; still catching up)"
            )
        await _print_scores(client, report, echo, final=True)
    _print_where_to_look(report, echo)
    return report


async def _publish(
    settings: Settings,
    client: DemoClient,
    report: DemoReport,
    seconds: float,
    events_per_second: float,
    rng: random.Random,
    echo: Echo,
) -> dict[str, int]:
    kpis = demo_kpis()
    run_id = uuid.uuid4().hex[:12]
    topic = settings.topic(KPI_EVENTS)
    ticks = max(1, round(seconds * events_per_second))
    interval = 1.0 / events_per_second
    sent = dict.fromkeys((kpi.key for kpi in kpis), 0)
    producer = AIOKafkaProducer(
        **settings.kafka_client_options(), enable_idempotence=True, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        started = time.monotonic()
        next_report = started + REPORT_EVERY_S
        for tick in range(ticks):
            await asyncio.sleep(max(0.0, started + tick * interval - time.monotonic()))
            progress = tick / max(ticks - 1, 1)
            now = datetime.now(UTC)
            pending = []
            for kpi in kpis:
                event = KpiEvent(
                    event_id=f"demo-{run_id}-{kpi.key}-{tick}",
                    kpi_key=kpi.key,
                    value=kpi.value(progress, ticks, rng),
                    observed_at=now,
                    source=ACTOR,
                    unit=kpi.unit,
                    dimensions=kpi.labels(rng),
                )
                pending.append(await producer.send(topic, event.to_bytes(), key=event.key))
                sent[kpi.key] += 1
            await asyncio.gather(*pending)
            if time.monotonic() >= next_report:
                next_report += REPORT_EVERY_S
                await _print_scores(client, report, echo, elapsed=time.monotonic() - started)
    finally:
        await producer.stop()
    return sent


async def _settle(client: DemoClient, before: dict[str, int], sent: dict[str, int]) -> bool:
    """Until the scorer stored every event sent (its accepted counters say so), bounded."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        counts = await client.accepted_counts()
        if all(counts.get(key, 0) >= before.get(key, 0) + n for key, n in sent.items()):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)


async def _print_scores(
    client: DemoClient,
    report: DemoReport,
    echo: Echo,
    *,
    elapsed: float | None = None,
    final: bool = False,
) -> None:
    views = [
        await client.objective(created.objective_id, caught_up=final)
        for created in report.objectives
    ]
    for created, view in zip(report.objectives, views, strict=True):
        report.scores[created.objective_id] = view["objective"]["score"]
    if not final:
        scores = "   ".join(
            f"{view['objective']['team']} {view['objective']['score']:5.1f}" for view in views
        )
        echo(f"  after {elapsed or 0:4.0f} s:  {scores}")
        return
    echo("scores now (0-100), pace against the quarter elapsed:")
    for view in views:
        objective = view["objective"]
        echo(f"  {objective['score']:5.1f}  {objective['title']}  [{view['pace']}]")
        for kr in view["key_results"]:
            current = "-" if kr["current"] is None else f"{round(kr['current'], 2):g}"
            echo(f"         {kr['score']:5.1f}  {kr['title']}  (now {current} {kr['metric']})")


def _print_where_to_look(report: DemoReport, echo: Echo) -> None:
    url = report.base_url
    first = report.objectives[0].objective_id if report.objectives else "{id}"
    places = [
        ("every objective, its score", "/objectives"),
        *(
            (
                f"the {o.team} objective, its pace",
                f"/objectives/{o.objective_id}",
            )
            for o in report.objectives
        ),
        ("every score change, its cause", f"/objectives/{first}/timeline"),
        ("the KPIs: events counted, latest", "/kpis"),
        ("one KPI's observations", f"/kpis/{SALES.key}/series"),
        ("the key results a KPI moves", f"/kpis/{SALES.key}/key-results"),
        ("the whole API", "/docs"),
    ]
    width = max(len(what) for what, _ in places)
    echo(
        "where to look (every GET needs an API key: -H 'Authorization: Bearer KEY'; "
        "scripts/run.sh keeps an admin key in var/admin.key):"
    )
    for what, path in places:
        echo(f"  {what:<{width}}  GET {url}{path}")
    echo("Run `okr demo` again for another scenario; more KPI events keep the scores moving.")
