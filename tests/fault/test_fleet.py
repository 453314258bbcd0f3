"""A fleet under fire: two `okr serve` and two `okr scorer` processes on one PostgreSQL and a
3-node Kafka cluster (replication 3, min ISR 2, acks=all), while 50,000 KPI events and a stream
of HTTP check-ins arrive. At random points the relay's holder, then one scorer, are SIGKILLed
and restarted, and one Kafka node is SIGKILLed (restarted only at the end).

Afterwards: every key result equals an undisturbed run over the same events (no KPI event
counted twice or lost) and the last acknowledged check-in (no acknowledged command lost); the
read models (what GET /objectives/{id} serves) say the same; `okr audit verify` finds the store
and `okr.events` intact; and `okr.events` carries every stored event (duplicates allowed, each
(objective, version) identical: the verify checks that).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import httpx
import orjson
import pytest

from events import commands as wire
from events import topics
from services.commands.application import OkrApplication
from services.kafka.admin import ensure_topics
from services.scoring.bindings import follow_bindings
from services.settings import Settings
from tests import seed
from tests.auth_support import auth_headers
from tests.e2e.conftest import free_port
from tests.fault.test_scorer_kill import (
    KEY_RESULTS_PER_OBJECTIVE,
    KPIS,
    OBJECTIVES,
    build_stream,
    scored_up_to_offsets,
    stream_in_chunks,
    undisturbed,
)
from tests.integration.test_local_kafka import three_node_environment
from tests.kafka_support import eventually, read_to_end
from tests.kpi_support import (
    AGGREGATIONS,
    create_bound_objective,
    current_values,
    last_offsets,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.postgres, pytest.mark.kafka]

SEED = 20261207
CHECKED_IN = 4
"""Objectives whose key result people check in over HTTP while the KPIs stream."""
STARTUP_S = 90.0
SETTLE_S = 240.0
RELAY_JOB = "okr.events relay"


# --- the cluster and the processes ----------------------------------------------------------------


@dataclass
class Cluster:
    env: dict[str, str]
    bootstrap: str

    def kafka(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.main", "kafka", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )


@contextlib.contextmanager
def kafka_cluster(data_dir: Path) -> Iterator[Cluster]:
    cluster = Cluster(*three_node_environment(data_dir))
    started = cluster.kafka("start", "--brokers", "3")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield cluster
    finally:
        cluster.kafka("stop")


@dataclass
class Fleet:
    settings: Settings
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def environment(self, name: str) -> dict[str, str]:
        s = self.settings
        env = {key: value for key, value in os.environ.items() if not key.startswith("OKR_")}
        return (
            env
            | {
                "OKR_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
                "OKR_TOPIC_PREFIX": s.topic_prefix,
                "OKR_TOPIC_PARTITIONS": str(s.topic_partitions),
                "OKR_TOPIC_REPLICATION_FACTOR": str(s.topic_replication_factor),
                "OKR_TOPIC_MIN_INSYNC_REPLICAS": str(s.topic_min_insync_replicas),
                "OKR_EVENT_STORE_URL": s.event_store_url,
                "OKR_READ_STORE_URL": s.read_store_url,
                "OKR_API_KEYS": s.api_keys,
                "OKR_API_KEYS_FILE": str(s.api_keys_file),
                "OKR_AUDIT_SIGNING_KEY_FILE": str(s.audit_signing_key_file),
                "OKR_SERVE_RUNS_SCORER": "false",
                "OKR_INSTANCE_ID": name,
                "OKR_HTTP_HOST": "127.0.0.1",
                "PYTHONFAULTHANDLER": "1",
            }
            | ({"OKR_HTTP_PORT": str(self.ports[name])} if name in self.ports else {})
        )

    def start(self, name: str) -> None:
        command = "serve" if name.startswith("serve") else "scorer"
        if command == "serve":
            self.ports.setdefault(name, free_port())
        with (self.workdir / f"{name}.log").open("ab") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", command],
                env=self.environment(name),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()[-4000:]

    def assert_alive(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"{name} exited:\n{self.log(name)}"

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def served(fleet: Fleet, name: str) -> None:
    async def answers() -> bool:
        fleet.assert_alive()
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(f"{fleet.url(name)}/health")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(answers, f"{name} to serve", deadline_s=STARTUP_S)


async def relay_holder(fleet: Fleet) -> str:
    """The instance that holds the relay, as /health of a serving instance says."""
    found: list[str] = []

    async def named() -> bool:
        for name in ("serve-a", "serve-b"):
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(timeout=2) as http:
                    body = (
                        await http.get(f"{fleet.url(name)}/health", headers=auth_headers("reader"))
                    ).json()
                for job in body.get("jobs", []):
                    holder = (job.get("lease") or {}).get("holder")
                    if job["name"] == RELAY_JOB and holder in ("serve-a", "serve-b"):
                        found.append(holder)
                        return True
        return False

    await eventually(named, "an instance to hold the relay", deadline_s=STARTUP_S)
    return found[-1]


# --- commands over HTTP, to either instance -------------------------------------------------------


@dataclass
class CheckIns:
    """Check-ins sent one after another, each to the next instance; a refused connection (a
    killed instance) is retried on the other with the same Idempotency-Key, so it is applied
    once. What was acknowledged is what must survive."""

    fleet: Fleet
    key_results: list[tuple[UUID, UUID]]
    acknowledged: dict[UUID, float] = field(default_factory=dict)
    sent: int = 0

    async def run(self, stop: asyncio.Event, rng: random.Random) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while not stop.is_set():
                objective_id, key_result_id = rng.choice(self.key_results)
                value = round(rng.uniform(0, 100), 2)
                key = str(uuid.uuid4())
                for attempt in range(40):
                    name = ("serve-a", "serve-b")[(self.sent + attempt) % 2]
                    try:
                        answer = await http.post(
                            f"{self.fleet.url(name)}/objectives/{objective_id}/key-results/"
                            f"{key_result_id}/check-ins",
                            json={"value": value},
                            headers=auth_headers("editor") | {"Idempotency-Key": key},
                        )
                    except httpx.HTTPError:
                        await asyncio.sleep(0.25)
                        continue
                    if answer.status_code in (409, 503):  # a race or an outage: try again
                        await asyncio.sleep(0.1)
                        continue
                    assert answer.status_code == 200, answer.text
                    self.acknowledged[key_result_id] = value
                    break
                self.sent += 1
                await asyncio.sleep(0.05)


# --- the test -------------------------------------------------------------------------------------


async def test_a_fleet_killed_at_random_points_ends_where_an_undisturbed_run_ends(
    settings: Settings, postgres_database: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    with kafka_cluster(tmp_path / "kafka") as cluster:
        fleet_settings = settings.model_copy(
            update={
                "kafka_bootstrap_servers": cluster.bootstrap,
                "topic_partitions": 4,
                "topic_replication_factor": 3,
                "topic_min_insync_replicas": 2,
                "event_store_url": postgres_database,
                "read_store_url": postgres_database,
            }
        )
        reference_settings = fleet_settings.model_copy(
            update={
                "event_store_url": f"sqlite:///{tmp_path / 'reference.sqlite'}",
                "read_store_url": f"sqlite:///{tmp_path / 'reference-read.sqlite'}",
            }
        )
        await ensure_topics(fleet_settings)
        ours, reference = OkrApplication(fleet_settings), OkrApplication(reference_settings)
        fleet = Fleet(fleet_settings, tmp_path)
        try:
            await run_the_story(rng, cluster, fleet, ours, reference, reference_settings)
        finally:
            fleet.stop_all()
            ours.close()
            reference.close()


async def run_the_story(
    rng: random.Random,
    cluster: Cluster,
    fleet: Fleet,
    ours: OkrApplication,
    reference: OkrApplication,
    reference_settings: Settings,
) -> None:
    settings = fleet.settings
    kpis = [f"kpi.{index:02d}.{uuid.uuid4().hex[:6]}" for index in range(KPIS)]
    objective_ids = [uuid.uuid4() for _ in range(OBJECTIVES)]
    bindings: dict[UUID, list[tuple[str, wire.Aggregation]]] = {}
    for index, objective_id in enumerate(objective_ids):
        bindings[objective_id] = [
            (
                kpis[(index * KEY_RESULTS_PER_OBJECTIVE + k) % len(kpis)],
                AGGREGATIONS[(index + k) % 6],
            )
            for k in range(KEY_RESULTS_PER_OBJECTIVE)
        ]
        for application in (ours, reference):
            create_bound_objective(application, bindings[objective_id], objective_id=objective_id)
    people = [checked_in_objective(ours) for _ in range(CHECKED_IN)]
    for application in (ours, reference):
        await asyncio.to_thread(follow_bindings, application)
    stream = build_stream(rng, kpis)

    for name in ("serve-a", "serve-b", "scorer-1", "scorer-2"):
        fleet.start(name)
    await served(fleet, "serve-a")
    await served(fleet, "serve-b")

    check_ins = CheckIns(fleet, people)
    stop_commands = asyncio.Event()
    commanding = asyncio.create_task(check_ins.run(stop_commands, rng))
    streaming = asyncio.create_task(stream_in_chunks(settings, stream))

    async def at_share(share: float) -> None:
        async def reached() -> bool:
            fleet.assert_alive()
            if commanding.done():
                commanding.result()  # its failure, if it failed
            return streaming.done() or await scored(ours, settings) >= len(stream) * share

        await eventually(reached, f"{share:.0%} of the stream scored", deadline_s=SETTLE_S)

    await at_share(0.15)
    holder = await relay_holder(fleet)
    fleet.kill(holder)  # the relay's holder, mid-stream
    fleet.start(holder)
    await at_share(0.35)
    fleet.kill("scorer-1")
    fleet.start("scorer-1")
    await at_share(0.55)
    killed_node = await asyncio.to_thread(cluster.kafka, "stop", "--node", "2", "--kill")
    assert killed_node.returncode == 0, killed_node.stdout + killed_node.stderr
    written = await streaming
    await served(fleet, holder)
    await asyncio.sleep(1.0)
    stop_commands.set()
    await commanding
    assert check_ins.acknowledged, "no check-in was acknowledged"

    await scored_up_to_offsets(ours, settings, last_offsets(written))
    async with undisturbed(reference_settings, reference):
        await scored_up_to_offsets(reference, reference_settings, last_offsets(written))
    restarted = await asyncio.to_thread(cluster.kafka, "start", "--node", "2")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr

    # The store: every bound key result as undisturbed, every acknowledged check-in kept.
    for objective_id in objective_ids:
        assert current_values(ours, objective_id) == current_values(reference, objective_id)
    for objective_id, key_result_id in people:
        if key_result_id in check_ins.acknowledged:
            assert current_values(ours, objective_id) == [check_ins.acknowledged[key_result_id]]

    # The read models, as served: the same values, once the projectors caught up.
    async def projected() -> bool:
        fleet.assert_alive()
        async with httpx.AsyncClient(timeout=10) as http:
            for objective_id in [*objective_ids, *(o for o, _ in people)]:
                answer = await http.get(
                    f"{fleet.url('serve-b')}/objectives/{objective_id}",
                    headers=auth_headers("reader"),
                )
                if answer.status_code != 200:
                    return False
                served_values = [kr["current"] for kr in answer.json()["key_results"]]
                if served_values != current_values(ours, objective_id):
                    return False
        return True

    await eventually(projected, "the read models to show every value", deadline_s=SETTLE_S)

    # okr.events carries every stored event; the audit finds store and topic intact.
    stored = {
        (UUID(str(n.originator_id)), n.originator_version)
        for page in ours.notification_pages()
        for n in page
    }

    async def relayed() -> bool:
        messages = await read_to_end(settings, topics.EVENTS)
        seen = {
            (UUID(body["objective_id"]), body["version"])
            for body in (orjson.loads(m.value) for m in messages)
        }
        return stored <= seen

    await eventually(relayed, "okr.events to carry every stored event", deadline_s=SETTLE_S)
    verified = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", "audit", "verify"],
        env=fleet.environment("auditor"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
    assert "intact" in verified.stdout


async def scored(application: OkrApplication, settings: Settings) -> int:
    from tests.fault.test_scorer_kill import scored_total

    return await asyncio.to_thread(scored_total, application, settings)


def checked_in_objective(application: OkrApplication) -> tuple[UUID, UUID]:
    """An active objective with one key result people check in by hand."""
    objective_id = uuid.uuid4()
    for body in (
        wire.CreateObjective(
            title="Delight customers",
            owner="alice",
            team="care",
            period_start=seed.QUARTER_START,
            period_end=seed.QUARTER_END,
            key_results=[seed.NPS.as_definition()],
        ),
        wire.ActivateObjective(),
    ):
        result = application.handle(
            wire.Command(
                command_id=str(uuid.uuid4()), objective_id=objective_id, actor="alice", body=body
            )
        )
        assert result.status == "accepted", result
    objective = application.get_objective(objective_id)
    assert objective is not None
    return objective_id, objective.key_results[0].key_result_id
