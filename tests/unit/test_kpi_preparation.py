"""`services.scoring.preparation`: a batch's per-KPI sums equal what one-by-one processing gives.

The scorer may prepare a batch before it has read the stored state, then complete it from the
sums (`KpiShare.stale_after`, `PeriodShare`...), or prepare it in another process from raw
records. Whatever the path, the outcome must be what a plain loop over the records, in batch
order, would give. So the reference below is that loop, written for clarity, not for speed, and
the strategies draw few partitions, KPIs, event ids and times so that already scored records,
duplicates, equal and out-of-order times and observations outside every period all happen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.kpi_series import Observation, aggregate, epoch_us, period_bounds_us
from services.scoring.decoding import KpiReading
from services.scoring.preparation import (
    Item,
    KpiShare,
    Origin,
    Partition,
    Period,
    PeriodShare,
    PreparedBatch,
    RawPart,
    ReadOnDemand,
    items_of,
    prepare,
    prepare_records,
    read_parts,
)
from services.scoring.series_store import CHUNK_ROW

RECEIVED_AT = "2026-01-01T00:00:00+00:00"
PARTITIONS: tuple[Partition, ...] = (
    ("kpi.events", 0),
    ("kpi.events", 1),
    ("kpi.other", 0),
    ("kpi.backfill", 0),
)
KPI_KEYS = ("sales.units", "nps", "churn:eu/x-1")
EVENT_IDS = tuple(f"e{index}" for index in range(12))
STORED_ONLY_ID = "stored"

Periods = Mapping[str, tuple[Period, ...]]
Accepted = list[tuple[Origin, KpiReading]]

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the reference: one record at a time, in batch order ------------------------------------------


@dataclass
class Reference:
    """What processing the records one by one gives, before any stored latest is known."""

    dead_lettered: int = 0
    already_scored: int = 0
    lowest: dict[Partition, int] = field(default_factory=dict)
    last: dict[Partition, int] = field(default_factory=dict)
    accepted: dict[str, Accepted] = field(default_factory=dict)
    duplicates: Counter[str] = field(default_factory=Counter)


def one_by_one(
    items: Sequence[Item], skipped_before: Mapping[Partition, int], known: frozenset[str]
) -> Reference:
    """The records' fates, in batch order (offsets rise within a partition, as Kafka's do, so
    the last offset seen is the partition's last)."""
    reference = Reference()
    seen = set(known)
    for origin, reading in items:
        partition = (origin.topic, origin.partition)
        reference.lowest[partition] = min(
            reference.lowest.get(partition, origin.offset), origin.offset
        )
        if reading is None:
            reference.dead_lettered += 1
        if origin.offset < skipped_before.get(partition, 0):
            reference.already_scored += 1
            continue
        reference.last[partition] = origin.offset
        if reading is None:
            continue
        if reading.event_id in seen:
            reference.duplicates[reading.kpi_key] += 1
            continue
        seen.add(reading.event_id)
        reference.accepted.setdefault(reading.kpi_key, []).append((origin, reading))
    return reference


def stale_count(accepted: Accepted, latest: Observation | None) -> int:
    """Observations older than the KPI's newest when each arrived (the stored latest first)."""
    newest = None if latest is None else latest.order_key
    stale = 0
    for _, reading in accepted:
        key = (reading.observed_at_us, reading.event_id)
        if newest is not None and key < newest:
            stale += 1
        newest = key if newest is None else max(newest, key)
    return stale


def newest_of(accepted: Accepted) -> Observation | None:
    if not accepted:
        return None
    newest = max((reading for _, reading in accepted), key=lambda r: (r.observed_at_us, r.event_id))
    return Observation(newest.event_id, newest.value, newest.observed_at_us)


def outside_count(accepted: Accepted, periods: tuple[Period, ...]) -> int:
    """Only a KPI bound to some period has observations outside them."""
    if not periods:
        return 0
    return sum(
        1
        for _, reading in accepted
        if not any(start <= reading.observed_at_us < end for start, end in periods)
    )


def period_shares(accepted: Accepted, periods: tuple[Period, ...]) -> dict[Period, PeriodShare]:
    """Each period holding some observation: how many, their aggregate, the last one."""
    shares: dict[Period, PeriodShare] = {}
    for start, end in periods:
        inside = [pair for pair in accepted if start <= pair[1].observed_at_us < end]
        if inside:
            origin, reading = inside[-1]
            mine = [reading for _, reading in inside]
            shares[(start, end)] = PeriodShare(
                len(inside), aggregate(mine), reading.event_id, origin.offset
            )
    return shares


