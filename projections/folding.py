"""One objective's events of a batch, folded in memory, its rows made once.

The projector reads a batch's objectives in one query and writes each table once
(`projections.projector.apply_batch`); in between, each objective takes its events of the batch
in order, here. Nearly all of a live stream is `KpiProgressRecorded`: one key result's value and
score move, and with them the objective's score, nothing else. Those are folded as plain values
(each key result's scorer made once, `projections.reducer.scorer`), their timeline and audit
entries written straight from them, and the objective's rows are made once: when the batch is
written, or when another kind of event needs the state as `reduce_event` takes it. Every other
event goes through `reduce_event`, the reference: the rows are exactly those of `reduce_event`
applied event by event (`tests/unit/test_batch_fold.py` holds the two together over random
event sequences and batch boundaries).

It relies on what every stored objective is: rows that `rescore` left (each score the one its
definition and value give, positions in order), which holds because only the reducer writes them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple
from uuid import UUID

from domain.scoring import Scorer, WeightedMean
from events import okr
from projections.decoding import PROGRESS, PROGRESS_PLACE, ProgressRecorded
from projections.reducer import MEMO_SIZE, definition_of, reduce_event, scorer
from projections.views import (
    AuditEntry,
    KeyResultRow,
    ProjectedObjective,
    TimelineEntry,
    json_text,
    moment_text,
)


@lru_cache(maxsize=MEMO_SIZE)
def _mean(weights: tuple[float, ...]) -> WeightedMean:
    return WeightedMean(weights)


class _Slot(NamedTuple):
    """What the fast path needs of a key result, made once per fold."""

    scorer: Scorer
    key_result_id: str
    path: str
    """Its `current` as the audit names it."""


class _Moved(NamedTuple):
    """A key result's row as progress events left it, not yet made into a row."""

    current: float
    last_update: datetime
    score: float
    attainment: float | None


class ObjectiveFold:
    """An objective while a batch is folded into it; `projected()` makes its rows."""

    __slots__ = (
        "_mean",
        "_moved",
        "_objective_id",
        "_positions",
        "_projected",
        "_score",
        "_slots",
        "_terms",
        "_updated_at",
        "only_progress",
        "version",
    )

    def __init__(self, projected: ProjectedObjective | None) -> None:
        self._take(projected)
        self.only_progress = True
        """No event but KPI progress since the batch began: the rows differ from the loaded
        ones only in `views.PROGRESS_FIELDS` (what the writer then updates, and nothing else)."""

    def made(self, projected: ProjectedObjective | None) -> bool:
        """Whether this fold stands exactly at `projected` (the rows it made last, nothing
        folded since), so it can take the next batch's events of its objective."""
        return self._projected is projected and not self._moved

    def _take(self, projected: ProjectedObjective | None) -> None:
        self._projected = projected
        self._moved: dict[int, _Moved] = {}
        self._slots: dict[int, _Slot] = {}
        if projected is None:
            self.version = 0
            self._positions: dict[UUID, int] = {}
            return
        rows = projected.key_results
        self.version = projected.objective.version
        self._objective_id = str(projected.objective.objective_id)
        self._positions = {row.key_result_id: position for position, row in enumerate(rows)}
        self._mean = _mean(tuple(row.weight for row in rows))
        self._terms = [self._mean.term(position, row.score) for position, row in enumerate(rows)]

    def _slot(self, position: int, row: KeyResultRow) -> _Slot:
        slot = self._slots.get(position)
        if slot is None:
            slot = self._slots[position] = _Slot(
                scorer(definition_of(row)),
                str(row.key_result_id),
                f"key_results[{row.key_result_id}].current",
            )
        return slot

    def progress(self, event: ProgressRecorded) -> tuple[TimelineEntry, AuditEntry] | None:
        """Fold a progress event that follows this state (the caller checked its version):
        its timeline and audit entries. None when the reference has to say what is wrong with
        it (no such objective or key result), through `reduce`."""
        position = self._positions.get(event.key_result_id)
        if self._projected is None or position is None:
            return None
        row = self._projected.key_results[position]
        moved = self._moved.get(position)
        before = row.current if moved is None else moved.current
        slot = self._slot(position, row)
        value = event.value
        result = slot.scorer(value)
        self._moved[position] = _Moved(value, event.occurred_at, result.score, result.attainment)
        self._terms[position] = self._mean.term(position, result.score)
        self._score = self._mean.of_terms(self._terms)
        self._updated_at = event.occurred_at
        self.version = event.version
        occurred_at = moment_text(event.occurred_at)
        changes = (
            json_text([{"field": slot.path, "before": before, "after": value}])
            if before != value
            else "[]"
        )
        return (
            TimelineEntry(
                self._objective_id,
                event.version,
                occurred_at,
                slot.key_result_id,
                value,
                result.score,
                result.attainment,
                self._score,
                PROGRESS_PLACE.cause,
                event.actor,
                json_text(event.detail),
            ),
            AuditEntry(
                self._objective_id,
                event.version,
                occurred_at,
                PROGRESS,
                event.actor,
                event.command_id,
                event.reason,
                changes,
            ),
        )

    def reduce(
        self, envelope: okr.OkrEventEnvelope, payload: okr.OkrPayload
    ) -> tuple[TimelineEntry | None, AuditEntry]:
        """Fold any event through `reduce_event` (ValueError if it cannot follow the state,
        which is then left as it was): its timeline entry, if any, and its audit entry."""
        reduction = reduce_event(self.projected(), envelope, payload)
        self._take(reduction.projected)
        self.only_progress = False
        timeline = None if reduction.timeline is None else TimelineEntry.of(reduction.timeline)
        return timeline, AuditEntry.of(reduction.audit)

    def projected(self) -> ProjectedObjective | None:
        """The objective and its key results as the events so far left them."""
        if self._moved and self._projected is not None:
            rows = list(self._projected.key_results)
            for position, moved in self._moved.items():
                rows[position] = rows[position].model_copy(
                    update={
                        "current": moved.current,
                        "last_update": moved.last_update,
                        "score": moved.score,
                        "attainment": moved.attainment,
                    }
                )
            objective = self._projected.objective.model_copy(
                update={
                    "version": self.version,
                    "updated_at": self._updated_at,
                    "score": self._score,
                }
            )
            self._projected = ProjectedObjective(objective=objective, key_results=tuple(rows))
            self._moved = {}
        return self._projected


class Folds:
    """The folds of the objectives a projector moved lately, kept from one batch to the next.

    A live stream moves the same objectives batch after batch, and what a fold derives from an
    objective's rows (its key results by id, their scorers, the weighted mean's terms) then
    stays made. A kept fold is handed out again only while the store hands out the very rows it
    made (`ObjectiveFold.made`): never after a batch that failed (the store then still has the
    rows from before it), nor after another projector or a rebuild changed the objective.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._kept: OrderedDict[UUID, ObjectiveFold] = OrderedDict()
        self._lock = threading.Lock()

    def fold(self, objective_id: UUID, loaded: ProjectedObjective | None) -> ObjectiveFold:
        """A fold standing at `loaded`, for one batch."""
        with self._lock:
            fold = self._kept.get(objective_id)
        if fold is None or not fold.made(loaded):
            return ObjectiveFold(loaded)
        fold.only_progress = True
        return fold

    def keep(self, folds: Mapping[UUID, ObjectiveFold]) -> None:
        """After the batch that used `folds` committed."""
        with self._lock:
            for objective_id, fold in folds.items():
                self._kept[objective_id] = fold
                self._kept.move_to_end(objective_id)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
