"""The projector's batches land the rows that `reduce_event`, applied one event at a time, gives.

`apply_batch` folds each objective's events of a batch in memory (`projections.folding`), KPI
progress without the reducer, and writes each table once, the key result and objective rows of
progress-only objectives by narrow updates. Whatever the events and wherever the batches end,
the read store must hold exactly the rows of the reference: `reduce_event` folded event by event,
duplicates and gaps skipped, events that cannot follow the state rejected. Hypothesis draws
streams of several objectives (mostly KPI progress, with every other kind of event, resends,
gaps, progress on unknown key results and garbage in between) and cuts them into batches at
random.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import okr
from events.commands import KeyResultDefinition
from projections.projector import BatchReport, Message, apply_batch
from projections.reducer import reduce_event
from projections.sql import SqlProjectionWriter
from projections.sqlite import SQLiteReadStore
from projections.views import (
    AuditEntry,
    AuditRow,
    KeyResultRow,
    ObjectiveRow,
    ProjectedObjective,
    ReadStoreDump,
    TimelineEntry,
    TimelineRow,
)
from tests.okr_stream_support import TOPIC, ObjectiveStream, definition

ids = st.builds(lambda n: UUID(int=n, version=4), st.integers(1, 2**64))
values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1.0, 50.0, 100.0, 150.0, 3.5, 1e300, -1e300, 5e-324]),
)


@st.composite
def definitions(draw: st.DrawFn) -> KeyResultDefinition:
    """A scorable key result of any kind."""
    kind = draw(st.sampled_from(["increase", "decrease", "range", "at_least", "at_most"]))
    baseline = draw(st.sampled_from([0.0, 10.0, 62.0, -5.0]))
    target = baseline + draw(st.sampled_from([1.0, 18.0, 1e6, 0.1]))
    if kind == "decrease":
        target = baseline - (target - baseline)
    low, high = sorted((baseline - 3.0, baseline + draw(st.sampled_from([-1.0, 2.0, 7.5]))))
    return KeyResultDefinition(
        title=f"Key result {draw(st.integers(0, 99))}",
        kind=kind,
        metric="units",
        baseline=baseline,
        target=None if kind == "range" else target,
        target_low=low if kind == "range" else None,
        target_high=high if kind == "range" else None,
        weight=draw(st.sampled_from([1.0, 2.0, 0.5, 3.0])),
    )


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[int, bytes | None]]:
    """(partition, value) of each message, objectives interleaved, mostly KPI progress."""
    objectives = [
        ObjectiveStream(draw(ids), partition) for partition in range(draw(st.integers(1, 3)))
    ]
    stream: list[tuple[int, bytes | None]] = []
    for objective in objectives:
        key_result_ids = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
        created = [draw(definitions()) for _ in key_result_ids]
        stream.append((objective.partition, objective.created(created, key_result_ids)))
    for _ in range(draw(st.integers(0, 60))):
        objective = draw(st.sampled_from(objectives))
        step = draw(
            st.sampled_from(
                ["progress"] * 12
                + ["check_in", "add", "remove", "revise", "comment", "bind", "activate"]
                + ["close", "resend", "gap", "unknown", "garbage"]
            )
        )
        message = _step(draw, objective, step)
        if message is not None:
            stream.append((objective.partition, message))
    return stream


def _step(draw: st.DrawFn, objective: ObjectiveStream, step: str) -> bytes | None:
    key_results = objective.key_results
    some = draw(st.sampled_from(key_results)) if key_results else None
    if step == "progress" and some is not None:
        return objective.progress(
            some,
            draw(values),
            observations=draw(st.integers(1, 5)),
            last_offset=draw(st.none() | st.integers(0, 10**6)),
        )
    if step == "check_in" and some is not None:
        return objective.publish(
            okr.ProgressCheckedIn(
                key_result_id=some, value=draw(values), confidence=0.5, note="weekly"
            ),
            actor="bob@example.com",
        )
    if step == "add":
        added = draw(ids)
        key_results.append(added)
        definition = draw(definitions())
        return objective.publish(
            okr.KeyResultAdded(
                key_result=okr.KeyResult(key_result_id=added, **definition.model_dump())
            )
        )
    if step == "remove" and some is not None and len(key_results) > 1:
        key_results.remove(some)
        return objective.publish(okr.KeyResultRemoved(key_result_id=some), reason="merged")
    if step == "revise" and some is not None:
        return objective.publish(
            okr.KeyResultRevised(key_result_id=some, key_result=draw(definitions())),
            reason="the bar moved",
        )
    if step == "comment" and some is not None:
        return objective.publish(okr.KeyResultCommented(key_result_id=some, text="noted"))
    if step == "bind" and some is not None:
        return objective.publish(
            okr.KpiBound(key_result_id=some, kpi_key="sales.units", aggregation="sum")
        )
    if step == "activate":
        return objective.publish(okr.ObjectiveActivated())
    if step == "close":
        return objective.publish(okr.ObjectiveClosed(final_score=draw(st.floats(0, 100))))
    if step == "resend" and objective.published:
        return draw(st.sampled_from(objective.published))
    if step == "gap":
        objective.version += 1  # an event lost on its way: what follows is a gap
        return None
    if step == "unknown":  # progress on a key result the objective does not have
        return objective.progress(draw(ids), 1.0)
    if step == "garbage":
        return draw(st.sampled_from([b"{not json", b"[]", b"{}"]))
    return None


def messages_of(stream: list[tuple[int, bytes | None]]) -> list[Message]:
    offsets: dict[int, int] = {}
    messages = []
    for partition, value in stream:
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        messages.append(Message(TOPIC, partition, offset, value))
    return messages


def reference(messages: list[Message]) -> ReadStoreDump:
    """The read models as `reduce_event` makes them, one event at a time, skipping what the
    projector skips (unreadable, duplicate, gap, cannot follow)."""
    states: dict[UUID, ProjectedObjective] = {}
    timeline: list[TimelineRow] = []
    audit: list[AuditRow] = []
    for message in messages:
        try:
            envelope, payload = okr.parse_okr_event(message.value or b"")
        except ValueError:
            continue
        state = states.get(envelope.objective_id)
        if envelope.version != (state.objective.version if state else 0) + 1:
            continue
        try:
            reduction = reduce_event(state, envelope, payload)
        except ValueError:
            continue
        states[envelope.objective_id] = reduction.projected
        if reduction.timeline is not None:
            timeline.append(reduction.timeline)
        audit.append(reduction.audit)

    def by_objective(row: Any) -> tuple[str, int]:
        return str(row.objective_id), row.version

    objectives: list[ObjectiveRow] = sorted(
        (state.objective for state in states.values()), key=lambda row: str(row.objective_id)
    )
    key_results: list[KeyResultRow] = sorted(
        (row for state in states.values() for row in state.key_results),
        key=lambda row: (str(row.objective_id), str(row.key_result_id)),
    )
    return ReadStoreDump(
        objectives=tuple(objectives),
        key_results=tuple(key_results),
        timeline=tuple(sorted(timeline, key=by_objective)),
        audit=tuple(sorted(audit, key=by_objective)),
        positions=(),
    )


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Iterator[SQLiteReadStore]]:
    opened: list[SQLiteReadStore] = []

    def fresh() -> Iterator[SQLiteReadStore]:
        while True:
            store = SQLiteReadStore(tmp_path / f"read-{len(opened)}.sqlite")
            opened.append(store)
            yield store

    yield fresh()
    for store in opened:
        store.close()


def content(dump: ReadStoreDump) -> ReadStoreDump:
    return dump.model_copy(update={"positions": ()})


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams(), cuts=st.lists(st.integers(1, 200), max_size=6))
def test_batches_land_the_rows_of_reduce_event_one_at_a_time(
    stores: Iterator[SQLiteReadStore], stream: list[tuple[int, bytes | None]], cuts: list[int]
) -> None:
    messages = messages_of(stream)
    one_by_one, batched = next(stores), next(stores)
    singly = sum((apply_batch(one_by_one, [message]) for message in messages), BatchReport())
    bounds = sorted({0, len(messages), *(cut for cut in cuts if cut < len(messages))})
    in_batches = sum(
        (apply_batch(batched, messages[a:b]) for a, b in itertools.pairwise(bounds)),
        BatchReport(),
    )

    assert in_batches == singly
    assert batched.dump() == one_by_one.dump()
    assert content(batched.dump()) == reference(messages)


def test_a_batch_of_one_objectives_progress_lands_what_one_by_one_does(
    stores: Iterator[SQLiteReadStore],
) -> None:
    """The live stream's shape: many progress events of one objective in one batch, then a
    check-in among them (the reducer's path, from the state progress left)."""
    objective = ObjectiveStream()
    stream = [(0, _created(objective))]
    for index in range(200):
        stream.append((0, objective.progress(objective.key_results[index % 2], index % 37)))
        if index == 120:
            check_in = okr.ProgressCheckedIn(key_result_id=objective.key_results[1], value=9.0)
            stream.append((0, objective.publish(check_in)))
    messages = messages_of(stream)
    one_by_one, batched = next(stores), next(stores)
    for message in messages:
        apply_batch(one_by_one, [message])
    report = apply_batch(batched, messages)

    assert report == BatchReport(applied=len(messages))
    assert batched.dump() == one_by_one.dump()
    assert content(batched.dump()) == reference(messages)
    assert report.objective_ids == {objective.objective_id}


def _created(objective: ObjectiveStream) -> bytes:
    """Two key results from 0 to 36, weights 1 and 2."""
    return objective.created([definition(index, target=36, weight=index + 1.0) for index in (0, 1)])


def test_a_batch_retried_after_a_failed_write_folds_from_the_stored_rows_again(
    stores: Iterator[SQLiteReadStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folds a projector keeps between batches are ahead of the store when a batch fails
    after folding: the retry must start again from what the store holds."""
    objective = ObjectiveStream()
    first = [_created(objective)]
    first += [objective.progress(objective.key_results[index % 2], index) for index in range(3)]
    second = [objective.progress(objective.key_results[i % 2], i) for i in range(3, 9)]
    messages = messages_of([(0, value) for value in first + second])
    store, undisturbed = next(stores), next(stores)
    apply_batch(store, messages[: len(first)])
    fail_once = [True]
    append_audit = SqlProjectionWriter.append_audit

    def disk_full_once(self: SqlProjectionWriter, entries: Any) -> None:
        if fail_once.pop() if fail_once else False:
            raise OSError("disk full")
        append_audit(self, entries)

    monkeypatch.setattr(SqlProjectionWriter, "append_audit", disk_full_once)
    with pytest.raises(OSError, match="disk full"):
        apply_batch(store, messages[len(first) :])
    report = apply_batch(store, messages[len(first) :])
    apply_batch(undisturbed, messages)

    assert report == BatchReport(applied=len(second))
    assert store.dump() == undisturbed.dump()


def test_entries_are_the_rows_fields_in_order() -> None:
    """The writer appends entries by their fields' names: those of the rows read back."""
    assert TimelineEntry._fields == tuple(TimelineRow.model_fields)
    assert AuditEntry._fields == tuple(AuditRow.model_fields)
