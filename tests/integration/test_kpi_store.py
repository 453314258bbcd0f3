"""The KPI series holds exactly what the scorer was given, on both event stores.

On SQLite a batch's observations reach the series through `INSERT ... SELECT ... FROM
json_each(?)` over JSON text (the chunks keep their rows as that text); on PostgreSQL through
arrays. Either way every value
must come back as the very same double (subnormals included) and every text
as the very same characters, or the series and every score computed from it drift from what the
producers sent. Checked through each read there is: `KpiReader.series` (what aggregation sees),
`series_page` (what the KPI read API serves) and the stored chunks themselves, for what neither
exposes (the producer's spelling of the time, the dimensions text, the Kafka origin).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import astuple, replace
from psycopg.rows import dict_row

from domain.kpi_series import epoch_us
from services.commands.application import OkrApplication
from services.scoring.decoding import KpiReading
from services.scoring.preparation import Item, Origin, PreparedBatch, prepare
from services.scoring.scorer import KpiScorer, kpi_reader
from services.scoring.series_ahead import SeriesAhead
from services.scoring.series_queries import series_page
from services.scoring.series_store import KpiReader, returned_rows
from services.settings import Settings
from services.stores import is_postgres
from tests.kpi_support import kpi
from tests.store_support import execute

# --- what is compared -----------------------------------------------------------------------------


def bits(value: float) -> str:
    """A double's exact bits, readably: `float.hex` tells every ulp apart."""
    assert type(value) is float, f"{value!r} came back as {type(value).__name__}"
    return value.hex()


def expected_row(origin: Origin, reading: KpiReading) -> tuple[Any, ...]:
    fields = astuple(reading)
    return (*fields[:2], bits(reading.value), *fields[3:], *origin)


def stored_rows(reader: KpiReader, kpi_key: str) -> list[tuple[Any, ...]]:
    """The KPI's observations as stored in its chunks, oldest first: also what no read API
    returns as text (the producer's spelling of the time, the dimensions text, the origin)."""
    chunks = reader.query(
        reader.dialect.sql("SELECT kpi_key, kafka_topic, rows FROM {series} WHERE kpi_key = ?"),
        [kpi_key],
    )
    stored = [
        (row[0], chunk["kpi_key"], bits(row[1]), *row[2:7], chunk["kafka_topic"], *row[7:])
        for chunk in chunks
        for row in orjson.loads(chunk["rows"])
    ]
    return sorted(stored, key=lambda row: (row[4], row[0]))


def all_pages(reader: KpiReader, kpi_key: str, limit: int) -> list[Any]:
    """The KPI's series through the read API, page by page (the cursors carry event ids)."""
    found: list[Any] = []
    after: str | None = None
    while True:
        page = series_page(reader, kpi_key, after=after, limit=limit)
        found += page.items
        if page.next_cursor is None:
            return found
        after = page.next_cursor


def assert_stored_exactly(application: OkrApplication, items: Sequence[Item]) -> None:
    """Every reading of `items` (all one KPI, distinct event ids) is in the series, bit for bit,
    through each read; nothing else is."""
    scored = [(origin, reading) for origin, reading in items if reading is not None]
    kpi_key = scored[0][1].kpi_key
    reader = kpi_reader(application)
    in_order = sorted(scored, key=lambda item: (item[1].observed_at_us, item[1].event_id))

    series = reader.series(kpi_key)
    assert {o.event_id: (bits(o.value), o.observed_at_us) for o in series} == {
        r.event_id: (bits(r.value), r.observed_at_us) for _, r in scored
    }
    assert len(series) == len(scored)
    assert [o.observed_at_us for o in series] == [r.observed_at_us for _, r in in_order]
    ids = [r.event_id for _, r in scored]
    assert reader.stored_event_ids(ids) == set(ids), "each id is its own dedupe key, as sent"

    pages = all_pages(reader, kpi_key, limit=3)
    assert [
        (
            o.event_id,
            bits(o.value),
            o.observed_at,
            o.observed_at_us,
            o.source,
            o.unit,
            o.dimensions,
        )
        for o in pages
    ] == [
        (
            r.event_id,
            bits(r.value),
            datetime.fromisoformat(r.observed_at),
            r.observed_at_us,
            r.source,
            r.unit,
            orjson.loads(r.dimensions),
        )
        for _, r in in_order
    ]

    assert stored_rows(reader, kpi_key) == [expected_row(o, r) for o, r in in_order]


