"""`services.scoring.worker`: a real worker process prepares batches as the scorer would, and
never outlives the scorer, however the scorer dies.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from services.scoring.preparation import PreparedBatch, RawPart, prepare_records
from services.scoring.worker import PreparationWorker

START = datetime(2026, 7, 1, tzinfo=UTC)
PERIODS = {"sales.units": ((0, 1 << 62),), "nps": ((0, 1),)}


def value(index: int, kpi_key: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"e-{index % 7}",  # repeats: duplicates within the batch
            "kpi_key": kpi_key,
            "value": index * 1.5,
            "observed_at": (START + timedelta(minutes=index)).isoformat(),
            "source": "test",
        }
    )


def parts() -> list[RawPart]:
    return [
        RawPart(
            "kpi.events", 0, [0, 1, 2, 3], [value(0, "sales.units"), b"{", value(2, "nps"), None]
        ),
        RawPart("kpi.events", 3, [10, 11], [value(11, "sales.units"), value(4, "sales.units")]),
    ]


def comparable(prepared: PreparedBatch) -> tuple[object, ...]:
    """Everything but the rejections' exception objects (compared by reason and detail)."""
    rejected = [(index, error.reason, error.detail) for index, error in prepared.rejected]
    return (
        prepared.records,
        prepared.dead_lettered,
        prepared.lowest_offsets,
        prepared.last_offsets,
        prepared.kpis,
        prepared.periods,
        rejected,
    )


async def test_the_worker_prepares_what_the_scorer_would() -> None:
    worker = PreparationWorker()
    await worker.start()
    try:
        prepared = await worker.prepare(parts(), PERIODS, "2026-11-26T00:00:00+00:00")
    finally:
        worker.stop()

    assert comparable(prepared) == comparable(
        prepare_records(parts(), PERIODS, "2026-11-26T00:00:00+00:00")
    )
    assert [(index, error.reason) for index, error in prepared.rejected] == [
        (1, "not_json"),
        (3, "empty"),
    ]
    assert prepared.kpis["sales.units"].accepted == 2
    assert prepared.kpis["sales.units"].duplicates == 1


SCORER_STAND_IN = """
import asyncio, sys
from services.scoring.worker import PreparationWorker

async def main() -> None:
    worker = PreparationWorker()
    await worker.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

if __name__ == "__main__":
    asyncio.run(main())
"""


REPOSITORY = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def exits_within(pid: int, seconds: float) -> bool:
    """Whether the process ends within `seconds` (a pidfd turns readable when it does)."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([descriptor], [], [], seconds)
        return bool(readable)
    finally:
        os.close(descriptor)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_a_scorer_killed_with_sigkill_leaves_no_worker_behind(tmp_path: Path) -> None:
    script = tmp_path / "scorer_stand_in.py"
    script.write_text(SCORER_STAND_IN)
    scorer = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    try:
        assert scorer.stdout is not None
        assert scorer.stdout.readline().strip() == b"ready"
        workers = children_of(scorer.pid)
        assert workers, "the worker process was not started"
        os.kill(scorer.pid, signal.SIGKILL)
        scorer.wait()

        left = [pid for pid in workers if not exits_within(pid, 30)]
        assert left == [], f"processes {left} outlived the scorer"
    finally:
        if scorer.poll() is None:
            scorer.kill()


STOPPED_THEN_TERMINATED = """
import asyncio, signal
from services.scoring.worker import PreparationWorker

async def main() -> None:
    worker = PreparationWorker(2)
    await worker.start()
    worker.stop()
    # What uvicorn does after its shutdown: the SIGTERM it caught is raised again, with the
    # default action, so no atexit hook of this process runs.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_a_stopped_worker_leaves_no_semaphore_behind_even_when_the_process_dies_at_once(
    tmp_path: Path,
) -> None:
    """multiprocessing's resource tracker warns of "leaked semaphore objects" when a process ends
    before the pool's queues were released: `stop` must release them itself."""
    script = tmp_path / "stopped_then_terminated.py"
    script.write_text(STOPPED_THEN_TERMINATED)
    finished = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        timeout=120,
    )
    assert finished.returncode == -signal.SIGTERM
    assert b"leaked semaphore" not in finished.stderr, finished.stderr.decode()
