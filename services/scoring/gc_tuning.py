"""Garbage-collector settings for the processes that move batches: the scorer, its worker and the
projector. Their batches allocate many short-lived objects next to many long-lived ones (cached
objectives, loaded modules), and Python's default thresholds make the collector walk the
long-lived ones again and again."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Allocations (less deallocations) of tracked objects between two young collections."""
SCORER_YOUNG_THRESHOLD = 500_000
"""The scorer's: its process holds up to three fetched batches of records alive at once (the one
being saved, those the workers prepare), each record a tracked object or two from aiokafka. Below
that, young collections ran in the middle of every batch and walked live records only to
promote them (4 collections, ~80 ms of 200,000 records' ~1.2 s); above it, the records are freed
before the count reaches the threshold. The cost: up to that many objects of cyclic garbage may
wait for a collection (a few tens of MB at worst; such garbage is rare on this path)."""


def freeze_start_up_objects(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Move everything alive at start-up (modules, pydantic schemas, the application) out of the
    cyclic GC's reach: otherwise every full collection walks them again, and a batch allocates
    enough objects (a reading, a row and a tuple or two per record) to trigger many. And collect
    the youngest generation every `young_threshold` allocations instead of 700: a batch's objects
    live until it is saved and hold no cycles, so the default thresholds spent ~2.5 µs a record
    walking them (`KpiScorer.score` over 100,000 records: 16.7 → 14.2 µs a record; with no cyclic
    GC at all, 13.6). Jobs sharing a process (`okr serve` with its scorer) keep the highest."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(young_threshold, gc.get_threshold()[0]), 20, 100)
