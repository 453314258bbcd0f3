"""The projector's fold, without Kafka: domain decisions -> relay envelopes -> an SQLite read store.

What the read API is promised: rows and scores equal the aggregate's own state at every version,
every score-affecting event leaves a timeline row saying why, every event leaves an audit row with
who, why and which fields changed, and neither a redelivery, a replay, a gap nor garbage on the
topic changes the rows or stops the projector.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest

from domain import objective as decide
from domain.objective import Decision, Objective, ObjectiveDetails, ObjectiveStatus, evolve
from domain.objective_events import Aggregation, DomainEvent, KpiBinding
from events.okr import ObjectiveRevised, OkrEventEnvelope
from projections.projector import BatchReport, Message, apply_batch
from projections.sql import SqlProjectionWriter
from projections.sqlite import SQLiteReadStore
from projections.views import (
    TIMELINE_CAUSES,
    FieldChange,
    InvalidCursorError,
    ObjectiveFilter,
    ObjectiveRow,
    ReadStoreDump,
)
from services.relay.publisher import to_envelope
from tests import seed

TOPIC = "okr.events"
ALICE = "alice@example.com"
BOB = "bob@example.com"
START = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)

NPS = seed.NPS.as_spec()
PURCHASE_PATH = seed.PURCHASE_PATH.as_spec(weight=2)
SALES = seed.SALES.as_spec()


class History:
    """Takes decisions on one objective through the domain, keeping its events and its states."""

    def __init__(self, *, title: str = "Win the mid-market", **create: Any) -> None:
        self.clock = iter(START + timedelta(minutes=n) for n in range(10_000))
        self.events: list[DomainEvent] = []
        self.states: list[Objective] = []
        defaults: dict[str, Any] = {
            "description": "",
            "parent_id": None,
            "owner": ALICE,
            "team": "growth",
            "period_start": date(2026, 7, 1),
            "period_end": date(2026, 9, 30),
            "key_results": [NPS, PURCHASE_PATH],
        }
        fields = defaults | create
        key_results = fields.pop("key_results")
        details = ObjectiveDetails(title=title, **fields)
        events, _ = decide.create_objective(
            self.decision(), details, key_results, objective_id=uuid4()
        )
        self.record(events)

    @property
    def objective(self) -> Objective:
        return self.states[-1]

    def kr(self, index: int) -> UUID:
        return self.objective.key_results[index].key_result_id

    def decision(self, actor: str = ALICE, reason: str | None = None) -> Decision:
        return Decision(actor=actor, command_id=str(uuid4()), now=next(self.clock), reason=reason)

    def do(
        self,
        decision_function: Callable[..., Any],
        *args: Any,
        actor: str = ALICE,
        reason: str | None = None,
        **kwargs: Any,
    ) -> None:
        outcome = decision_function(self.objective, self.decision(actor, reason), *args, **kwargs)
        self.record(outcome if isinstance(outcome, list) else outcome[0])

    def record(self, events: list[DomainEvent]) -> None:
        assert events, "every step of these histories is a change"
        for event in events:
            self.states.append(evolve(event, self.states[-1] if self.states else None))
            self.events.append(event)


def messages(events: Sequence[DomainEvent], first_offset: int = 0) -> list[Message]:
    return [
        Message(TOPIC, 0, first_offset + index, to_envelope(event).to_bytes())
        for index, event in enumerate(events)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteReadStore]:
    opened = SQLiteReadStore(tmp_path / "read.sqlite")
    yield opened
    opened.close()


def full_history() -> History:
    """Every kind of event an objective lives through, two people deciding."""
    history = History()
    history.do(
        decide.revise_objective, ObjectiveRevised(title="Win the whole mid-market", team="sales")
    )
    history.do(decide.activate_objective)
    history.do(decide.check_in, history.kr(0), 71, confidence=0.6, note="survey in", actor=BOB)
    history.do(decide.check_in, history.kr(1), 5)
    history.do(decide.add_key_result, SALES)
    history.do(decide.bind_kpi, history.kr(2), KpiBinding(kpi_key="sales.x", aggregation="sum"))
    history.do(
        decide.record_kpi_progress,
        history.kr(2),
        1150,
        observations=3,
        last_kpi_event_id="kpi-42",
        last_offset=1041,
    )
    history.do(
        decide.revise_key_result,
        history.kr(0),
        NPS.model_copy(update={"target": 85.0}),
        reason="board moved the bar",
    )
    history.do(decide.remove_key_result, history.kr(1), reason="merged into NPS")
    history.do(decide.comment_key_result, history.kr(0), "Survey slips a week", actor=BOB)
    history.do(decide.close_objective, reason="end of Q3", retrospective="NPS carried it")
    return history


def content(dump: ReadStoreDump) -> ReadStoreDump:
    """The read models without the positions (which move with every message, even skipped)."""
    return dump.model_copy(update={"positions": ()})


# --- rows and scores ------------------------------------------------------------------------------


def test_every_projected_version_matches_the_aggregate_row_for_row(store: SQLiteReadStore) -> None:
    history = full_history()

    for offset, (event, state) in enumerate(zip(history.events, history.states, strict=True)):
        report = apply_batch(store, messages([event], offset))
        assert report == BatchReport(applied=1)

        row = store.get_objective(state.id)
        assert row is not None
        assert (row.version, row.status, row.title, row.team) == (
            state.version,
            state.status,
            state.title,
            state.team,
        )
        assert row.score == pytest.approx(state.score)
        assert (row.created_at, row.updated_at) == (state.created_on, state.modified_on)
        key_results = store.key_results(state.id)
        assert [kr.key_result_id for kr in key_results] == [
            kr.key_result_id for kr in state.key_results
        ]
        for projected, kept in zip(key_results, state.key_results, strict=True):
            assert projected.score == pytest.approx(kept.score.score)
            assert projected.attainment == pytest.approx(kept.score.attainment)
            assert (projected.current, projected.confidence, projected.last_update) == (
                kept.current,
                kept.confidence,
                kept.last_update,
            )
            assert projected.target == kept.spec.target
            assert projected.kpi_key == (kept.binding.kpi_key if kept.binding else None)
        assert [kr.position for kr in key_results] == list(range(len(key_results)))

    final = store.get_objective(history.objective.id)
    assert final is not None
    assert final.status is ObjectiveStatus.CLOSED
    assert final.final_score == pytest.approx(history.objective.final_score)
    assert final.retrospective == "NPS carried it"
    assert store.objective_version(history.objective.id) == len(history.events)
    assert store.positions() == {(TOPIC, 0): len(history.events)}


def test_a_created_objective_scores_zero_and_resolves_relative_targets(
    store: SQLiteReadStore,
) -> None:
    history = History(key_results=[SALES])
    apply_batch(store, messages(history.events))

    (sales,) = store.key_results(history.objective.id)
    assert (sales.target, sales.relative_target, sales.kind) == (1300, "+30%", "increase")
    assert (sales.current, sales.score, sales.attainment) == (None, 0.0, None)
    row = store.get_objective(history.objective.id)
    assert row is not None
    assert (row.status, row.score, row.version, row.final_score) == ("draft", 0.0, 1, None)


def test_scores_follow_check_ins_kpi_progress_and_removals(store: SQLiteReadStore) -> None:
    history = History()
    history.do(decide.activate_objective)
    history.do(decide.check_in, history.kr(0), 71)  # (71 - 62) / (80 - 62) = 50 %
    history.do(decide.check_in, history.kr(1), 5)  # (7 - 5) / (7 - 4) = 66.7 %, weight 2
    history.do(decide.check_in, history.kr(0), 89.5)  # 152.8 % attainment, score clamped to 100
    history.do(decide.remove_key_result, history.kr(1), reason="not ours to move")
    apply_batch(store, messages(history.events))

    timeline = store.timeline(history.objective.id)
    assert [(t.version, t.cause) for t in timeline] == [
        (1, "created"),
        (3, "check_in"),
        (4, "check_in"),
        (5, "check_in"),
        (6, "key_result_removed"),
    ]
    scores = [(t.value, t.kr_score, t.objective_score) for t in timeline]
    assert scores[1] == pytest.approx((71, 50, 50 / 3))
    assert scores[2] == pytest.approx((5, 200 / 3, (50 + 2 * 200 / 3) / 3))
    assert scores[3] == pytest.approx((89.5, 100, (100 + 2 * 200 / 3) / 3))
    assert scores[4][:2] == (None, None)
    assert scores[4][2] == pytest.approx(100)
    assert timeline[3].kr_attainment == pytest.approx(27.5 / 18 * 100)
    assert timeline[4].detail == {"title": PURCHASE_PATH.title}
    assert [t.version for t in store.timeline(history.objective.id, history.kr(0))] == [3, 5]


def test_timeline_details_say_why_a_score_moved(store: SQLiteReadStore) -> None:
    history = full_history()
    apply_batch(store, messages(history.events))

    by_cause = {t.cause: t for t in store.timeline(history.objective.id)}
    assert set(by_cause) == TIMELINE_CAUSES
    check_in = by_cause["check_in"]  # the last one: the range key result at 5
    assert check_in.actor == ALICE
    kpi = by_cause["kpi"]
    assert kpi.detail == {
        "kpi_key": "sales.x",
        "observations": 3,
        "last_kpi_event_id": "kpi-42",
        "last_offset": 1041,
    }
    assert kpi.value == 1150
    assert kpi.kr_score == pytest.approx(50)
    bob_check_in = store.timeline(history.objective.id, history.kr(0))[0]
    assert (bob_check_in.actor, bob_check_in.detail) == (
        BOB,
        {"note": "survey in", "confidence": 0.6},
    )
    comment = by_cause["comment"]
    assert (comment.actor, comment.detail) == (BOB, {"text": "Survey slips a week"})
    assert comment.key_result_id == history.kr(0)
    timeline = store.timeline(history.objective.id)
    before = timeline[timeline.index(comment) - 1]
    assert comment.value == 71
    assert comment.objective_score == before.objective_score, "a comment moves no score"
    closed = by_cause["closed"]
    assert closed.detail == {"final_score": pytest.approx(closed.objective_score)}


# --- audit ----------------------------------------------------------------------------------------


def test_audit_has_one_row_per_event_with_actor_reason_and_field_diffs(
    store: SQLiteReadStore,
) -> None:
    history = full_history()
    apply_batch(store, messages(history.events))
    nps, range_kr = history.states[0].key_results[0], history.states[0].key_results[1]

    audit = store.history(history.objective.id)
    assert [a.version for a in audit] == list(range(1, len(history.events) + 1))
    assert [a.event_type for a in audit] == [type(e).__name__ for e in history.events]
    assert [(a.actor, a.command_id, a.reason) for a in audit] == [
        (e.actor, e.command_id, e.reason) for e in history.events
    ]

    created = {change.field: change for change in audit[0].changes}
    assert all(change.before is None for change in created.values())
    assert created["title"].after == "Win the mid-market"
    assert created["status"].after == "draft"
    assert created["period_start"].after == "2026-07-01"
    assert created[f"key_results[{nps.key_result_id}].target"].after == 80
    assert created[f"key_results[{range_kr.key_result_id}].target_low"].after == 3
    assert "parent_id" not in created, "null to null is no change"

    assert audit[1].changes == (
        FieldChange(field="title", before="Win the mid-market", after="Win the whole mid-market"),
        FieldChange(field="team", before="growth", after="sales"),
    )
    assert audit[2].changes == (FieldChange(field="status", before="draft", after="active"),)
    assert audit[3].changes == (
        FieldChange(field=f"key_results[{nps.key_result_id}].current", before=None, after=71),
        FieldChange(field=f"key_results[{nps.key_result_id}].confidence", before=None, after=0.6),
    )
    target_change = audit[8]
    assert target_change.reason == "board moved the bar"
    assert target_change.changes == (
        FieldChange(field=f"key_results[{nps.key_result_id}].target", before=80, after=85),
    )
    removed = audit[9]
    assert removed.reason == "merged into NPS"
    assert {c.field for c in removed.changes} == {
        f"key_results[{range_kr.key_result_id}].{name}"
        for name in (
            "title",
            "kind",
            "metric",
            "baseline",
            "target_low",
            "target_high",
            "deadline",
            "weight",
            "current",
        )
    }
    assert all(c.after is None for c in removed.changes)
    assert audit[10].changes == (
        FieldChange(
            field=f"key_results[{nps.key_result_id}].comment",
            before=None,
            after="Survey slips a week",
        ),
    )
    closed = {c.field: c for c in audit[11].changes}
    assert closed["status"] == FieldChange(field="status", before="active", after="closed")
    assert closed["final_score"].after == pytest.approx(history.objective.final_score)


# --- exactly-once effect --------------------------------------------------------------------------


def test_a_redelivered_batch_changes_nothing(store: SQLiteReadStore) -> None:
    history = full_history()
    batch = messages(history.events)
    apply_batch(store, batch)
    before = store.dump()

    report = apply_batch(store, batch)

    assert report == BatchReport(duplicates=len(batch))
    assert store.dump() == before


def test_a_relay_resend_at_later_offsets_changes_only_the_position(store: SQLiteReadStore) -> None:
    history = full_history()
    apply_batch(store, messages(history.events))
    before = store.dump()

    resent = messages(history.events[-4:], first_offset=len(history.events))
    report = apply_batch(store, resent)

    assert report == BatchReport(duplicates=4)
    assert content(store.dump()) == content(before)
    assert store.positions() == {(TOPIC, 0): len(history.events) + 4}


def test_batch_boundaries_do_not_matter(store: SQLiteReadStore, tmp_path: Path) -> None:
    """One message at a time, odd slices, or one batch: the same rows (what rebuild relies on)."""
    histories = [full_history(), full_history(), History()]
    all_messages = [
        Message(TOPIC, partition, offset, to_envelope(event).to_bytes())
        for partition, history in enumerate(histories)
        for offset, event in enumerate(history.events)
    ]
    apply_batch(store, all_messages)
    in_slices = SQLiteReadStore(tmp_path / "sliced.sqlite")
    for start in range(0, len(all_messages), 7):
        apply_batch(in_slices, all_messages[start : start + 7])

    assert in_slices.dump() == store.dump()


def test_a_gap_is_skipped_without_corrupting_and_the_resend_completes_it(
    store: SQLiteReadStore, tmp_path: Path
) -> None:
    history = full_history()
    events = history.events
    apply_batch(store, messages(events[:3]))
    before = store.dump()

    # Event 4 is lost on its way; 5 and 6 arrive: they must not be folded onto version 3.
    report = apply_batch(store, messages(events[4:6], first_offset=3))

    assert report == BatchReport(gaps=2)
    assert content(store.dump()) == content(before)
    assert store.objective_version(history.objective.id) == 3

    # The relay resends from the missing event on, in order.
    report = apply_batch(store, messages(events[3:], first_offset=5))

    assert report == BatchReport(applied=len(events) - 3)
    in_order = SQLiteReadStore(tmp_path / "in-order.sqlite")
    apply_batch(in_order, messages(events))
    assert content(store.dump()) == content(in_order.dump())


def test_events_of_an_unknown_objective_after_version_one_are_gaps(store: SQLiteReadStore) -> None:
    history = full_history()
    report = apply_batch(store, messages(history.events[1:]))
    assert report == BatchReport(gaps=len(history.events) - 1)
    assert store.counts() == {
        "objectives": 0,
        "key_results": 0,
        "score_timeline": 0,
        "audit": 0,
        "projection_positions": 1,
    }


def test_unreadable_messages_are_counted_and_skipped_and_the_position_moves_past_them(
    store: SQLiteReadStore,
) -> None:
    history = History()
    valid = to_envelope(history.events[0])
    unknown_type = valid.model_copy(update={"type": "ObjectiveTeleported"}).to_bytes()
    bad_payload = orjson.dumps(valid.model_dump(mode="json") | {"payload": {"title": 3}})
    batch = [
        Message(TOPIC, 1, 10, b"not json"),
        Message(TOPIC, 1, 11, None),
        Message(TOPIC, 1, 12, unknown_type),
        Message(TOPIC, 1, 13, bad_payload),
        Message(TOPIC, 1, 14, b"[1, 2]"),
        Message(TOPIC, 1, 15, valid.to_bytes()),
    ]

    report = apply_batch(store, batch)

    assert (report.applied, report.invalid) == (1, 5)
    assert [(r.message.offset, r.reason) for r in report.rejected] == [
        (10, "not_json"),
        (11, "empty"),
        (12, "unknown_type"),
        (13, "schema_violation"),
        (14, "not_an_object"),
    ]
    assert store.objective_version(history.objective.id) == 1
    assert store.positions() == {(TOPIC, 1): 16}


def test_an_event_that_cannot_follow_the_projected_state_is_skipped(
    store: SQLiteReadStore,
) -> None:
    history = History()
    history.do(decide.activate_objective)
    apply_batch(store, messages(history.events))
    stray = history.events[-1].model_copy(update={"originator_version": 3})
    check_in_on_unknown_kr = to_envelope(stray).model_copy(
        update={"type": "ProgressCheckedIn", "schema_version": 2}
    )
    forged = OkrEventEnvelope.model_validate(
        check_in_on_unknown_kr.model_dump()
        | {"payload": {"key_result_id": str(uuid4()), "value": 1.0}}
    )

    report = apply_batch(store, [Message(TOPIC, 0, 2, forged.to_bytes())])

    assert (report.applied, report.invalid) == (0, 1)
    [rejected] = report.rejected
    assert rejected.reason == "processing_failed"
    assert "ProgressCheckedIn v3 cannot follow the projected state" in rejected.detail
    assert store.objective_version(history.objective.id) == 2


def test_a_failing_batch_leaves_neither_rows_nor_position(
    store: SQLiteReadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = full_history()
    apply_batch(store, messages(history.events[:2]))
    before = store.dump()

    def disk_full(self: SqlProjectionWriter, rows: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(SqlProjectionWriter, "append_audit", disk_full)
    with pytest.raises(OSError, match="disk full"):
        apply_batch(store, messages(history.events[2:], first_offset=2))

    assert store.dump() == before


# --- queries --------------------------------------------------------------------------------------


def test_listing_pages_in_creation_order_and_filters(store: SQLiteReadStore) -> None:
    parent = History(title="Company: grow profitably")
    q3 = [History(title=f"Q3 objective {n}", parent_id=parent.objective.id) for n in range(5)]
    q4 = History(
        title="Q4 objective",
        owner=BOB,
        team="support",
        period_start=date(2026, 10, 1),
        period_end=date(2026, 12, 31),
    )
    everyone = [parent, *q3, q4]
    # Several objectives created at the same instant: the id breaks the tie, pages stay stable.
    apply_batch(store, messages([event for history in everyone for event in history.events]))
    q3[0].do(decide.activate_objective)
    apply_batch(store, messages(q3[0].events[1:], first_offset=100))

    pages: list[ObjectiveRow] = []
    cursor = None
    while True:
        page = store.list_objectives(limit=2, after_cursor=cursor)
        pages.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    expected = sorted((h.objective for h in everyone), key=lambda o: (o.created_on, str(o.id)))
    assert [row.objective_id for row in pages] == [o.id for o in expected]

    def ids(filters: ObjectiveFilter) -> set[UUID]:
        return {row.objective_id for row in store.list_objectives(filters, limit=100).items}

    assert ids(ObjectiveFilter(owner=BOB)) == {q4.objective.id}
    assert ids(ObjectiveFilter(team="growth", status=ObjectiveStatus.ACTIVE)) == {
        q3[0].objective.id
    }
    assert ids(ObjectiveFilter(period_from=date(2026, 10, 1))) == {q4.objective.id}
    assert ids(ObjectiveFilter(period_to=date(2026, 9, 30))) == {
        h.objective.id for h in [parent, *q3]
    }
    assert ids(ObjectiveFilter(parent_id=parent.objective.id)) == {h.objective.id for h in q3}
    assert [row.objective_id for row in store.children(parent.objective.id)] == [
        o.id for o in expected if o.parent_id == parent.objective.id
    ]
    assert store.get_objective(uuid4()) is None
    assert store.objective_version(uuid4()) is None
    with pytest.raises(InvalidCursorError):
        store.list_objectives(after_cursor="not-a-cursor")
    with pytest.raises(ValueError, match="limit"):
        store.list_objectives(limit=0)


def test_reset_drops_every_row_and_every_position(store: SQLiteReadStore) -> None:
    apply_batch(store, messages(full_history().events))
    assert all(store.counts().values())

    store.reset()

    assert store.counts() == dict.fromkeys(store.counts(), 0)
    assert store.positions() == {}


def test_kpi_aggregation_is_stored_as_bound(store: SQLiteReadStore) -> None:
    history = History()
    history.do(decide.bind_kpi, history.kr(0), KpiBinding(kpi_key="nps", aggregation="avg"))
    apply_batch(store, messages(history.events))
    nps = store.key_results(history.objective.id)[0]
    assert (nps.kpi_key, nps.aggregation) == ("nps", Aggregation.AVG)

    history.do(decide.unbind_kpi, history.kr(0))
    apply_batch(store, messages(history.events[-1:], first_offset=2))
    nps = store.key_results(history.objective.id)[0]
    assert (nps.kpi_key, nps.aggregation) == (None, None)


def test_projections_never_import_services() -> None:
    """Services compose projections; the reverse would make a cycle through the settings."""
    root = Path(__file__).resolve().parents[2] / "projections"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("services"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("services") for a in node.names), path
