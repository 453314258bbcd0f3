"""A worker process that prepares the scorer's big batches while the scorer saves the last one.

Reading and summing up a batch (`services.scoring.preparation`) is pure Python work per record;
saving it is work per KPI and key result plus SQL. In one process they take turns on the GIL, so
the scorer could never go faster than both together (ADR 14). Here the records' values cross to
a second process as bytes (cheap to pickle), and what comes back is per KPI (a thousand KPIs, not
fifty thousand readings), so the crossing costs little either way.

The worker knows no stored state: it assumes no record was scored and no event id was stored
yet, and binding periods as the scorer last read them. The scorer checks those assumptions when
it saves and prepares again itself when one does not hold (`PreparedBatch.holds_for`).

The worker dies with the scorer: a scorer killed with SIGKILL leaves no orphan behind (Linux's
parent-death signal; elsewhere the pool's own shutdown covers a clean stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import multiprocessing
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from time import perf_counter

from projections.job_health import current_stages
from projections.stage_timings import SCORER
from services.scoring.gc_tuning import freeze_start_up_objects
from services.scoring.preparation import Period, PreparedBatch, RawPart, prepare_parts, read_parts

PR_SET_PDEATHSIG = 1


class PreparationWorker:
    """Worker processes (`OKR_SCORER_WORKERS`, two by default), each preparing a batch of its
    own; replaced by the next `run_scorer` attempt if one dies (its death fails the batch; the
    stored positions make the retry safe). Batches are handed back in the order they came."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        """Start the processes and wait until they can prepare (their imports take a while)."""
        self._pool = ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(os.getpid(),),
        )
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _ready) for _ in range(self.processes))
        )

    def prepare(
        self,
        parts: Sequence[RawPart],
        periods: Mapping[str, tuple[Period, ...]],
        received_at: str,
    ) -> asyncio.Future[PreparedBatch]:
        """Send the batch to the worker now; batches sent meanwhile queue behind it. Its decode
        and prepare stages, timed in the worker, are observed here (as the scorer's)."""
        assert self._pool is not None, "start the worker first"
        timed = asyncio.get_running_loop().run_in_executor(
            self._pool, _prepare_timed, parts, dict(periods), received_at
        )
        return asyncio.ensure_future(_observed(timed, sum(len(part.offsets) for part in parts)))

    def stop(self) -> None:
        """Stop the processes and release what the pool made; batches not started are dropped
        (nothing of them was saved), one being prepared is finished first (a fraction of a
        second: the same wait a scorer batch has anyway).

        It waits, rather than leaving the pool to wind down behind it: the pool's queues hold
        named semaphores, released when the queues are. A process that ends before that, as
        `okr serve` does (uvicorn raises the SIGTERM it caught again, so no exit hook runs),
        leaves them to multiprocessing's resource tracker, which warns of "leaked semaphore
        objects" at every stop.
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.shutdown(wait=True, cancel_futures=True)
        del pool
        gc.collect()  # the queues' semaphores are unlinked when the queues are collected


def _prepare_timed(
    parts: Sequence[RawPart], periods: Mapping[str, tuple[Period, ...]], received_at: str
) -> tuple[PreparedBatch, float, float]:
    """`prepare_records`, with the seconds it took to read the records and to prepare them.

    The cyclic garbage collector is off meanwhile: a batch makes hundreds of thousands of objects
    that live until it is handed back and hold no cycles, so every collection it would trigger
    walks them in vain (~10 % of a batch's time). A cycle made meanwhile (a caught exception's
    traceback) waits for the next collection after it."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        started = perf_counter()
        read, rejected = read_parts(parts)
        read_at = perf_counter()
        prepared = prepare_parts(read, periods, received_at, rejected=rejected)
        return prepared, read_at - started, perf_counter() - read_at
    finally:
        if collecting:
            gc.enable()


async def _observed(
    timed: asyncio.Future[tuple[PreparedBatch, float, float]], records: int
) -> PreparedBatch:
    prepared, decode_s, prepare_s = await timed
    stages = current_stages()
    stages.observe(SCORER, "decode", decode_s, records)
    stages.observe(SCORER, "prepare", prepare_s, records)
    return prepared


def _ready() -> bool:
    return True


def _start(parent: int) -> None:
    _die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the scorer stops the workers itself, and each
    # would otherwise print a KeyboardInterrupt traceback on the way out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    freeze_start_up_objects()


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when the scorer's process dies, however it dies."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)
