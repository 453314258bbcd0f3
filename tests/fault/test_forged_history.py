"""Forgeries the hash chain cannot see are caught against a checkpoint an auditor kept.

After a checkpoint is kept and the log grows, a forger with write access to the database (and,
in (d), to `okr.events`) (a) deletes an objective's newest event, (b) edits an event and
recomputes its chain hash and every later one, (c) swaps two events' places in the store, or
(d) does (b) and rewrites `okr.events` to match. Each passes `okr audit verify` as it was before
the transparency log. Each is caught by `okr audit verify --since-checkpoint`, naming the place,
when the forger leaves the log's tree alone; and by the consistency proof (`okr audit
consistency` then `okr audit check`) when the forger rebuilds the tree to match. An untouched
store proves consistent.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import psycopg
import pytest
from psycopg.rows import dict_row
from typer.testing import CliRunner, Result

from domain.chain import GENESIS_HASH, EventRecord, chain_hash
from events import commands as wire
from services.audit.verify import verify
from services.cli.main import app as cli
from services.commands.application import OkrApplication
from services.kafka.admin import ensure_topics
from services.relay.publisher import relay_once
from services.settings import Settings
from services.stores import is_postgres, sqlite_path
from services.transparency.log_store import LogWriter, event_type, postgres_dialect, sqlite_dialect
from tests import seed
from tests.store_support import execute

pytestmark = [pytest.mark.fault]


def events_table(settings: Settings) -> str:
    """eventsourcing names the table after the application on PostgreSQL only."""
    return "okr_events" if is_postgres(settings.event_store_url) else "stored_events"


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "OKR_EVENT_STORE_URL": settings.event_store_url,
        "OKR_READ_STORE_URL": settings.read_store_url,
        "OKR_AUDIT_SIGNING_KEY_FILE": str(settings.audit_signing_key_file),
        "OKR_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "OKR_TOPIC_PREFIX": settings.topic_prefix,
    }


def okr(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=cli_env(settings))


def new_objective(application: OkrApplication, check_ins: int) -> UUID:
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
            title="Grow revenue",
            owner="alice",
            team="sales",
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


# --- the forger's tools: SQL on the store, nothing of the application ---------------------------


def _key(settings: Settings, objective_id: UUID) -> Any:
    return objective_id if is_postgres(settings.event_store_url) else objective_id.hex


def _state(settings: Settings, objective_id: UUID, version: int) -> dict[str, Any]:
    [(state,)] = execute(
        settings,
        f"SELECT state FROM {events_table(settings)} "
        "WHERE originator_id = ? AND originator_version = ?",
        _key(settings, objective_id),
        version,
    )
    loaded = orjson.loads(bytes(state))
    assert isinstance(loaded, dict)
    return loaded


def _rewrite(settings: Settings, objective_id: UUID, version: int, state: dict[str, Any]) -> None:
    execute(
        settings,
        f"UPDATE {events_table(settings)} SET state = ? "
        "WHERE originator_id = ? AND originator_version = ?",
        orjson.dumps(state),
        _key(settings, objective_id),
        version,
    )


def rechain(settings: Settings, objective_id: UUID) -> None:
    """Recompute every chain hash of an objective, as a forger covering an edit does."""
    rows = execute(
        settings,
        f"SELECT originator_version, topic FROM {events_table(settings)} WHERE originator_id = ? "
        "ORDER BY originator_version",
        _key(settings, objective_id),
    )
    previous = GENESIS_HASH
    for version, topic in rows:
        state = _state(settings, objective_id, version)
        record = EventRecord.from_stored(objective_id, version, event_type(topic), state)
        previous = state["chain_hash"] = chain_hash(previous, record)
        _rewrite(settings, objective_id, version, state)


def delete_newest(settings: Settings, objective_id: UUID, version: int) -> None:
    execute(
        settings,
        f"DELETE FROM {events_table(settings)} WHERE originator_id = ? AND originator_version = ?",
        _key(settings, objective_id),
        version,
    )


def edit_and_rechain(settings: Settings, objective_id: UUID, version: int) -> None:
    state = _state(settings, objective_id, version)
    state["value"] = 99.0  # a better check-in than the one recorded
    _rewrite(settings, objective_id, version, state)
    rechain(settings, objective_id)


def swap_places(settings: Settings, first: tuple[UUID, int], second: tuple[UUID, int]) -> None:
    """Swap two events' places in store order (their notification ids): each objective's own
    history, and so every chain, is unchanged."""
    column = "notification_id" if is_postgres(settings.event_store_url) else "rowid"
    where = "originator_id = ? AND originator_version = ?"
    [(a,)] = execute(
        settings,
        f"SELECT {column} FROM {events_table(settings)} WHERE {where}",
        _key(settings, first[0]),
        first[1],
    )
    [(b,)] = execute(
        settings,
        f"SELECT {column} FROM {events_table(settings)} WHERE {where}",
        _key(settings, second[0]),
        second[1],
    )
    execute(settings, f"UPDATE {events_table(settings)} SET {column} = ? WHERE {column} = ?", -1, a)
    execute(settings, f"UPDATE {events_table(settings)} SET {column} = ? WHERE {column} = ?", a, b)
    execute(settings, f"UPDATE {events_table(settings)} SET {column} = ? WHERE {column} = ?", b, -1)


def rebuild_tree(settings: Settings) -> None:
    """Throw the log's tree away and build it again from the events as they are now."""
    if is_postgres(settings.event_store_url):
        with psycopg.connect(settings.event_store_url, row_factory=dict_row) as conn:
            rows = conn.cursor()
            rows.execute("DELETE FROM merkle_hashes")
            rows.execute("DELETE FROM merkle_leaves")
            LogWriter(postgres_dialect("public", events_table(settings))).backfill(rows)
        return
    connection = sqlite3.connect(sqlite_path(settings.event_store_url))
    connection.row_factory = sqlite3.Row
    with connection:
        cursor = connection.cursor()
        cursor.execute("DELETE FROM merkle_hashes")
        cursor.execute("DELETE FROM merkle_leaves")
        LogWriter(sqlite_dialect(events_table(settings))).backfill(cursor)
    connection.close()


