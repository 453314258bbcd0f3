"""A batch of `kpi.events` records prepared for scoring: all that depends on the records alone.

Scoring a batch has two halves. This one reads every record, drops what the stored positions say
was scored and what repeats an event id (in the batch or among `known` stored ids), groups the
rest by KPI and, per KPI, sums up what the stored state will need: how many, which were older than
an earlier one of the batch, the aggregate of each binding period that holds them and the chunk of
the series they make. The other half (`services.scoring.scorer`) reads the stored state (positions,
stats,
bindings, objectives), completes the batch from these sums in time proportional to the KPIs and
key results moved rather than to the records, and saves.

Pure (no I/O, no clock): it runs in the saving process, or in a worker process that prepares the
next batch while this one saves (`services.scoring.worker`). A preparation made before the
stored state was read states its assumptions (positions skipped, stored ids, binding periods); the
scorer checks them against what it reads and prepares again, from the same records, when one
does not hold. So the outcome never depends on where or when the batch was prepared.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import attrgetter, itemgetter
from typing import NamedTuple, cast, overload

import orjson

from domain.kpi_series import ORDER_KEY, Observation, PickledByFields, SeriesAggregate, aggregate
from services.scoring.decoding import KpiReading, NotAKpiEventError, decode_kpi_event
from services.scoring.series_store import SeriesChunk, chunk_of, event_ids_in_key_order


class Origin(NamedTuple):
    """Where a record was read from: all the scorer keeps of it once parsed."""

    topic: str
    partition: int
    offset: int


Item = tuple[Origin, KpiReading | None]
"""A record of a batch: its origin and its reading (None: dead-lettered; its offset counts)."""

Partition = tuple[str, int]
Period = tuple[int, int]
"""A binding's period: [start, end) in epoch microseconds."""


class RawPart(NamedTuple):
    """One partition's records of a batch, as fetched: what crosses to a worker process."""

    topic: str
    partition: int
    offsets: list[int]
    values: list[bytes | None]


Rejection = tuple[int, NotAKpiEventError]
"""A record that is not a KPI event: its index in the batch and why."""


class ReadPart(NamedTuple):
    """One partition's records of a batch, read: a reading each (None: not a KPI event)."""

    topic: str
    partition: int
    offsets: list[int]
    readings: list[KpiReading | None]


def read_parts(parts: Sequence[RawPart]) -> tuple[list[ReadPart], list[Rejection]]:
    """Every record read, in batch order; what is not a KPI event is kept as None (its offset
    still counts) and listed with its index in the batch and its reason, for the dead letters."""
    read: list[ReadPart] = []
    rejected: list[Rejection] = []
    index = 0
    for part in parts:
        readings: list[KpiReading | None] = []
        for value in part.values:
            try:
                readings.append(decode_kpi_event(value))
            except NotAKpiEventError as error:
                rejected.append((index + len(readings), error))
                readings.append(None)
        index += len(readings)
        read.append(ReadPart(part.topic, part.partition, part.offsets, readings))
    return read, rejected


def items_of(parts: Sequence[ReadPart]) -> list[Item]:
    return [
        (Origin(part.topic, part.partition, offset), reading)
        for part in parts
        for offset, reading in zip(part.offsets, part.readings, strict=True)
    ]


def parts_of(items: Sequence[Item]) -> list[ReadPart]:
    """The items as parts: each run of consecutive items of one partition (order kept)."""
    parts: list[ReadPart] = []
    for origin, reading in items:
        if not parts or parts[-1][:2] != origin[:2]:
            parts.append(ReadPart(origin.topic, origin.partition, [], []))
        parts[-1].offsets.append(origin.offset)
        parts[-1].readings.append(reading)
    return parts