# --- readings -------------------------------------------------------------------------------------

NASTY = (
    "\"\\/'`\n\r\t\b\f\x01\x1f\x7f\x80\x9f\xa0\xad"
    "\u0300\u05d0\u0627\u200b\u200d\u200e\u200f\u202e\u2028\u2029\ufeff\ufffd\uffff"
    "\U0001f600\U0001f469\U0001f1fa\U0010ffff"
)
"""JSON escapes, C0/C1 controls, combining and zero-width marks, RTL, line separators, BOM,
noncharacters, emoji (and the ZWJ that joins them), the last code point."""

CHARACTERS = st.one_of(
    st.sampled_from(NASTY),
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
)
"""Any character the contract admits: everything but NUL (PostgreSQL text cannot hold it) and
lone surrogates (no UTF-8 for them)."""


def texts(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(CHARACTERS, min_size=min_size, max_size=max_size)


VALUES = st.one_of(
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]),
    st.floats(allow_nan=False, allow_infinity=False),
).map(lambda value: value + 0.0)
"""Any finite double a reading can hold, subnormals included: decoding reads -0.0 as 0.0
(`services.scoring.decoding.KpiReading.value`), so no reading has it."""

OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


@st.composite
def observed_at(draw: st.DrawFn) -> tuple[str, int]:
    """(the producer's text, epoch microseconds): any moment the contract admits, spelled with
    0 to 6 fraction digits and an offset or `Z`."""
    moment = draw(st.datetimes(datetime(1, 1, 3), datetime(9999, 12, 29), timezones=OFFSETS))
    digits = draw(st.integers(0, 6))
    unit = 10 ** (6 - digits)
    moment = moment.replace(microsecond=moment.microsecond // unit * unit)
    fraction = f".{moment.microsecond:06d}"[: digits + 1] if digits else ""
    zone = moment.isoformat()[-6:]
    if zone == "+00:00" and draw(st.booleans()):
        zone = "Z"
    text = moment.replace(tzinfo=None).isoformat(timespec="seconds") + fraction + zone
    assert datetime.fromisoformat(text) == moment
    return text, epoch_us(moment)


@dataclass(frozen=True)
class Drawn:
    """A reading and its origin but for the names the test makes fresh per example."""

    id_text: str
    value: float
    observed_at: tuple[str, int]
    source: str
    unit: str | None
    dimensions: dict[str, str]
    partition: int
    offset: int


DRAWN = st.builds(
    Drawn,
    id_text=texts(0, 150),
    value=VALUES,
    observed_at=observed_at(),
    source=texts(1, 200),
    unit=st.none() | texts(0, 100),
    dimensions=st.dictionaries(texts(1, 100), texts(0, 200), max_size=6),
    partition=st.integers(0, 2),
    offset=st.integers(0, 2**63 - 2),  # the next offset, + 1, still fits a signed 64-bit integer
)


def fresh_items(drawn: Sequence[Drawn]) -> list[Item]:
    """One batch of one KPI no other example used, on a topic no other example used (its stored
    positions are its own), with event ids no other example used."""
    token = uuid.uuid4().hex
    kpi_key, topic = kpi("store.roundtrip"), f"kpi.events.{token}"
    return [
        (
            Origin(topic, d.partition, d.offset),
            KpiReading(
                f"{token}:{index}:{d.id_text}",
                kpi_key,
                d.value,
                *d.observed_at,
                d.source,
                d.unit,
                orjson.dumps(d.dimensions).decode() if d.dimensions else "{}",
            ),
        )
        for index, d in enumerate(drawn)
    ]


def readings(values: Sequence[float], topic: str, kpi_key: str) -> list[Item]:
    """Plain readings of `values`, one a minute, at offsets 0, 1, 2... of partition 0."""
    start = datetime(2026, 8, 1, tzinfo=UTC)
    items: list[Item] = []
    for offset, value in enumerate(values):
        moment = start + timedelta(minutes=offset)
        items.append(
            (
                Origin(topic, 0, offset),
                KpiReading(
                    str(uuid.uuid4()),
                    kpi_key,
                    value,
                    moment.isoformat(),
                    epoch_us(moment),
                    "sales-service",
                    "units",
                    '{"region":"eu"}',
                ),
            )
        )
    return items


# --- tests ----------------------------------------------------------------------------------------


@pytest.fixture
def application(open_application: Callable[..., OkrApplication]) -> OkrApplication:
    """One application on the test's store (hypothesis examples share it: each draws fresh
    names)."""
    return open_application()


def test_doubles_that_do_not_survive_a_careless_text_round_trip_are_stored_bit_for_bit(
    application: OkrApplication,
) -> None:
    values = [
        0.1,
        1 / 3,
        5e-324,
        2.2250738585072014e-308,
        1.7976931348623157e308,
        -5e-324,
        9007199254740993.0,  # 2**53 + 1 is no double: the literal is 2**53
        123456.78901234567,
    ]
    items = readings(values, "kpi.events", kpi("store.doubles"))

    report = KpiScorer(application).score(items)

    assert (report.accepted, report.duplicates) == (len(values), 0)
    assert_stored_exactly(application, items)


@settings(
    max_examples=100,
    deadline=None,
    # One application per backend for all examples: each example has its own KPI, topic and ids.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=st.lists(DRAWN, min_size=1, max_size=6))
def test_any_batch_of_valid_readings_is_stored_exactly_as_scored(
    application: OkrApplication, drawn: list[Drawn]
) -> None:
    items = fresh_items(drawn)

    report = KpiScorer(application).score(items)

    assert (report.accepted, report.duplicates, report.already_scored) == (len(items), 0, 0)
    assert_stored_exactly(application, items)


def test_an_event_already_stored_is_a_duplicate_and_is_stored_once(
    application: OkrApplication,
) -> None:
    reader = kpi_reader(application)
    kpi_key = kpi("store.duplicates")
    first = readings([1.5, 2.5], "kpi.events", kpi_key)
    scorer = KpiScorer(application)
    assert scorer.score(first).accepted == 2
    stored_before = reader.observation_count()
    resent = first[0][1]
    assert resent is not None
    new = readings([4.5], "kpi.events", kpi_key)[0][1]
    assert new is not None
    # Later offsets: the stored event again under another value, a new one, and the new one again.
    again: list[Item] = [
        (Origin("kpi.events", 0, 2), replace(resent, value=1000.0)),
        (Origin("kpi.events", 0, 3), new),
        (Origin("kpi.events", 0, 4), new),
    ]

    report = scorer.score(again)

    assert (report.accepted, report.duplicates, report.already_scored) == (1, 2, 0)
    assert reader.observation_count() == stored_before + 1
    stats = reader.stats([kpi_key])[kpi_key]
    assert (stats.accepted, stats.duplicates) == (3, 2)
    assert reader.positions("kpi.events") == {0: 5}
    # The first copy stands: a resent event never replaces what was scored.
    assert_stored_exactly(application, [*first, again[1]])


# --- the series' layout ---------------------------------------------------------------------------

LEGACY_TABLE = (
    "CREATE TABLE kpi_observations (event_id TEXT PRIMARY KEY, kpi_key TEXT NOT NULL, "
    "value {real} NOT NULL, observed_at TEXT NOT NULL, observed_at_us {integer} NOT NULL, "
    "source TEXT NOT NULL, unit TEXT, dimensions TEXT NOT NULL, kafka_topic TEXT NOT NULL, "
    "kafka_partition {integer} NOT NULL, kafka_offset {integer} NOT NULL, "
    "received_at TEXT NOT NULL)"
)
"""The series as an earlier version stored it: a row per observation."""


def legacy_series(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> tuple[str, list[tuple[Any, ...]]]:
    """A store of the release before the series moved into chunks: its tables (migration 1),
    and the series table of that release holding a few observations of a fresh KPI: (the KPI,
    its rows)."""
    open_application()  # the tables, as an upgrade finds them
    execute(store_settings, "DELETE FROM event_store_migrations WHERE version >= 2")
    on_postgres = is_postgres(store_settings.event_store_url)
    execute(
        store_settings,
        LEGACY_TABLE.format(
            real="double precision" if on_postgres else "REAL",
            integer="bigint" if on_postgres else "INTEGER",
        ),
    )
    kpi_key = kpi("store.legacy")
    values = [0.1, 1 / 3, 5e-324, 123456.78901234567, 1.7976931348623157e308]
    start = datetime(2026, 8, 1, tzinfo=UTC)
    legacy = [
        (
            f"legacy-{index}",
            kpi_key,
            value,
            (start + timedelta(minutes=index)).isoformat(),
            epoch_us(start + timedelta(minutes=index)),
            "sales-service",
            "units" if index % 2 else None,
            '{"region":"eu"}',
            "kpi.events",
            index % 2,
            100 + index,
            "2026-08-02T00:00:00+00:00",
        )
        for index, value in enumerate(values)
    ]
    insert = f"INSERT INTO kpi_observations VALUES ({', '.join('?' * 12)})"
    for row in reversed(legacy):
        execute(store_settings, insert, *row)
    return kpi_key, legacy


def legacy_table_left(store_settings: Settings) -> bool:
    found = execute(
        store_settings,
        "SELECT to_regclass('kpi_observations')"
        if is_postgres(store_settings.event_store_url)
        else "SELECT name FROM sqlite_master WHERE name = 'kpi_observations'",
    )
    return found not in ([(None,)], [])


def test_a_series_stored_a_row_per_observation_moves_into_chunks_when_the_store_opens(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    kpi_key, legacy = legacy_series(store_settings, open_application)

    reader = kpi_reader(open_application())  # opening the store migrates

    assert not legacy_table_left(store_settings)
    assert reader.stored_event_ids([row[0] for row in legacy]) == {row[0] for row in legacy}
    assert [(o.event_id, bits(o.value), o.observed_at_us) for o in reader.series(kpi_key)] == [
        (row[0], bits(row[2]), row[4]) for row in legacy
    ]
    page = series_page(reader, kpi_key, limit=100)
    assert [(o.unit, o.dimensions, o.received_at.isoformat()) for o in page.items] == [
        (row[6], {"region": "eu"}, row[11]) for row in legacy
    ]
    assert stored_rows(reader, kpi_key) == [
        (row[0], row[1], bits(row[2]), *row[3:8], row[8], row[9], row[10]) for row in legacy
    ]
    open_application()  # and opening it again changes nothing
    assert [o.event_id for o in reader.series(kpi_key)] == [row[0] for row in legacy]


def test_processes_starting_together_migrate_the_old_series_once(
    store_settings: Settings, open_application: Callable[..., OkrApplication]
) -> None:
    """`okr serve` and `okr scorer` start at once after an upgrade: one migrates, the other
    waits (PostgreSQL: an advisory lock; SQLite: it tries again) and finds nothing left."""
    kpi_key, legacy = legacy_series(store_settings, open_application)
    opening = threading.Barrier(4)

    def open_at_once() -> OkrApplication:
        opening.wait()
        return open_application()

    with ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda _: open_at_once(), range(4)))

    assert not legacy_table_left(store_settings)
    assert [o.event_id for o in kpi_reader(opened[0]).series(kpi_key)] == [row[0] for row in legacy]
    assert kpi_reader(opened[0]).observation_count() == len(legacy)


@st.composite
def batches_out_of_order(draw: st.DrawFn) -> list[list[tuple[str, int]]]:
    """Batches of (event id, minute) whose times overlap across batches (late events), with
    equal times told apart by event id."""
    minutes = st.integers(0, 40)
    batches = draw(st.lists(st.lists(minutes, min_size=1, max_size=8), min_size=1, max_size=6))
    return [
        [(f"e{number}-{index}", minute) for index, minute in enumerate(batch)]
        for number, batch in enumerate(batches)
    ]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batches=batches_out_of_order(),
    limit=st.integers(1, 7),
    window=st.tuples(st.none() | st.integers(0, 40), st.none() | st.integers(0, 41)),
)
def test_pages_over_chunks_that_overlap_in_time_give_the_series_in_order_once(
    application: OkrApplication,
    batches: list[list[tuple[str, int]]],
    limit: int,
    window: tuple[int | None, int | None],
) -> None:
    token = uuid.uuid4().hex
    kpi_key, topic = kpi("store.pages"), f"kpi.events.{token}"
    start = datetime(2026, 8, 1, tzinfo=UTC)
    scorer = KpiScorer(application)
    offset = 0
    for batch in batches:
        items: list[Item] = []
        for event_id, minute in batch:
            moment = start + timedelta(minutes=minute)
            reading = KpiReading(
                f"{token}-{event_id}",
                kpi_key,
                1.0,
                moment.isoformat(),
                epoch_us(moment),
                "s",
                None,
                "{}",
            )
            items.append((Origin(topic, 0, offset), reading))
            offset += 1
        scorer.score(items)
    start_us, end_us = (
        None if minute is None else epoch_us(start + timedelta(minutes=minute)) for minute in window
    )
    reader = kpi_reader(application)
    expected = [(o.observed_at_us, o.event_id) for o in reader.series(kpi_key, start_us, end_us)]

    paged: list[tuple[int, str]] = []
    after: str | None = None
    while True:
        page = series_page(
            reader, kpi_key, start_us=start_us, end_us=end_us, after=after, limit=limit
        )
        assert len(page.items) <= limit
        paged += [o.order_key for o in page.items]
        if page.next_cursor is None:
            break
        after = page.next_cursor

    assert paged == expected
    assert expected == sorted(
        (epoch_us(start + timedelta(minutes=m)), f"{token}-{e}")
        for batch in batches
        for e, m in batch
        if (start_us is None or epoch_us(start + timedelta(minutes=m)) >= start_us)
        and (end_us is None or epoch_us(start + timedelta(minutes=m)) < end_us)
    )


def results_sent_unread(conn: psycopg.Connection[Any]) -> None:
    """Have the server send the results it holds, as it does whenever its buffer fills, and
    leave them unread on the socket."""
    conn.pgconn.send_flush_request()
    conn.pgconn.flush()
    time.sleep(0.2)


@pytest.mark.postgres
def test_a_pipelined_statement_reads_its_own_rows_when_earlier_results_arrive_late(
    postgres_database: str,
) -> None:
    """The scorer's fences read their RETURNING rows inside the recorder's pipeline, after
    statements whose results they never read. When those results reach the client only once
    the fence was sent, psycopg takes them for the fence's on the cursor that sent them all;
    `returned_rows` reads on a cursor of its own."""
    slow_count = "SELECT count(*) AS n FROM pipelined, pg_sleep(0.1)"
    with (
        psycopg.connect(postgres_database, row_factory=dict_row) as conn,
        conn.pipeline(),
        conn.transaction(),
        conn.cursor() as curs,
    ):
        curs.execute("CREATE TEMP TABLE pipelined (n int)")
        curs.executemany("INSERT INTO pipelined VALUES (%s)", [(n,) for n in range(100)])
        results_sent_unread(conn)
        assert returned_rows(curs, slow_count, []) == [{"n": 100}]

        # The hazard it avoids, on the cursor that sent the inserts:
        curs.executemany("INSERT INTO pipelined VALUES (%s)", [(n,) for n in range(100)])
        results_sent_unread(conn)
        curs.execute(slow_count)
        with pytest.raises(psycopg.ProgrammingError, match="didn't produce records"):
            curs.fetchall()


# --- the series copied ahead, while the batch is planned (PostgreSQL) -----------------------------


@pytest.fixture
def postgres_application(settings: Settings, postgres_database: str) -> Iterator[OkrApplication]:
    on_postgres = {"event_store_url": postgres_database, "read_store_url": postgres_database}
    application = OkrApplication(settings.model_copy(update=on_postgres))
    yield application
    application.close()


def prepared_as_the_worker_does(scorer: KpiScorer, items: Sequence[Item]) -> PreparedBatch:
    """The batch prepared as the worker process prepares it: knowing no stored state."""
    return prepare(items, scorer.binding_periods(), datetime.now(UTC).isoformat())


@dataclass
class AheadSpy:
    """What became of each series copied ahead during a test."""

    finished: int = 0
    abandoned_unused: int = 0


@pytest.fixture
def ahead_spy(monkeypatch: pytest.MonkeyPatch) -> AheadSpy:
    spy = AheadSpy()
    finish, abandon = SeriesAhead.finish, SeriesAhead.abandon

    def finishing(self: SeriesAhead, rest: Any) -> Any:
        spy.finished += 1
        return finish(self, rest)

    def abandoning(self: SeriesAhead) -> None:
        if not self._rest.done():
            spy.abandoned_unused += 1
        abandon(self)

    monkeypatch.setattr(SeriesAhead, "finish", finishing)
    monkeypatch.setattr(SeriesAhead, "abandon", abandoning)
    return spy


def open_transactions(application: OkrApplication) -> int:
    """Connections of this database left in a transaction (none once a batch is done)."""
    rows = kpi_reader(application).query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%%'",
        [],
    )
    return int(rows[0]["n"])