# --- the scenarios -------------------------------------------------------------------------------


class Story:
    """Two objectives written, a checkpoint kept by the auditor, then a third objective."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        application = OkrApplication(settings)
        try:
            self.a = new_objective(application, check_ins=2)  # versions 1..4
            self.b = new_objective(application, check_ins=1)  # versions 1..3
            kept = okr(settings, "audit", "checkpoint", "--output", str(tmp_path / "kept.note"))
            assert kept.exit_code == 0, kept.output
            self.c = new_objective(application, check_ins=1)
        finally:
            application.close()
        self.checkpoint = tmp_path / "kept.note"
        keys = okr(settings, "audit", "public-key")
        assert keys.exit_code == 0, keys.output
        self.keys = tmp_path / "verifier.keys"
        self.keys.write_text(keys.output)
        self.tmp_path = tmp_path

    def chains_verify_clean(self, *, check_topic: bool = False) -> bool:
        application = OkrApplication(self.settings)
        try:
            report = asyncio.run(verify(self.settings, application, check_topic=check_topic))
        finally:
            application.close()
        return report.intact

    def verify_since_checkpoint(self) -> Result:
        return okr(
            self.settings,
            "audit",
            "verify",
            "--no-topic",
            "--since-checkpoint",
            str(self.checkpoint),
        )

    def consistency_checked(self) -> Result:
        proof = self.tmp_path / "consistency.json"
        made = okr(self.settings, "audit", "consistency", str(self.checkpoint), "-o", str(proof))
        assert made.exit_code == 0, made.output
        return CliRunner().invoke(
            cli, ["audit", "check", "consistency", str(proof), "--key-file", str(self.keys)]
        )


@pytest.fixture
def story(store_settings: Settings, tmp_path: Path) -> Iterator[Story]:
    yield Story(store_settings, tmp_path)


def test_an_untouched_store_proves_consistent(story: Story) -> None:
    verified = story.verify_since_checkpoint()
    assert verified.exit_code == 0, verified.output
    assert "consistent" in verified.output
    checked = story.consistency_checked()
    assert checked.exit_code == 0, checked.output
    assert "tree size 7" in checked.output and "tree size 10" in checked.output


Forgery = Callable[[Story], str]
"""Tampers with the story's store; returns what the report must name."""