class ReadOnDemand(Sequence[Item]):
    """A batch's items, read only when asked for: the scorer needs them only when a batch
    prepared elsewhere must be prepared again (`PreparedBatch.holds_for`)."""

    def __init__(self, parts: Sequence[RawPart]) -> None:
        self._parts = parts
        self._items: list[Item] | None = None

    def _read(self) -> list[Item]:
        if self._items is None:
            self._items = items_of(read_parts(self._parts)[0])
        return self._items

    def __len__(self) -> int:
        return sum(len(part.offsets) for part in self._parts)

    @overload
    def __getitem__(self, index: int) -> Item: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Item]: ...
    def __getitem__(self, index: int | slice) -> Item | Sequence[Item]:
        return self._read()[index]

    def __iter__(self) -> Iterator[Item]:
        return iter(self._read())


# --- what a batch adds, per KPI -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeriodShare(PickledByFields):
    """A KPI's new observations inside one binding period: their aggregate, how many, and the
    last one in batch order (the progress event names it)."""

    observations: int
    aggregate: SeriesAggregate
    last_event_id: str
    last_offset: int


@dataclass(frozen=True, slots=True)
class KpiShare(PickledByFields):
    """What a batch adds to one KPI."""

    kpi_key: str
    accepted: int = 0
    duplicates: int = 0
    older_than_batch: int = 0
    """Observations older than an earlier one of the same batch: stale whatever is stored."""
    rising: str = "[]"
    """The observations newer than every earlier one of the batch, as a JSON array of their
    order keys ([observed_at_us, event_id]) in batch order, rising: they are stale only if older
    than the KPI's stored latest. Text: read only then (late data), and cheap to send across."""
    first: tuple[int, str] | None = None
    """The order key of the batch's first new observation (the lowest of `rising`)."""
    newest: Observation | None = None
    outside_periods: int = 0
    periods: dict[Period, PeriodShare] = field(default_factory=dict)
    chunks: list[SeriesChunk] = field(default_factory=list)

    def stale_after(self, latest: Observation | None) -> int:
        """How many of the batch's observations are stale ("older than the KPI's newest when
        it arrived", counted in batch order) when the KPI's stored latest is `latest`."""
        if latest is None or self.first is None or latest.order_key < self.first:
            return self.older_than_batch
        keys = orjson.loads(self.rising)
        at_us, event_id = latest.order_key
        times = [key[0] for key in keys]
        below = bisect_left(times, at_us)
        same_time = bisect_left(times, at_us + 1)
        ids = [key[1] for key in keys[below:same_time]]
        return self.older_than_batch + below + bisect_left(ids, event_id)


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch's records summed up per KPI, and the assumptions that were made."""

    records: int
    dead_lettered: int
    already_scored: int
    received_at: str
    lowest_offsets: dict[Partition, int]
    """Per partition, its lowest offset in the batch (whether scored already or not)."""
    last_offsets: dict[Partition, int]
    """Per partition, its last offset not scored already."""
    kpis: dict[str, KpiShare]
    """The KPIs with new observations (in order of their first one), then those with only
    duplicates."""
    skipped_before: Mapping[Partition, int]
    known: frozenset[str]
    periods: Mapping[str, tuple[Period, ...]]
    """The binding periods assumed, of each KPI with new observations."""
    rejected: list[Rejection] = field(default_factory=list)
    sorted_event_ids: str = "[]"
    """The new observations' ids, as `event_ids_in_key_order` makes them: sorted here, where the
    batch is prepared (the worker process), for the save to insert in order."""

    @property
    def series(self) -> list[SeriesChunk]:
        """The new observations' chunks, KPI by KPI."""
        return [chunk for share in self.kpis.values() for chunk in share.chunks]

    @property
    def event_ids(self) -> list[str]:
        """The new observations' ids."""
        return cast(list[str], orjson.loads(self.sorted_event_ids))

    def holds_for(
        self,
        stored: Mapping[Partition, int],
        periods: Mapping[str, tuple[Period, ...]] | None = None,
    ) -> bool:
        """Whether preparing again with these stored positions (and binding periods) would
        give the same batch."""
        for partition, lowest in self.lowest_offsets.items():
            assumed = self.skipped_before.get(partition, 0)
            actual = stored.get(partition, 0)
            if assumed != actual and (assumed > lowest or actual > lowest):
                return False
        if periods is None:
            return True
        return all(
            self.periods.get(kpi_key, ()) == periods.get(kpi_key, ())
            for kpi_key, share in self.kpis.items()
            if share.accepted
        )


