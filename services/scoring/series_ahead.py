"""A batch's series copied while the batch is planned, in the transaction that then saves it.

On PostgreSQL the largest part of a scorer batch's time in the server is the COPY of its series:
the event ids into the dedupe key and the chunks (~110 of ~150 ms for 50,000 events). Neither
depends on the stored state that planning reads (stats, bindings, objectives): only on the
prepared batch. So the COPY starts, in a transaction on a connection of its own, as soon as the
batch is handed to the scorer; the plan is made meanwhile (its reads take other connections and
never wait on these new rows); and the save finishes that very transaction with the rest of the
batch. One transaction per batch as before, committed or rolled back whole, with the server's
COPY and the plan's Python running side by side instead of taking turns (ADR 28).

The transaction's connection and blocks live in one thread from start to end, as psycopg's and
eventsourcing's context managers expect: the save hands its part over and waits for the outcome.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import Connection, Cursor
    from psycopg.rows import DictRow

    from services.scoring.series_store import KpiBatch, SeriesChunk

Rest = Callable[["Connection[DictRow]"], Any]
"""The rest of the batch's save, run in the copy's transaction: its outcome is the save's."""


class _Abandoned(Exception):
    """The batch was planned again, with another series: the copy is rolled back."""


class SeriesAhead:
    """A series being copied in an open transaction, until `finish` or `abandon` ends it. Used
    as a context manager, whose exit abandons it (nothing, after a finish): the transaction
    cannot outlive the batch's save."""

    def __init__(
        self,
        connect: Callable[[], AbstractContextManager[Connection[DictRow]]],
        copy: Callable[[Cursor[DictRow]], None],
        series: Sequence[SeriesChunk],
        event_ids: str,
    ) -> None:
        self.series = series
        self.event_ids = event_ids
        self._offered = False
        self._rest: Future[Rest | None] = Future()
        self._outcome: Future[Any] = Future()
        threading.Thread(
            target=self._run, args=(connect, copy), name="series-ahead", daemon=True
        ).start()

    def __enter__(self) -> SeriesAhead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abandon()

    def offer(self, batch: KpiBatch) -> dict[str, SeriesAhead]:
        """What the save of `batch` passes on (`series_ahead=self`) if it stores the series
        copied, once; otherwise the copy is rolled back and nothing is passed on (the batch was
        prepared again after its plan read the stored state, or this is a later attempt)."""
        if not self._offered and self._matches(batch):
            self._offered = True
            return {"series_ahead": self}
        self.abandon()
        return {}

    def finish(self, rest: Rest) -> Any:
        """Run `rest` in the copy's transaction and commit; raises what the copy or `rest`
        raised, as the connection's block translated it (an IntegrityError for a stored id)."""
        self._hand_over(rest)
        return self._outcome.result()

    def abandon(self) -> None:
        """Roll the copy back and release its connection, unless finished already."""
        self._offered = True
        self._hand_over(None)
        with contextlib.suppress(Exception):
            self._outcome.result()

    def _matches(self, batch: KpiBatch) -> bool:
        return batch.sorted_event_ids() == self.event_ids and list(batch.series) == list(
            self.series
        )

    def _hand_over(self, rest: Rest | None) -> None:
        with contextlib.suppress(InvalidStateError):  # the first hand-over counts
            self._rest.set_result(rest)

    def _run(
        self,
        connect: Callable[[], AbstractContextManager[Connection[DictRow]]],
        copy: Callable[[Cursor[DictRow]], None],
    ) -> None:
        try:
            with connect() as conn, conn.transaction():
                with conn.cursor() as curs:
                    copy(curs)
                rest = self._rest.result()
                if rest is None:
                    raise _Abandoned
                outcome = rest(conn)
        except _Abandoned:
            self._outcome.set_result(None)
        except BaseException as error:  # handed to the save, which raises it
            self._outcome.set_exception(error)
        else:
            self._outcome.set_result(outcome)
