"""The transparency log follows the event store exactly: every stored event is a leaf, in store
order, appended in the same transaction; checkpoints are signed and kept; every proof the service
makes checks offline; a store from the previous release gets its tree built on upgrade."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest
from typer.testing import CliRunner

from events import commands as wire
from services.audit.checkpoints import (
    CheckpointSchedule,
    make_checkpoint,
    signer_for,
    verifiers_for,
)
from services.audit.proofs import consistency_proof, inclusion_proof
from services.cli.main import app as cli
from services.commands.application import OkrApplication
from services.http.app import create_app
from services.settings import Settings
from services.transparency.log_store import leaf_data
from services.transparency.tlog_check import (
    ConsistencyProof,
    InclusionProof,
    check_consistency,
    check_inclusion,
    leaf_hash,
    open_checkpoint,
    root_of,
)
from tests import seed
from tests.auth_support import auth_headers
from tests.store_support import execute

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def application(store_settings: Settings) -> Iterator[OkrApplication]:
    application = OkrApplication(store_settings)
    yield application
    application.close()


def objective_with_check_ins(application: OkrApplication, check_ins: int = 2) -> UUID:
    objective_id = uuid4()

    def run(body: wire.CommandBody) -> None:
        result = application.handle(
            wire.Command(
                command_id=str(uuid4()), objective_id=objective_id, actor="alice", body=body
            )
        )
        assert result.status == "accepted", result

    run(
        wire.CreateObjective(
            title="Delight customers",
            owner="alice",
            team="care",
            period_start=seed.QUARTER_START,
            period_end=seed.QUARTER_END,
            key_results=[seed.NPS.as_definition()],
        )
    )
    run(wire.ActivateObjective())
    objective = application.get_objective(objective_id)
    assert objective is not None
    for value in range(check_ins):
        run(wire.CheckIn(key_result_id=objective.key_results[0].key_result_id, value=63 + value))
    return objective_id


def stored_leaves(application: OkrApplication) -> list[bytes]:
    """Every stored event's leaf hash, recomputed, in notification order."""
    return [
        leaf_hash(leaf_data(notification))
        for page in application.notification_pages()
        for notification in page
    ]


def test_every_stored_event_is_a_leaf_in_store_order(application: OkrApplication) -> None:
    for _ in range(3):
        objective_with_check_ins(application)

    log = application.receipts.log
    leaves = stored_leaves(application)
    kept = make_checkpoint(log, signer_for(application.settings), "test.example/log")
    checkpoint = open_checkpoint(kept.note, verifiers_for(application.settings))

    assert log.size() == len(leaves) == 12
    assert checkpoint.tree_size == 12
    assert checkpoint.root_hash == root_of(leaves)


def test_every_event_proves_included_and_trees_prove_consistent(
    application: OkrApplication,
) -> None:
    first = objective_with_check_ins(application)
    old = make_checkpoint(
        application.receipts.log, signer_for(application.settings), "okr-ledger.local/events"
    )
    second = objective_with_check_ins(application, check_ins=3)
    verifiers = verifiers_for(application.settings)

    for objective_id, versions in ((first, 4), (second, 5)):
        for version in range(1, versions + 1):
            proof = inclusion_proof(application, objective_id, version)
            round_tripped = InclusionProof.from_json(proof.to_json())
            assert check_inclusion(round_tripped, verifiers).tree_size == 9
            assert f'"version":{version}' in proof.leaf_data.decode()
    consistency = consistency_proof(application, old.note)
    old_checkpoint, new_checkpoint = check_consistency(
        ConsistencyProof.from_json(consistency.to_json()), verifiers
    )
    assert (old_checkpoint.tree_size, new_checkpoint.tree_size) == (4, 9)


