"""Stage timings: what a batch's timer observes, into which histograms, with which buckets.

The clock is replaced by one that moves only when told, so the seconds are exact.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from itertools import pairwise

import pytest

from projections import stage_timings
from projections.job_health import JobBoard, context_reporting_to, current_stages
from projections.stage_timings import (
    DURATION_BUCKETS,
    SIZE_BUCKETS,
    STAGES,
    StageTimings,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(stage_timings, "perf_counter", fake)
    yield fake


def samples(timings: StageTimings) -> dict[tuple[str, str, str, str], float]:
    """(sample name, job, stage, le) -> value."""
    return {
        (s.name, s.labels["job"], s.labels["stage"], s.labels.get("le", "")): s.value
        for family in timings.collect()
        for s in family.samples
    }


def test_a_batch_observes_each_stage_once_with_its_own_time_and_the_batch_size(
    clock: Clock,
) -> None:
    timings = StageTimings()
    timer = timings.timer("scorer")
    with timer.stage("plan"):
        clock.now += 0.002
        with timer.stage("prepare"):  # inside planning: counted once, as preparing
            clock.now += 0.030
        clock.now += 0.001
    for _ in range(2):  # a save retried after a lost race adds up
        with timer.stage("save"):
            clock.now += 0.004
    timer.observe(120)

    found = samples(timings)
    for stage, seconds in {"plan": 0.003, "prepare": 0.030, "save": 0.008}.items():
        assert found[("okr_stage_duration_seconds_count", "scorer", stage, "")] == 1
        assert found[("okr_stage_duration_seconds_sum", "scorer", stage, "")] == pytest.approx(
            seconds
        )
        assert found[("okr_stage_batch_size_count", "scorer", stage, "")] == 1
        assert found[("okr_stage_batch_size_sum", "scorer", stage, "")] == 120
    assert found[("okr_stage_batch_size_bucket", "scorer", "save", "100.0")] == 0
    assert found[("okr_stage_batch_size_bucket", "scorer", "save", "200.0")] == 1


def test_a_stage_that_fails_still_counts_its_time_for_the_batch_it_belongs_to(
    clock: Clock,
) -> None:
    timings = StageTimings()
    timer = timings.timer("relay")
    with pytest.raises(RuntimeError), timer.stage("publish"):
        clock.now += 0.5
        raise RuntimeError("broker away")
    with timer.stage("read"):
        clock.now += 0.25
    assert timer.seconds == {"publish": 0.5, "read": 0.25}
    assert samples(timings) == {}  # nothing observed until the batch is done


def test_buckets_resolve_a_tenth_of_a_millisecond_to_ten_seconds_and_one_to_100k_items() -> None:
    assert DURATION_BUCKETS[0] == 0.0001 and DURATION_BUCKETS[-1] == 10.0
    assert SIZE_BUCKETS[0] == 1 and SIZE_BUCKETS[-1] == 100_000
    for buckets in (DURATION_BUCKETS, SIZE_BUCKETS):
        assert list(buckets) == sorted(set(buckets))
        assert all(b / a <= 2.5 for a, b in pairwise(buckets))
    timings = StageTimings()
    timings.observe("projector", "apply", 0.00005, 1)
    timings.observe("projector", "apply", 7.0, 80_000)
    found = samples(timings)
    assert found[("okr_stage_duration_seconds_bucket", "projector", "apply", "0.0001")] == 1
    assert found[("okr_stage_duration_seconds_bucket", "projector", "apply", "5.0")] == 1
    assert found[("okr_stage_duration_seconds_bucket", "projector", "apply", "10.0")] == 2
    assert found[("okr_stage_batch_size_bucket", "projector", "apply", "1.0")] == 1
    assert found[("okr_stage_batch_size_bucket", "projector", "apply", "50000.0")] == 1
    assert found[("okr_stage_batch_size_bucket", "projector", "apply", "100000.0")] == 2


def test_each_board_keeps_its_own_and_jobs_find_theirs_in_their_context() -> None:
    def read_a_batch(size: int) -> None:
        current_stages().observe("relay", "read", 0.01, size)

    board, other = JobBoard(), JobBoard()
    context_reporting_to(board).run(read_a_batch, 3)
    context_reporting_to(other).run(read_a_batch, 5)

    def in_a_copy_of_its_context(size: int) -> None:  # as a worker thread of the job runs
        contextvars.copy_context().run(read_a_batch, size)

    context_reporting_to(other).run(in_a_copy_of_its_context, 7)
    assert samples(board.stages)[("okr_stage_batch_size_sum", "relay", "read", "")] == 3
    assert samples(other.stages)[("okr_stage_batch_size_sum", "relay", "read", "")] == 12


def test_every_job_names_its_stages_in_batch_order() -> None:
    assert set(STAGES) == {"scorer", "projector", "relay"}
    assert STAGES["scorer"][0] == STAGES["projector"][0] == "fetch"
    assert STAGES["scorer"][-1] == STAGES["projector"][-1] == "commit"