def wait_until_copied(application: OkrApplication) -> None:
    """Until the copy ahead is done and its transaction waits for the save (the plan may be
    quicker than the COPY)."""
    deadline = time.monotonic() + 10
    while open_transactions(application) == 0:
        assert time.monotonic() < deadline, "the series was never copied ahead"
        time.sleep(0.01)


@pytest.mark.postgres
def test_a_batch_whose_series_was_copied_ahead_is_stored_as_scored(
    postgres_application: OkrApplication, ahead_spy: AheadSpy
) -> None:
    items = readings([1.5, 2.5, 4.0], "kpi.events", kpi("store.ahead"))
    scorer = KpiScorer(postgres_application)

    report = scorer.score(items, prepared_as_the_worker_does(scorer, items))

    assert (report.accepted, report.attempts) == (3, 1)
    assert (ahead_spy.finished, ahead_spy.abandoned_unused) == (1, 0)
    assert_stored_exactly(postgres_application, items)
    assert open_transactions(postgres_application) == 0


@pytest.mark.postgres
def test_a_batch_prepared_again_rolls_back_the_series_copied_ahead(
    postgres_application: OkrApplication, ahead_spy: AheadSpy
) -> None:
    """The worker assumed nothing was scored; another scorer got the first two records in
    meanwhile, so the plan prepares the batch again without them: the copy made ahead (with
    them) must leave no trace, and the batch's own save stores the rest once."""
    items = readings([1.5, 2.5, 4.0, 8.0], "kpi.events", kpi("store.ahead-again"))
    scorer = KpiScorer(postgres_application)
    prepared = prepared_as_the_worker_does(scorer, items)
    assert scorer.score(items[:2]).accepted == 2

    report = scorer.score(items, prepared)

    assert (report.accepted, report.already_scored, report.attempts) == (2, 2, 1)
    assert (ahead_spy.finished, ahead_spy.abandoned_unused) == (0, 1)
    assert kpi_reader(postgres_application).observation_count() == 4
    assert_stored_exactly(postgres_application, items)
    assert open_transactions(postgres_application) == 0