def deleted_newest(story: Story) -> str:
    delete_newest(story.settings, story.a, 4)
    return "no longer in the store"


def edited_and_rechained(story: Story) -> str:
    edit_and_rechain(story.settings, story.a, 3)
    return f"objective {story.a} version 3: edited"


def swapped(story: Story) -> str:
    swap_places(story.settings, (story.a, 2), (story.b, 2))
    return "events were swapped"


FORGERIES = {"delete": deleted_newest, "edit": edited_and_rechained, "swap": swapped}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forgery_that_keeps_the_tree_is_named_by_verify(story: Story, forgery: str) -> None:
    named = FORGERIES[forgery](story)
    assert story.chains_verify_clean(), "the forgery should pass the chain check alone"

    verified = story.verify_since_checkpoint()

    assert verified.exit_code == 1, verified.output
    assert named in verified.output
    assert "do not hash to the checkpoint's root" in verified.output


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forgery_that_rebuilds_the_tree_fails_the_consistency_proof(
    story: Story, forgery: str
) -> None:
    FORGERIES[forgery](story)
    rebuild_tree(story.settings)
    assert story.chains_verify_clean()

    checked = story.consistency_checked()
    verified = story.verify_since_checkpoint()

    assert checked.exit_code == 1, checked.output
    assert "refused" in checked.output
    assert verified.exit_code == 1, verified.output
    assert "not an extension of the checkpointed one" in verified.output
    assert "rebuilt to match" in verified.output


def test_a_forgery_with_okr_events_rewritten_to_match_is_caught(
    store_settings: Settings, tmp_path: Path
) -> None:
    """(d): the edited store relayed to a fresh `okr.events`, so store and topic agree."""
    story = Story(store_settings, tmp_path)
    named = edited_and_rechained(story)
    rewritten = store_settings.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:10]}."})
    story.settings = rewritten
    application = OkrApplication(rewritten)
    try:
        asyncio.run(ensure_topics(rewritten))
        asyncio.run(relay_once(rewritten, application))
    finally:
        application.close()
    assert story.chains_verify_clean(check_topic=True), "store and topic agree: no break"

    verified = okr(rewritten, "audit", "verify", "--since-checkpoint", str(story.checkpoint))
    assert verified.exit_code == 1, verified.output
    assert named in verified.output

    rebuild_tree(rewritten)
    checked = story.consistency_checked()
    assert checked.exit_code == 1, checked.output


def test_a_checkpoint_signed_by_another_key_or_changed_is_refused(story: Story) -> None:
    note = story.checkpoint.read_text()
    for forged in (note.replace("\n7\n", "\n8\n"), note.replace(note[0], chr(ord(note[0]) + 1), 1)):
        path = story.tmp_path / "forged.note"
        path.write_text(forged)
        refused = CliRunner().invoke(
            cli, ["audit", "check", "checkpoint", str(path), "--key-file", str(story.keys)]
        )
        assert refused.exit_code == 1, refused.output
    other = story.settings.model_copy(
        update={"audit_signing_key_file": story.tmp_path / "other.key"}
    )
    signed_elsewhere = okr(other, "audit", "checkpoint")
    path = story.tmp_path / "elsewhere.note"
    path.write_text(signed_elsewhere.output)
    refused = CliRunner().invoke(
        cli, ["audit", "check", "checkpoint", str(path), "--key-file", str(story.keys)]
    )
    assert refused.exit_code == 1, refused.output
    accepted = CliRunner().invoke(
        cli, ["audit", "check", "checkpoint", str(story.checkpoint), "--key-file", str(story.keys)]
    )
    assert accepted.exit_code == 0, accepted.output