def chunk_row(origin: Origin, reading: KpiReading) -> dict[str, Any]:
    """A stored observation's fields, by name (their order is `CHUNK_ROW`'s)."""
    return {
        "event_id": reading.event_id,
        "value": reading.value,
        "observed_at": reading.observed_at,
        "observed_at_us": reading.observed_at_us,
        "source": reading.source,
        "unit": reading.unit,
        "dimensions": reading.dimensions,
        "kafka_partition": origin.partition,
        "kafka_offset": origin.offset,
    }


# --- the checks -----------------------------------------------------------------------------------


def assert_chunks(share: KpiShare, accepted: Accepted) -> None:
    """One chunk per topic, holding that topic's observations in batch order."""
    assert [chunk.kafka_topic for chunk in share.chunks] == sorted({o.topic for o, _ in accepted})
    for chunk in share.chunks:
        mine = [(o, r) for o, r in accepted if o.topic == chunk.kafka_topic]
        times = [reading.observed_at_us for _, reading in mine]
        assert (chunk.kpi_key, chunk.received_at) == (share.kpi_key, RECEIVED_AT)
        assert chunk.observations == len(mine)
        assert (chunk.first_at_us, chunk.last_at_us) == (min(times), max(times))
        assert chunk.event_id_list == [reading.event_id for _, reading in mine]
        rows = [dict(zip(CHUNK_ROW, row, strict=True)) for row in orjson.loads(chunk.rows)]
        assert rows == [chunk_row(origin, reading) for origin, reading in mine]


def assert_share(
    share: KpiShare,
    accepted: Accepted,
    duplicates: int,
    periods: tuple[Period, ...],
    latests: Sequence[Observation | None],
) -> None:
    assert share.accepted == len(accepted)
    assert share.duplicates == duplicates
    for latest in latests:
        assert share.stale_after(latest) == stale_count(accepted, latest), latest
    assert share.newest == newest_of(accepted)
    assert share.outside_periods == outside_count(accepted, periods)
    assert share.periods == period_shares(accepted, periods)
    assert_chunks(share, accepted)


def assert_matches_reference(
    prepared: PreparedBatch,
    items: Sequence[Item],
    skipped_before: Mapping[Partition, int],
    known: frozenset[str],
    periods: Periods,
    latests: Sequence[Observation | None],
) -> None:
    reference = one_by_one(items, skipped_before, known)
    assert prepared.records == len(items)
    assert prepared.dead_lettered == reference.dead_lettered
    assert prepared.already_scored == reference.already_scored
    assert prepared.lowest_offsets == reference.lowest
    assert prepared.last_offsets == reference.last
    assert set(prepared.kpis) == set(reference.accepted) | set(reference.duplicates)
    for kpi_key, share in prepared.kpis.items():
        assert share.kpi_key == kpi_key
        accepted = reference.accepted.get(kpi_key, [])
        duplicates = reference.duplicates[kpi_key]
        assert_share(share, accepted, duplicates, periods.get(kpi_key, ()), latests)
    assert prepared.periods == {k: periods.get(k, ()) for k in reference.accepted}
    accepted_ids = [r.event_id for accepted in reference.accepted.values() for _, r in accepted]
    assert sorted(prepared.event_ids) == sorted(accepted_ids)


# --- strategies -----------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
small_times = st.integers(min_value=0, max_value=8)


@st.composite
def readings(draw: st.DrawFn, kpi_keys: Sequence[str]) -> KpiReading:
    at = draw(small_times)
    return KpiReading(
        draw(st.sampled_from(EVENT_IDS)),
        draw(st.sampled_from(kpi_keys)),
        draw(finite) + 0.0,
        f"t{at}",
        at,
        draw(st.sampled_from(("sensor", "crm"))),
        draw(st.sampled_from((None, "units"))),
        draw(st.sampled_from(("{}", '{"region":"eu"}'))),
    )


@st.composite
def batches(draw: st.DrawFn) -> list[Item]:
    """Records of a few partitions, interleaved; offsets rise, with gaps, within a partition.
    Some batches have a single KPI, for long runs of one KPI's observations."""
    kpi_keys = KPI_KEYS[: draw(st.integers(min_value=1, max_value=len(KPI_KEYS)))]
    next_offset = {p: draw(st.integers(min_value=0, max_value=4)) for p in PARTITIONS}
    items: list[Item] = []
    for _ in range(draw(st.integers(min_value=0, max_value=30))):
        topic, partition = draw(st.sampled_from(PARTITIONS))
        offset = next_offset[(topic, partition)]
        next_offset[(topic, partition)] += draw(st.integers(min_value=1, max_value=3))
        dead = draw(st.integers(min_value=0, max_value=5)) == 0
        items.append((Origin(topic, partition, offset), None if dead else draw(readings(kpi_keys))))
    return items