def periods_of(bindings: Sequence[tuple[str, Period]]) -> dict[str, tuple[Period, ...]]:
    """Each KPI's distinct binding periods, sorted (from (kpi_key, period) pairs)."""
    found: dict[str, set[Period]] = {}
    for kpi_key, period in bindings:
        found.setdefault(kpi_key, set()).add(period)
    return {kpi_key: tuple(sorted(periods)) for kpi_key, periods in found.items()}


# --- preparing ------------------------------------------------------------------------------------


def prepare(
    items: Sequence[Item],
    periods: Mapping[str, tuple[Period, ...]],
    received_at: str,
    *,
    skipped_before: Mapping[Partition, int] | None = None,
    known: frozenset[str] = frozenset(),
) -> PreparedBatch:
    """Sum up `items` per KPI: records before `skipped_before` (the stored positions) were
    scored already; the first copy of an event id counts, unless `known` (stored) has it."""
    return prepare_parts(
        parts_of(items), periods, received_at, skipped_before=skipped_before, known=known
    )


Entry = tuple[str, int, int, KpiReading]
"""A new observation with where it was read: topic, partition, offset, reading."""
READING = itemgetter(3)
AT_US = attrgetter("observed_at_us")


def prepare_parts(
    parts: Sequence[ReadPart],
    periods: Mapping[str, tuple[Period, ...]],
    received_at: str,
    *,
    skipped_before: Mapping[Partition, int] | None = None,
    known: frozenset[str] = frozenset(),
    rejected: list[Rejection] | None = None,
) -> PreparedBatch:
    """`prepare`, partition by partition: offsets are handled per part, in C builtins."""
    skipped_before = skipped_before or {}
    records = dead_lettered = already_scored = 0
    lowest: dict[Partition, int] = {}
    last: dict[Partition, int] = {}
    seen: set[str] = set()
    duplicates: Counter[str] = Counter()
    by_kpi: dict[str, list[Entry]] = {}
    for topic, partition, offsets, readings in parts:
        if not offsets:
            continue
        records += len(offsets)
        dead_lettered += readings.count(None)
        key = (topic, partition)
        lowest[key] = min(lowest.get(key, offsets[0]), min(offsets))
        skip = skipped_before.get(key, 0)
        if skip > lowest[key]:
            kept = [(o, r) for o, r in zip(offsets, readings, strict=True) if o >= skip]
            already_scored += len(offsets) - len(kept)
            if not kept:
                continue
            offsets, readings = [o for o, _ in kept], [r for _, r in kept]
        last[key] = max(last.get(key, -1), max(offsets))
        for offset, reading in zip(offsets, readings, strict=True):
            if reading is None:
                continue
            event_id = reading.event_id
            if event_id in seen or event_id in known:
                duplicates[reading.kpi_key] += 1
                seen.add(event_id)
                continue
            seen.add(event_id)
            group = by_kpi.get(reading.kpi_key)
            if group is None:
                by_kpi[reading.kpi_key] = [(topic, partition, offset, reading)]
            else:
                group.append((topic, partition, offset, reading))
    kpis = {
        kpi_key: _share(
            kpi_key, group, periods.get(kpi_key, ()), duplicates.pop(kpi_key, 0), received_at
        )
        for kpi_key, group in by_kpi.items()
    }
    for kpi_key, count in duplicates.items():
        kpis[kpi_key] = KpiShare(kpi_key, duplicates=count)
    return PreparedBatch(
        records=records,
        dead_lettered=dead_lettered,
        already_scored=already_scored,
        received_at=received_at,
        lowest_offsets=lowest,
        last_offsets=last,
        kpis=kpis,
        skipped_before=dict(skipped_before),
        known=known,
        periods={kpi_key: periods.get(kpi_key, ()) for kpi_key in by_kpi},
        rejected=rejected or [],
        # The ids seen first in this batch, and not stored: those of its new observations.
        sorted_event_ids=event_ids_in_key_order(seen - known if known else seen),
    )


