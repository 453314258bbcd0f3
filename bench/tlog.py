"""The transparency log at a million events: appending, proofs, and a full check from a checkpoint.

In one run, on one event store (SQLite in a scratch directory, or `--store postgresql://…`, a
scratch database created and dropped):

1. **Append**: `--events` stored events (the shape of a scorer's `KpiProgressRecorded`) written
   through the event store's recorder, `--batch` per transaction, so each transaction also appends
   its leaves to the Merkle tree; next to the same inserts through eventsourcing's own recorder,
   without the log, into another table of the same database (the baseline).
2. **Proofs** at that size: `--proofs` inclusion proofs of random leaves and consistency proofs
   from random older sizes, each made from the store (O(log n) stored hashes in one statement)
   and checked with `tlog_check`; medians and p99 in milliseconds.
3. **Verify**: `okr audit verify --since-checkpoint`'s check (`verify_since_checkpoint`: every
   leaf recomputed from the stored events, compared with the tree and the signed root) next to
   reading the same events raw (every notification page, each state decoded from JSON).

    .venv/bin/python -m bench.tlog --json var/bench/tlog.json
    .venv/bin/python -m bench.tlog --events 100000 --store postgresql://postgres@127.0.0.1:55432/postgres

Prints a table and the machine's load; `--json PATH` writes it all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
from eventsourcing.persistence import StoredEvent

from services.audit.checkpoints import make_checkpoint, signer_for, verifiers_for
from services.audit.proofs import consistency_proof, inclusion_proof
from services.audit.tampering import verify_since_checkpoint
from services.commands.application import OkrApplication
from services.settings import Settings
from services.stores import postgres_location
from services.transparency.tlog_check import check_consistency, check_inclusion

TOPIC = "domain.objective_events:KpiProgressRecorded"


def progress_state(i: int) -> bytes:
    """A stored KpiProgressRecorded, as the scorer writes one (chain hash included)."""
    return orjson.dumps(
        {
            "timestamp": "2026-12-07T10:00:00+00:00",
            "actor": "kpi-scorer",
            "command_id": f"kpi:orders:{i}",
            "reason": None,
            "chain_hash": f"{i:064x}",
            "key_result_id": str(uuid.UUID(int=i)),
            "value": 100.0 + i % 997,
            "kpi_key": "orders",
            "observations": 25,
            "last_kpi_event_id": f"evt-{i}",
            "last_offset": i,
        }
    )


def stored_events(start: int, count: int, objectives: list[uuid.UUID]) -> list[StoredEvent]:
    """Events spread over objectives, each objective's versions consecutive."""
    per = len(objectives)
    return [
        StoredEvent(
            originator_id=objectives[i % per],
            originator_version=i // per + 1,
            topic=TOPIC,
            state=progress_state(i),
        )
        for i in range(start, start + count)
    ]


