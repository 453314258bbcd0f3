"""`ReadStore.objective_detail` reads as of one moment, on both read stores.

A projector commit is forced between the detail's first SELECT and the next ones: the detail must
still show the objective, its key results and its children as they were before that commit,
never an objective at version N beside key results at N+1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.measures import KeyResultKind
from domain.objective import ObjectiveStatus
from projections.postgres import PostgresReadStore
from projections.sql import Dialect, Session, SqlReadStore
from projections.sqlite import SQLiteReadStore
from projections.views import KeyResultRow, ObjectiveRow, ProjectedObjective

CREATED = datetime(2025, 7, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlReadStore]:
    opened: SqlReadStore
    if request.param == "sqlite":
        opened = SQLiteReadStore(tmp_path / "read.sqlite")
    else:
        opened = PostgresReadStore(request.getfixturevalue("postgres_database"))
    yield opened
    opened.close()


def projected(
    objective_id: UUID, version: int, *, parent_id: UUID | None = None, key_results: int = 2
) -> ProjectedObjective:
    """An objective whose every row carries its version (titles and current values)."""
    objective = ObjectiveRow(
        objective_id=objective_id,
        title=f"objective at v{version}",
        description="",
        owner="alice",
        team="growth",
        period_start=date(2025, 7, 1),
        period_end=date(2025, 9, 30),
        parent_id=parent_id,
        status=ObjectiveStatus.ACTIVE,
        score=float(version),
        version=version,
        created_at=CREATED,
        updated_at=CREATED,
    )
    rows = tuple(
        KeyResultRow(
            objective_id=objective_id,
            key_result_id=UUID(int=position + 1),
            position=position,
            title=f"key result {position} at v{version}",
            kind=KeyResultKind.INCREASE,
            metric=None,
            baseline=0.0,
            target=100.0,
            target_low=None,
            target_high=None,
            relative_target=None,
            deadline=None,
            weight=1.0,
            current=float(version),
        )
        for position in range(key_results)
    )
    return ProjectedObjective(objective=objective, key_results=rows)


def save(store: SqlReadStore, *objectives: ProjectedObjective) -> None:
    with store.transaction() as writer:
        writer.save_many(objectives)


class FirstFetchThen:
    """A read session that runs `interrupt` right after its first SELECT returns."""

    def __init__(self, session: Session, interrupt: Callable[[], None]) -> None:
        self._session = session
        self._interrupt = interrupt

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        rows = self._session.fetch(sql, params)
        self._interrupt()
        return rows

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._session.run(sql, params)

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._session.run_many(sql, rows)


class CommitDuringNextRead:
    """The store's dialect, except that the next read session is interrupted, once, by `commit`
    (run on its own connection and committed): a projector batch landing mid-read."""

    def __init__(self, dialect: Dialect, commit: Callable[[], None]) -> None:
        self._dialect = dialect
        self._commit = commit
        self.column_types: Mapping[str, str] = dialect.column_types
        self.committed = False

    @contextlib.contextmanager
    def session(self, *, write: bool) -> Iterator[Session]:
        with self._dialect.session(write=write) as session:
            if write or self.committed:
                yield session
            else:
                yield FirstFetchThen(session, self._commit_once)

    def _commit_once(self) -> None:
        if not self.committed:
            self.committed = True
            self._commit()

    def decode_json(self, value: Any) -> Any:
        return self._dialect.decode_json(value)

    def close(self) -> None:
        self._dialect.close()


def test_the_detail_is_one_snapshot_even_when_the_projector_commits_mid_read(
    store: SqlReadStore,
) -> None:
    parent, first_child, late_child = uuid4(), uuid4(), uuid4()
    save(store, projected(parent, 1), projected(first_child, 1, parent_id=parent))
    interposer = CommitDuringNextRead(
        store.dialect,
        lambda: save(
            store,
            projected(parent, 2, key_results=3),
            projected(late_child, 1, parent_id=parent),
        ),
    )
    store.dialect = interposer

    during = store.objective_detail(parent)

    assert interposer.committed
    assert during is not None
    assert during.objective.version == 1
    assert [kr.title for kr in during.key_results] == [
        "key result 0 at v1",
        "key result 1 at v1",
    ]
    assert [kr.current for kr in during.key_results] == [1.0, 1.0]
    assert [child.objective_id for child in during.children] == [first_child]

    after = store.objective_detail(parent)
    assert after is not None
    assert after.objective.version == 2
    assert [kr.current for kr in after.key_results] == [2.0, 2.0, 2.0]
    assert {child.objective_id for child in after.children} == {first_child, late_child}


def test_the_detail_of_an_unknown_objective_is_none(store: SqlReadStore) -> None:
    save(store, projected(uuid4(), 1))
    assert store.objective_detail(uuid4()) is None