positions = st.dictionaries(st.sampled_from(PARTITIONS), st.integers(min_value=0, max_value=12))
known_ids = st.frozensets(st.sampled_from(EVENT_IDS))
small_periods = st.tuples(small_times, st.integers(min_value=1, max_value=6)).map(
    lambda p: (p[0], p[0] + p[1])
)
periods_by_kpi = st.dictionaries(
    st.sampled_from(KPI_KEYS), st.lists(small_periods, max_size=2, unique=True).map(tuple)
)
stored_latests = st.lists(
    st.builds(
        Observation,
        st.sampled_from((*EVENT_IDS, STORED_ONLY_ID)),
        finite,
        st.integers(min_value=-1, max_value=10),
    ),
    max_size=4,
).map(lambda found: [None, *found])


# --- 1. prepare + stale_after equal the reference -------------------------------------------------


@FAST
@given(
    items=batches(),
    skipped_before=positions,
    known=known_ids,
    periods=periods_by_kpi,
    latests=stored_latests,
)
def test_prepared_sums_equal_one_by_one_processing(
    items: list[Item],
    skipped_before: dict[Partition, int],
    known: frozenset[str],
    periods: dict[str, tuple[Period, ...]],
    latests: list[Observation | None],
) -> None:
    prepared = prepare(items, periods, RECEIVED_AT, skipped_before=skipped_before, known=known)
    assert_matches_reference(prepared, items, skipped_before, known, periods, latests)
    assert prepared.skipped_before == skipped_before
    assert prepared.known == known
    assert prepared.received_at == RECEIVED_AT


# --- 2. holds_for: a kept preparation is the one that would be made again -------------------------


@st.composite
def actual_positions(draw: st.DrawFn, prepared: PreparedBatch) -> dict[Partition, int]:
    """Stored positions that often agree with the assumed ones, or differ only below the batch
    (where no record is skipped either way), or anywhere."""
    assumed = prepared.skipped_before
    actual: dict[Partition, int] = {}
    for partition in PARTITIONS:
        choice = draw(st.sampled_from(("same", "absent", "below", "other")))
        lowest = prepared.lowest_offsets.get(partition, 12)
        if choice == "same" and partition in assumed:
            actual[partition] = assumed[partition]
        elif choice == "below":
            actual[partition] = draw(st.integers(min_value=0, max_value=lowest))
        elif choice == "other":
            actual[partition] = draw(st.integers(min_value=0, max_value=8))
    return actual


@st.composite
def two_assumptions(
    draw: st.DrawFn,
) -> tuple[list[Item], PreparedBatch, dict[Partition, int], Periods]:
    items = draw(batches())
    assumed = draw(positions)
    periods = draw(periods_by_kpi)
    prepared = prepare(items, periods, RECEIVED_AT, skipped_before=assumed, known=draw(known_ids))
    stored = draw(actual_positions(prepared))
    actual_periods = draw(st.one_of(st.just(periods), periods_by_kpi))
    return items, prepared, stored, actual_periods


@FAST
@given(case=two_assumptions())
def test_a_batch_that_holds_is_the_batch_prepared_again(
    case: tuple[list[Item], PreparedBatch, dict[Partition, int], Periods],
) -> None:
    items, prepared, stored, periods = case
    if not prepared.holds_for(stored, periods):
        return
    again = prepare(items, periods, RECEIVED_AT, skipped_before=stored, known=prepared.known)
    assert again.kpis == prepared.kpis
    assert again.last_offsets == prepared.last_offsets
    assert again.already_scored == prepared.already_scored
    assert again.periods == prepared.periods


@FAST
@given(case=two_assumptions())
def test_other_periods_of_a_kpi_with_new_observations_do_not_hold(
    case: tuple[list[Item], PreparedBatch, dict[Partition, int], Periods],
) -> None:
    _, prepared, stored, periods = case
    moved = [
        kpi_key
        for kpi_key, share in prepared.kpis.items()
        if share.accepted and prepared.periods[kpi_key] != periods.get(kpi_key, ())
    ]
    if moved:
        assert not prepared.holds_for(stored, periods)
    assert prepared.holds_for(prepared.skipped_before, prepared.periods)


# --- 3. raw records: read_parts, ReadOnDemand, prepare_records ------------------------------------


@dataclass(frozen=True)
class Record:
    """A raw record value, and what reading it must give: a reading, or a dead letter's reason."""

    value: bytes | None
    reading: KpiReading | None
    reason: str | None = None