@contextmanager
def scratch_settings(store: str | None) -> Iterator[Settings]:
    with tempfile.TemporaryDirectory(prefix="okr-tlog-") as directory:
        base = Path(directory)
        if store is None:
            yield Settings(
                event_store_url=f"sqlite:///{base / 'events.sqlite'}",
                read_store_url=f"sqlite:///{base / 'read.sqlite'}",
                audit_signing_key_file=base / "audit.key",
            )
            return
        name = f"okr_bench_{uuid.uuid4().hex[:10]}"
        admin = postgres_location(store)
        with psycopg.connect(admin.conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{store.rpartition('/')[0]}/{name}"
        try:
            yield Settings(
                event_store_url=url, read_store_url=url, audit_signing_key_file=base / "audit.key"
            )
        finally:
            with psycopg.connect(admin.conninfo, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def baseline_recorder(application: OkrApplication) -> Any:
    """eventsourcing's own recorder of the same kind, on another table of the same database."""
    from eventsourcing.postgres import PostgresApplicationRecorder
    from eventsourcing.sqlite import SQLiteApplicationRecorder

    recorder = application.recorder
    if isinstance(recorder, PostgresApplicationRecorder):
        plain: Any = PostgresApplicationRecorder(
            recorder.datastore, events_table_name="bench_plain_events"
        )
    else:
        plain = SQLiteApplicationRecorder(recorder.datastore, "bench_plain_events")
    plain.create_table()
    return plain


OBJECTIVES = 1000


def objectives_of(seed: int) -> list[uuid.UUID]:
    return [uuid.UUID(int=seed * 1_000_000 + n) for n in range(OBJECTIVES)]


def timed_inserts(
    insert: Callable[[list[StoredEvent]], Any], events: int, batch: int, seed: int
) -> float:
    objectives = objectives_of(seed)
    took = 0.0
    for start in range(0, events, batch):
        chunk = stored_events(start, min(batch, events - start), objectives)
        began = time.perf_counter()
        insert(chunk)
        took += time.perf_counter() - began
    return took


def millis(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def run(store: str | None, events: int, batch: int, proofs: int) -> dict[str, Any]:
    results: dict[str, Any] = {"events": events, "batch": batch}
    with scratch_settings(store) as settings:
        results["store"] = "postgresql" if store else "sqlite"
        application = OkrApplication(settings)
        try:
            plain = baseline_recorder(application)
            results["append_raw_s"] = timed_inserts(plain.insert_events, events, batch, seed=1)
            results["append_log_s"] = timed_inserts(
                application.recorder.insert_events, events, batch, seed=2
            )
            log_reader = application.receipts.log
            assert log_reader.size() == events
            signer = signer_for(settings)
            verifiers = verifiers_for(settings)
            began = time.perf_counter()
            kept = make_checkpoint(log_reader, signer, settings.audit_log_origin)
            results["checkpoint_ms"] = (time.perf_counter() - began) * 1000

            rng = random.Random(7)
            logged = objectives_of(2)
            inclusion: list[float] = []
            for _ in range(proofs):
                i = rng.randrange(events)
                objective, version = logged[i % OBJECTIVES], i // OBJECTIVES + 1
                began = time.perf_counter()
                proof = inclusion_proof(application, objective, version, tree_size=kept.tree_size)
                inclusion.append(time.perf_counter() - began)
                check_inclusion(proof, verifiers)
            consistency: list[float] = []
            for _ in range(proofs):
                old = make_old_checkpoint(log_reader, signer, settings, rng.randrange(1, events))
                began = time.perf_counter()
                made = consistency_proof(application, old, kept.tree_size)
                consistency.append(time.perf_counter() - began)
                check_consistency(made, verifiers)
            results["inclusion_proof"] = millis(inclusion)
            results["consistency_proof"] = millis(consistency)

            began = time.perf_counter()
            raw = 0
            for page in application.notification_pages(page_size=5000):
                for notification in page:
                    orjson.loads(notification.state)
                    raw += 1
            results["read_raw_s"] = time.perf_counter() - began
            began = time.perf_counter()
            report = verify_since_checkpoint(application, kept.note, verifiers)
            results["verify_s"] = time.perf_counter() - began
            results["verify_intact"] = report.intact
            results["verify_events"] = report.events
            assert raw == report.events == events
        finally:
            application.close()
    return results


def make_old_checkpoint(log_reader: Any, signer: Any, settings: Settings, size: int) -> str:
    """A signed checkpoint of an older size, as an auditor would have kept one."""
    from services.transparency.merkle import tree_hash
    from services.transparency.tlog_check import Checkpoint

    root = tree_hash(size, log_reader.read_hashes)
    return str(signer.sign(Checkpoint(settings.audit_log_origin, size, root)))


def table(results: dict[str, Any]) -> str:
    n = results["events"]
    rows = [
        (
            "append, eventsourcing's recorder (baseline)",
            f"{results['append_raw_s']:.1f} s",
            f"{n / results['append_raw_s']:,.0f} events/s",
        ),
        (
            "append, with the Merkle log",
            f"{results['append_log_s']:.1f} s",
            f"{n / results['append_log_s']:,.0f} events/s "
            f"({results['append_raw_s'] / results['append_log_s']:.2f} of baseline)",
        ),
        ("sign a checkpoint", f"{results['checkpoint_ms']:.1f} ms", ""),
        (
            "inclusion proof",
            f"{results['inclusion_proof']['median_ms']:.2f} ms median",
            f"p99 {results['inclusion_proof']['p99_ms']:.2f} ms",
        ),
        (
            "consistency proof",
            f"{results['consistency_proof']['median_ms']:.2f} ms median",
            f"p99 {results['consistency_proof']['p99_ms']:.2f} ms",
        ),
        (
            "read every event raw (baseline)",
            f"{results['read_raw_s']:.1f} s",
            f"{n / results['read_raw_s']:,.0f} events/s",
        ),
        (
            "verify --since-checkpoint",
            f"{results['verify_s']:.1f} s",
            f"{n / results['verify_s']:,.0f} events/s "
            f"({results['read_raw_s'] / results['verify_s']:.2f} of raw read)",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"transparency log, {n:,} events, {results['store']}, batch {results['batch']}"]
    lines += [f"  {name:<{width}}  {a:>18}  {b}" for name, a, b in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--proofs", type=int, default=200)
    parser.add_argument(
        "--store", help="postgresql://… (a scratch database is made); default SQLite"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = run(args.store, args.events, args.batch, args.proofs)
    results["load_before"] = load_before
    results["load_after"] = os.getloadavg()
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    print(table(results))
    print(f"load average before {load_before}, after {results['load_after']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
