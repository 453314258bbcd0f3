"""The projector's writer reuses what it committed only while the stored version says it is current,
and writes only the key result rows an event changed; both stores.

Two `SqlReadStore` handles on one database stand for two projectors of one group: after a
rebalance the other one may have moved an objective on, and the first must read it again rather
than fold the next event onto its stale copy (which would look like a gap and be skipped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID, uuid4

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.postgres import PostgresReadStore
from projections.projector import Message, apply_batch
from projections.sql import SqlReadStore
from projections.sqlite import SQLiteReadStore
from projections.views import TimelineEntry, json_text, moment_text
from tests.okr_stream_support import START, TOPIC, ObjectiveStream, definition

Opener = Callable[[], SqlReadStore]


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[SqlReadStore] = []

    def opener() -> SqlReadStore:
        store: SqlReadStore
        if request.param == "sqlite":
            store = SQLiteReadStore(tmp_path / "read.sqlite")
        else:
            store = PostgresReadStore(request.getfixturevalue("postgres_database"))
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


class Stream(ObjectiveStream):
    """Messages of one objective with two key results, numbered like `okr.events` offsets."""

    def __init__(self) -> None:
        super().__init__(key_results=[uuid4(), uuid4()])

    def message(self, value: bytes) -> Message:
        return Message(TOPIC, self.partition, self.version - 1, value)

    def create(self) -> Message:
        return self.message(self.created([definition(0), definition(1)], self.key_results))

    def move(self, key_result_id: UUID, value: float) -> Message:
        return self.message(self.progress(key_result_id, value))


def test_a_copy_older_than_the_stored_version_is_read_again(open_store: Opener) -> None:
    first, second = open_store(), open_store()
    stream = Stream()
    kr_a, kr_b = stream.key_results
    assert apply_batch(first, [stream.create(), stream.move(kr_a, 10.0)]).applied == 2
    # The other projector moves the objective on: `first` still holds version 2.
    assert apply_batch(second, [stream.move(kr_b, 20.0)]).applied == 1

    report = apply_batch(first, [stream.move(kr_a, 30.0)])

    assert (report.applied, report.gaps) == (1, 0)
    rows = {row.key_result_id: row.current for row in first.key_results(stream.objective_id)}
    assert rows == {kr_a: 30.0, kr_b: 20.0}
    objective = first.get_objective(stream.objective_id)
    assert objective is not None and objective.version == 4


def test_only_the_changed_row_is_written_and_the_rest_are_kept(open_store: Opener) -> None:
    store = open_store()
    stream = Stream()
    kr_a, kr_b = stream.key_results
    apply_batch(store, [stream.create(), stream.move(kr_b, 50.0)])
    untouched = next(r for r in store.key_results(stream.objective_id) if r.key_result_id == kr_b)

    apply_batch(store, [stream.move(kr_a, 25.0), stream.move(kr_a, 75.0)])

    rows = {row.key_result_id: row for row in store.key_results(stream.objective_id)}
    assert rows[kr_b] == untouched
    assert rows[kr_a].current == 75.0 and rows[kr_a].score > 0
    assert [row.position for row in store.key_results(stream.objective_id)] == [0, 1]
    history = store.timeline(stream.objective_id)
    assert [entry.value for entry in history if entry.key_result_id == kr_a] == [25.0, 75.0]


@pytest.fixture
def store(open_store: Opener) -> SqlReadStore:
    """One store for all of a property's examples (each writes an objective of its own)."""
    return open_store()


doubles = st.floats(allow_nan=False) | st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308])
texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
offsets = st.integers(-(2**63), 2**63 - 1)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(
        st.tuples(doubles, st.floats(0, 100), doubles, texts, texts, st.none() | offsets),
        min_size=1,
        max_size=5,
    )
)
def test_appended_entries_read_back_exactly(
    store: SqlReadStore, rows: list[tuple[float, float, float, str, str, int | None]]
) -> None:
    """Every double (infinite attainments, subnormals, the largest) and any text come back as
    they were appended, whichever bulk path took them."""
    objective_id = uuid4()
    entries = [
        TimelineEntry(
            str(objective_id),
            version,
            moment_text(START + timedelta(microseconds=version)),
            None,
            value,
            score,
            attainment,
            score,
            "kpi",
            actor,
            json_text({"kpi_key": "sales.units", "note": note, "last_offset": offset}),
        )
        for version, (value, score, attainment, actor, note, offset) in enumerate(rows, 1)
    ]
    with store.transaction() as writer:
        writer.append_timeline(entries)

    read = store.timeline(objective_id)

    assert [
        (row.value, row.kr_score, row.kr_attainment, row.actor, row.detail) for row in read
    ] == [(e.value, e.kr_score, e.kr_attainment, e.actor, orjson.loads(e.detail)) for e in entries]
    assert [row.occurred_at for row in read] == [
        START + timedelta(microseconds=v) for v in range(1, len(rows) + 1)
    ]