def prepare_records(
    parts: Sequence[RawPart], periods: Mapping[str, tuple[Period, ...]], received_at: str
) -> PreparedBatch:
    """Read and prepare a fetched batch, assuming nothing was scored or stored yet (the worker
    process's job: it knows no stored state)."""
    read, rejected = read_parts(parts)
    return prepare_parts(read, periods, received_at, rejected=rejected)


def _share(
    kpi_key: str,
    group: list[Entry],
    periods: tuple[Period, ...],
    duplicates: int,
    received_at: str,
) -> KpiShare:
    """One KPI's new observations summed up: per-observation work in comprehensions and C
    builtins, the rest once per KPI."""
    readings: list[KpiReading] = list(map(READING, group))
    keys: list[tuple[int, str]] = list(map(ORDER_KEY, readings))
    newest_so_far = list(accumulate(keys, max))
    # Keys are distinct (ids are): a key is newer than every earlier one iff it is the maximum
    # so far, and `max` hands back that very object.
    rising = [key for key, newest in zip(keys, newest_so_far, strict=True) if key is newest]
    times: list[int] = list(map(AT_US, readings))
    newest = readings[keys.index(newest_so_far[-1])]
    outside, shares = _period_shares(group, readings, times, periods)
    return KpiShare(
        kpi_key,
        accepted=len(group),
        duplicates=duplicates,
        older_than_batch=len(keys) - len(rising),
        rising=orjson.dumps(rising).decode(),
        first=keys[0],
        newest=Observation(newest.event_id, newest.value, newest.observed_at_us),
        outside_periods=outside,
        periods=shares,
        chunks=_chunks_of(kpi_key, group, received_at),
    )


def _period_shares(
    group: list[Entry],
    readings: list[KpiReading],
    times: list[int],
    periods: tuple[Period, ...],
) -> tuple[int, dict[Period, PeriodShare]]:
    """How many observations fall in no period, and each period's share of them."""
    if not periods:
        return 0, {}
    earliest, latest = min(times), max(times)
    outside = 0
    if not all(start <= earliest and latest < end for start, end in periods):
        outside = sum(1 for at in times if not any(start <= at < end for start, end in periods))
    shares: dict[Period, PeriodShare] = {}
    for start, end in periods:
        if start <= earliest and latest < end:
            inside, mine = group, readings
        else:
            inside = [entry for entry, at in zip(group, times, strict=True) if start <= at < end]
            mine = [entry[3] for entry in inside]
        if inside:
            _, _, offset, reading = inside[-1]
            shares[(start, end)] = PeriodShare(
                len(inside), aggregate(mine), reading.event_id, offset
            )
    return outside, shares


def _chunks_of(kpi_key: str, group: list[Entry], received_at: str) -> list[SeriesChunk]:
    """The KPI's observations as chunks of the series (one per topic: usually one)."""
    rows = [
        (
            r.event_id,
            r.value,
            r.observed_at,
            r.observed_at_us,
            r.source,
            r.unit,
            r.dimensions,
            partition,
            offset,
        )
        for _, partition, offset, r in group
    ]
    topics = {entry[0] for entry in group}
    if len(topics) == 1:
        return [chunk_of(kpi_key, topics.pop(), received_at, rows)]
    return [
        chunk_of(
            kpi_key,
            topic,
            received_at,
            [row for row, entry in zip(rows, group, strict=True) if entry[0] == topic],
        )
        for topic in sorted(topics)
    ]
