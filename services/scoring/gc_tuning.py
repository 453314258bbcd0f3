"""Garbage-collector settings for the processes that move batches: the scorer, its worker and the
projector. Their batches allocate many short-lived objects next to many long-lived ones (cached
objectives, loaded modules), and Python's default thresholds make the collector walk the
long-lived ones again and again."""

from __future__ import annotations

import gc


def freeze_start_up_objects() -> None:
    """Move everything alive at start-up (modules, pydantic schemas, the application) out of the
    cyclic GC's reach: otherwise every full collection walks them again, and a batch allocates
    enough objects (a reading, a row and a tuple or two per record) to trigger many. And collect
    the youngest generation every 50,000 allocations instead of 700: a batch's objects live until
    it is saved and hold no cycles, so the default thresholds spent ~2.5 µs a record walking them
    (`KpiScorer.score` over 100,000 records: 16.7 → 14.2 µs a record; with no cyclic GC at all,
    13.6)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