def test_writers_in_two_processes_never_interleave_the_log(
    store_settings: Settings, application: OkrApplication
) -> None:
    """Two applications (as two processes) write at once: the tree still holds each stored event
    once, in store order, because leaves are appended under the lock that orders the store."""
    other = OkrApplication(store_settings)
    errors: list[BaseException] = []

    def write(app: OkrApplication) -> None:
        try:
            for _ in range(4):
                objective_with_check_ins(app, check_ins=3)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(app,)) for app in (application, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()

    assert not errors
    log = application.receipts.log
    leaves = stored_leaves(application)
    assert log.size() == len(leaves) == 40
    stored = [digest for _, _, digest in log.leaves(0, 40)]
    assert stored == leaves


def test_a_store_of_the_previous_release_gets_its_tree_on_upgrade(tmp_path: Path) -> None:
    """tests/fixtures/event_store_0_1.sql is a store written by release 0.1 (10 events, two
    objectives, snapshots, receipts), dumped: opening it applies migrations 1-3 and builds the
    tree from the stored events; the events and receipts are untouched."""
    path = tmp_path / "events.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript((FIXTURES / "event_store_0_1.sql").read_text())
    settings = Settings(
        event_store_url=f"sqlite:///{path}",
        read_store_url=f"sqlite:///{tmp_path / 'read.sqlite'}",
        audit_signing_key_file=tmp_path / "key",
    )

    application = OkrApplication(settings)
    try:
        assert application.receipts.log.size() == 10
        kept = make_checkpoint(application.receipts.log, signer_for(settings), "upgrade.test/log")
        assert open_checkpoint(kept.note, verifiers_for(settings)).root_hash == root_of(
            stored_leaves(application)
        )
        objective = application.get_objective(UUID("11111111-1111-4111-8111-111111111111"))
        assert objective is not None and objective.version == 5
        applied = execute(settings, "SELECT version, name FROM event_store_migrations")
        assert [version for version, _ in applied] == [1, 2, 3, 4, 5]
    finally:
        application.close()
    reopened = OkrApplication(settings)  # nothing pending: the tree is not built twice
    try:
        assert reopened.receipts.log.size() == 10
    finally:
        reopened.close()


def test_a_store_made_before_the_log_gets_its_tree_on_upgrade(
    store_settings: Settings, application: OkrApplication
) -> None:
    """The same upgrade on both stores: a store whose tables predate migration 3."""
    for _ in range(2):
        objective_with_check_ins(application)
    before = stored_leaves(application)
    application.close()
    for table in ("merkle_hashes", "merkle_leaves", "audit_checkpoints"):
        execute(store_settings, f"DROP TABLE {table}")
    execute(store_settings, "DELETE FROM event_store_migrations WHERE version = 3")

    upgraded = OkrApplication(store_settings)
    try:
        kept = make_checkpoint(upgraded.receipts.log, signer_for(store_settings), "a.test/log")
        assert open_checkpoint(kept.note, verifiers_for(store_settings)).root_hash == root_of(
            before
        )
        objective_with_check_ins(upgraded)  # and appends go on from there
        assert upgraded.receipts.log.size() == len(before) + 4
    finally:
        upgraded.close()


def test_a_checkpoint_is_due_after_n_events_or_t_seconds() -> None:
    now = [0.0]
    schedule = CheckpointSchedule(every_events=100, every_s=60, clock=lambda: now[0])
    assert schedule.due(0)  # the first round signs whatever there is
    schedule.signed(0)
    assert not schedule.due(0)
    assert not schedule.due(99)
    assert schedule.due(100)
    now[0] = 59.0
    assert not schedule.due(1)
    now[0] = 60.0
    assert schedule.due(1)
    assert not schedule.due(0)  # nothing new: never a checkpoint for nothing
    assert schedule.wait_s(0) == 60


def test_auditors_read_checkpoints_and_proofs_over_http_and_check_them_offline(
    store_settings: Settings, application: OkrApplication, tmp_path: Path
) -> None:
    objective_id = objective_with_check_ins(application)
    api = create_app(store_settings, background=[])
    keys = verifiers_for(store_settings)

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t")

    async def scenario() -> None:
        async with api.router.lifespan_context(api), client() as http:
            headers = auth_headers("auditor")
            latest = await http.get("/audit/checkpoints/latest", headers=headers)
            assert latest.status_code == 200, latest.text
            assert open_checkpoint(latest.text, keys).tree_size == 4
            proof = await http.get(
                "/audit/proofs/inclusion",
                params={"objective_id": str(objective_id), "version": 3, "tree_size": 4},
                headers=headers,
            )
            assert proof.status_code == 200, proof.text
            (tmp_path / "inclusion.json").write_text(proof.text)
            consistency = await http.get(
                "/audit/proofs/consistency", params={"from": 4}, headers=headers
            )
            assert consistency.status_code == 200, consistency.text
            missing = await http.get(
                "/audit/proofs/inclusion",
                params={"objective_id": str(uuid4()), "version": 1},
                headers=headers,
            )
            assert missing.status_code == 404
            assert "no stored event" in missing.json()["message"]
            anonymous = await http.get("/audit/checkpoints/latest")
            assert anonymous.status_code == 401

    import asyncio

    asyncio.run(scenario())
    key_file = tmp_path / "verifiers.txt"
    key_file.write_text("".join(f"{key}\n" for key in keys))
    checked = CliRunner().invoke(
        cli,
        [
            "audit",
            "check",
            "inclusion",
            str(tmp_path / "inclusion.json"),
            "--key-file",
            str(key_file),
        ],
    )
    assert checked.exit_code == 0, checked.output


async def test_the_checkpointer_signs_after_n_events_and_publishes_each_checkpoint(
    settings: Settings,
) -> None:
    from events import topics
    from services.audit.checkpoints import run_checkpointer
    from services.kafka.admin import ensure_topics
    from tests.kafka_support import read_until, running

    await ensure_topics(settings)
    every_four = settings.model_copy(
        update={"checkpoint_every_events": 4, "checkpoint_every_s": 3600}
    )
    application = OkrApplication(every_four)
    keys = verifiers_for(every_four)
    try:
        async with running(run_checkpointer(every_four, application)) as job:
            first = await read_until(settings, topics.AUDIT_CHECKPOINTS, lambda r: len(r) >= 1)
            assert open_checkpoint(first[0].value.decode(), keys).tree_size == 0
            objective_with_check_ins(application)  # 4 events: one checkpoint is due
            objective_with_check_ins(application, check_ins=1)  # 3 more: not yet
            records = await read_until(
                settings, topics.AUDIT_CHECKPOINTS, lambda r: len(r) >= 2, watch=job
            )
    finally:
        application.close()
    sizes = [open_checkpoint(r.value.decode(), keys).tree_size for r in records]
    assert sizes[0] == 0
    assert 4 <= sizes[1] <= 7  # due at 4; later saves may land before it reads the size
    assert records[1].key == every_four.audit_log_origin.encode()
    assert dict(records[1].headers)["tree_size"] == str(sizes[1]).encode()


def test_after_a_key_rotation_old_checkpoints_still_check(
    settings: Settings, tmp_path: Path
) -> None:
    env = {
        "OKR_EVENT_STORE_URL": settings.event_store_url,
        "OKR_READ_STORE_URL": settings.read_store_url,
        "OKR_AUDIT_SIGNING_KEY_FILE": str(settings.audit_signing_key_file),
    }
    application = OkrApplication(settings)
    try:
        objective_with_check_ins(application)
    finally:
        application.close()
    old = CliRunner().invoke(
        cli, ["audit", "checkpoint", "-o", str(tmp_path / "old.note")], env=env
    )
    assert old.exit_code == 0, old.output

    rotated = CliRunner().invoke(cli, ["audit", "rotate-key"], env=env)
    assert rotated.exit_code == 0, rotated.output
    keys = CliRunner().invoke(cli, ["audit", "public-key"], env=env)
    (tmp_path / "keys").write_text(keys.output)
    application = OkrApplication(settings)
    try:
        objective_with_check_ins(application)
    finally:
        application.close()
    proof = CliRunner().invoke(
        cli,
        ["audit", "consistency", str(tmp_path / "old.note"), "-o", str(tmp_path / "p.json")],
        env=env,
    )
    assert proof.exit_code == 0, proof.output

    checked = CliRunner().invoke(
        cli,
        [
            "audit",
            "check",
            "consistency",
            str(tmp_path / "p.json"),
            "--key-file",
            str(tmp_path / "keys"),
        ],
    )
    assert len(keys.output.splitlines()) == 2
    assert checked.exit_code == 0, checked.output
    only_new = keys.output.splitlines()[0]
    refused = CliRunner().invoke(
        cli, ["audit", "check", "checkpoint", str(tmp_path / "old.note"), "--key", only_new]
    )
    assert refused.exit_code == 1, refused.output


def test_the_bytes_kept_from_sealing_are_the_bytes_the_store_holds(
    application: OkrApplication,
) -> None:
    """The log hashes the canonical bytes `seal` computed (no second encoding per event); they
    must be exactly what recomputing from the stored state gives, for every kind of event."""
    from domain.chain import canonical_of

    objective_id = objective_with_check_ins(application, check_ins=3)
    for stored in application.recorder.select_events(objective_id):
        event = application.mapper.to_domain_event(stored)
        assert canonical_of(event) is None  # read back: nothing cached, recomputed from state
    objective = application.get_objective(objective_id)
    assert objective is not None
    decision_events = application.handle(
        wire.Command(
            command_id=str(uuid4()),
            objective_id=objective_id,
            actor="alice",
            body=wire.CheckIn(key_result_id=objective.key_results[0].key_result_id, value=70),
        )
    )
    assert decision_events.status == "accepted"
    [newest] = application.recorder.select_events(objective_id, gt=5)
    assert application.receipts.log.size() == 6
    [(_, _, stored_leaf)] = list(application.receipts.log.leaves(5, 6))
    assert stored_leaf == leaf_hash(leaf_data(newest))