@pytest.mark.postgres
def test_a_stored_id_fails_the_copy_ahead_and_the_batch_is_scored_again_once(
    postgres_application: OkrApplication, ahead_spy: AheadSpy
) -> None:
    """A resent event at a new offset: the worker cannot know its id is stored, so the copy
    ahead hits the dedupe key; the batch is planned again, looking its ids up."""
    kpi_key = kpi("store.ahead-resent")
    first = readings([1.5], "kpi.events", kpi_key)
    scorer = KpiScorer(postgres_application)
    assert scorer.score(first).accepted == 1
    resent, new = first[0][1], readings([2.5], "kpi.events", kpi_key)[0][1]
    assert resent is not None and new is not None
    again: list[Item] = [(Origin("kpi.events", 0, 1), resent), (Origin("kpi.events", 0, 2), new)]

    report = scorer.score(again, prepared_as_the_worker_does(scorer, again))

    assert (report.accepted, report.duplicates, report.attempts) == (1, 1, 2)
    assert ahead_spy.finished == 1
    assert kpi_reader(postgres_application).observation_count() == 2
    assert_stored_exactly(postgres_application, [*first, again[1]])
    assert open_transactions(postgres_application) == 0


@pytest.mark.postgres
def test_a_copy_ahead_that_lost_its_connection_is_made_again_by_the_save(
    postgres_application: OkrApplication, ahead_spy: AheadSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends the copy's session while the batch is planned (a restart, or the idle
    in transaction timeout): the save copies the series again on a connection of its own."""
    items = readings([1.5, 2.5], "kpi.events", kpi("store.ahead-lost"))
    scorer = KpiScorer(postgres_application)
    prepared = prepared_as_the_worker_does(scorer, items)
    plan = KpiScorer._plan

    def plan_then_end_the_copy(self: KpiScorer, *args: Any, **kwargs: Any) -> Any:
        made = plan(self, *args, **kwargs)
        wait_until_copied(postgres_application)
        ended = kpi_reader(postgres_application).query(
            "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity "
            "WHERE datname = current_database() AND state LIKE 'idle in transaction%%'",
            [],
        )
        assert [row["ended"] for row in ended] == [True]
        return made

    monkeypatch.setattr(KpiScorer, "_plan", plan_then_end_the_copy)

    report = scorer.score(items, prepared)

    assert (report.accepted, report.attempts) == (2, 1)
    assert ahead_spy.finished == 1
    assert_stored_exactly(postgres_application, items)
    assert open_transactions(postgres_application) == 0


@pytest.mark.postgres
def test_a_plan_that_fails_leaves_nothing_of_the_series_copied_ahead(
    postgres_application: OkrApplication, ahead_spy: AheadSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = readings([1.5, 2.5], "kpi.events", kpi("store.ahead-failed"))
    scorer = KpiScorer(postgres_application)
    prepared = prepared_as_the_worker_does(scorer, items)

    def plan_failing_once_copied(self: KpiScorer, *args: Any, **kwargs: Any) -> Any:
        wait_until_copied(postgres_application)
        raise RuntimeError("the plan failed")

    monkeypatch.setattr(KpiScorer, "_plan", plan_failing_once_copied)

    with pytest.raises(RuntimeError, match="the plan failed"):
        scorer.score(items, prepared)

    assert ahead_spy.abandoned_unused == 1
    assert kpi_reader(postgres_application).observation_count() == 0
    assert (
        kpi_reader(postgres_application).stored_event_ids([r.event_id for _, r in items]) == set()
    )
    assert open_transactions(postgres_application) == 0