WITHOUT_VALUE = {
    "event_id": "e-missing",
    "kpi_key": "nps",
    "observed_at": "2026-01-01T00:00:00+00:00",
    "source": "crm",
}
INVALID = (
    Record(b"not json", None, "not_json"),
    Record(b"", None, "empty"),
    Record(None, None, "empty"),
    Record(orjson.dumps(WITHOUT_VALUE), None, "schema_violation"),
)
moments = st.datetimes(
    min_value=datetime(2020, 1, 1),
    max_value=datetime(2030, 1, 1),
    timezones=st.sampled_from((UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)))),
)
any_kpi_keys = st.one_of(
    st.sampled_from(KPI_KEYS), st.from_regex(r"[A-Za-z0-9_.:\-/]{1,200}", fullmatch=True)
)


@st.composite
def valid_records(draw: st.DrawFn) -> Record:
    moment = draw(moments)
    event_id, kpi_key, value = draw(st.sampled_from(EVENT_IDS)), draw(any_kpi_keys), draw(finite)
    event = {
        "event_id": event_id,
        "kpi_key": kpi_key,
        "value": value,
        "observed_at": moment.isoformat(),
        "source": "sensor",
    }
    reading = KpiReading(
        event_id, kpi_key, value + 0.0, moment.isoformat(), epoch_us(moment), "sensor", None, "{}"
    )
    return Record(orjson.dumps(event), reading)


records = st.one_of(valid_records(), valid_records(), valid_records(), st.sampled_from(INVALID))


@st.composite
def raw_batches(draw: st.DrawFn) -> tuple[list[RawPart], list[Record]]:
    """Parts of distinct partitions, each with consecutive offsets, and their records in order."""
    parts: list[RawPart] = []
    every: list[Record] = []
    for topic, partition in draw(st.lists(st.sampled_from(PARTITIONS), unique=True, max_size=3)):
        mine = draw(st.lists(records, max_size=8))
        first = draw(st.integers(min_value=0, max_value=1_000))
        offsets = list(range(first, first + len(mine)))
        parts.append(RawPart(topic, partition, offsets, [record.value for record in mine]))
        every.extend(mine)
    return parts, every


@st.composite
def date_periods(draw: st.DrawFn) -> tuple[Period, ...]:
    """Whole-day periods over the years the records' times are drawn from."""
    starts = st.dates(min_value=date(2020, 1, 1), max_value=date(2029, 12, 31))
    found = set()
    for start in draw(st.lists(starts, max_size=2)):
        days = draw(st.integers(min_value=0, max_value=2_000))
        found.add(period_bounds_us(start, start + timedelta(days=days)))
    return tuple(sorted(found))


def origins_of(parts: Sequence[RawPart]) -> list[Origin]:
    return [Origin(p.topic, p.partition, offset) for p in parts for offset in p.offsets]


@FAST
@given(batch=raw_batches())
def test_read_parts_reads_every_record_in_batch_order(
    batch: tuple[list[RawPart], list[Record]],
) -> None:
    parts, expected = batch
    read, rejected = read_parts(parts)
    items = items_of(read)
    assert [origin for origin, _ in items] == origins_of(parts)
    assert [reading for _, reading in items] == [record.reading for record in expected]
    assert [(index, error.reason) for index, error in rejected] == [
        (index, record.reason) for index, record in enumerate(expected) if record.reading is None
    ]


@FAST
@given(batch=raw_batches())
def test_read_on_demand_is_the_items_read(batch: tuple[list[RawPart], list[Record]]) -> None:
    parts, _ = batch
    items = items_of(read_parts(parts)[0])
    lazy = ReadOnDemand(parts)
    assert len(lazy) == len(items)
    assert list(lazy) == items
    assert [lazy[index] for index in range(len(lazy))] == items
    assert list(lazy[1:-1]) == items[1:-1]


@FAST
@given(
    batch=raw_batches(),
    periods=st.dictionaries(st.sampled_from(KPI_KEYS), date_periods()),
    latests=st.lists(st.builds(Observation, st.sampled_from(EVENT_IDS), finite, st.integers())),
)
def test_prepared_records_are_the_records_read_then_prepared(
    batch: tuple[list[RawPart], list[Record]],
    periods: dict[str, tuple[Period, ...]],
    latests: list[Observation],
) -> None:
    parts, _ = batch
    prepared = prepare_records(parts, periods, RECEIVED_AT)
    read, rejected = read_parts(parts)
    items = items_of(read)
    direct = prepare(items, periods, RECEIVED_AT)
    assert prepared.kpis == direct.kpis
    assert prepared.last_offsets == direct.last_offsets
    assert prepared.lowest_offsets == direct.lowest_offsets
    assert (prepared.records, prepared.dead_lettered) == (direct.records, direct.dead_lettered)
    assert [(i, e.reason, e.detail) for i, e in prepared.rejected] == [
        (i, e.reason, e.detail) for i, e in rejected
    ]
    assert_matches_reference(prepared, items, {}, frozenset(), periods, [None, *latests])
