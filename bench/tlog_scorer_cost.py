"""What the transparency log costs the KPI scorer: `bench.kpi_scoring`'s parts (a) and (b), run
with the log and without it, in one run.

Each round sets up twice (own topics, own stores): once as the service runs, once with the event
store's `LogWriter.append_events` replaced by a no-op in this process (the scorer saves here; its
worker processes only prepare batches). Each setup measures (a) the ceiling, raw aiokafka reading
the same messages, and (b) the scorer, as `bench.kpi_scoring` does; the figure compared is each
setup's scorer/ceiling ratio, so a busy moment of the machine moves both. The order of the two
alternates from round to round. The run with the log also counts the CPU seconds its appends took
(thread CPU time), as a share of the scorer process's CPU: a figure the machine's load does not
move, where the wall-clock ratios do. Prints each round and the medians; `--json PATH` writes
them.

    .venv/bin/python -m bench.tlog_scorer_cost --json var/bench/tlog_scorer_cost.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.kpi_scoring import (
    build_stream,
    create_bound_key_results,
    delete_topics,
    expected_values,
    measure_ceiling,
    measure_scorer,
    produce_all,
    stores,
)
from services.commands.application import OkrApplication
from services.kafka.admin import ensure_topics
from services.settings import Settings
from services.transparency.log_store import LogWriter


class AppendCpu:
    """CPU seconds the scorer's process spent appending to the log (thread CPU time, so it holds
    on a busy machine where wall-clock ratios wobble)."""

    def __init__(self) -> None:
        self.seconds = 0.0


@contextlib.contextmanager
def log_appends(enabled: bool, cpu: AppendCpu) -> Iterator[None]:
    """With the log: its appends timed in CPU. The baseline: the same store, its events never
    joining the Merkle log."""
    original = LogWriter.append_events

    def timed(self: LogWriter, *args: Any, **kwargs: Any) -> None:
        began = time.thread_time()
        try:
            original(self, *args, **kwargs)
        finally:
            cpu.seconds += time.thread_time() - began

    LogWriter.append_events = timed if enabled else (lambda *_, **__: None)  # type: ignore[method-assign]
    try:
        yield
    finally:
        LogWriter.append_events = original  # type: ignore[method-assign]


async def one_setup(arguments: argparse.Namespace, *, with_log: bool) -> dict[str, Any]:
    cpu = AppendCpu()
    with stores(arguments.store) as (event_store_url, read_store_url), log_appends(with_log, cpu):
        settings = Settings(
            kafka_bootstrap_servers=arguments.bootstrap,
            topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
            event_store_url=event_store_url,
            read_store_url=read_store_url,
        )
        await ensure_topics(settings)
        application = await asyncio.to_thread(OkrApplication, settings)
        try:
            bound = await asyncio.to_thread(
                create_bound_key_results, application, arguments.kpis, arguments.per_objective
            )
            stream = build_stream(bound, arguments.events, arguments.seed)
            expected = expected_values(bound, stream)
            await produce_all(settings, stream)
            ceiling = await measure_ceiling(settings, arguments.events)
            cpu.seconds = 0.0
            process_began = time.process_time()
            scorer, _ = await measure_scorer(settings, application, arguments.events, expected)
            process_cpu = time.process_time() - process_began
            leaves = application.receipts.log.size()
            stored = application.last_notification_id()
        finally:
            application.close()
            await delete_topics(settings)
    return {
        "with_log": with_log,
        "ceiling_msgs_per_s": round(ceiling),
        "scorer_msgs_per_s": round(scorer),
        "ratio": round(scorer / ceiling, 3),
        "stored_events": stored,
        "leaves": leaves,
        "scorer_process_cpu_s": round(process_cpu, 3),
        "log_append_cpu_s": round(cpu.seconds, 4),
        "log_cpu_share": round(cpu.seconds / process_cpu, 4) if process_cpu else 0.0,
    }


def summary(rounds: Sequence[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    on = statistics.median(r["with_log"]["ratio"] for r in rounds)
    off = statistics.median(r["without_log"]["ratio"] for r in rounds)
    return {
        "ratio_with_log": on,
        "ratio_without_log": off,
        "cost": round(1 - on / off, 3),
        "scorer_with_log": statistics.median(r["with_log"]["scorer_msgs_per_s"] for r in rounds),
        "scorer_without_log": statistics.median(
            r["without_log"]["scorer_msgs_per_s"] for r in rounds
        ),
        "log_cpu_share": statistics.median(r["with_log"]["log_cpu_share"] for r in rounds),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--kpis", type=int, default=1_000)
    parser.add_argument("--per-objective", type=int, default=5)
    parser.add_argument("--store", default="sqlite", help="'sqlite' or a postgresql:// URL")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--seed", type=int, default=20260714)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args(argv)
    load_before = os.getloadavg()
    rounds: list[dict[str, dict[str, Any]]] = []
    print("round  with log: scorer msg/s (ratio)   without: scorer msg/s (ratio)")
    for number in range(arguments.repeat):
        order = (True, False) if number % 2 == 0 else (False, True)
        done = {flag: asyncio.run(one_setup(arguments, with_log=flag)) for flag in order}
        rounds.append({"with_log": done[True], "without_log": done[False]})
        on, off = done[True], done[False]
        print(
            f"{number + 1:>5}  {on['scorer_msgs_per_s']:>14,} ({on['ratio']:.3f})"
            f"          {off['scorer_msgs_per_s']:>14,} ({off['ratio']:.3f})"
            f"   leaves {on['leaves']:,} / {off['leaves']:,}; appends took "
            f"{on['log_append_cpu_s']:.3f} s of the scorer process's "
            f"{on['scorer_process_cpu_s']:.2f} CPU s ({on['log_cpu_share']:.2%})"
        )
    result = summary(rounds)
    print(
        f"median ratio to the ceiling: {result['ratio_with_log']:.3f} with the log, "
        f"{result['ratio_without_log']:.3f} without: the log costs {result['cost']:.1%}; "
        f"its appends took {result['log_cpu_share']:.2%} of the scorer process's CPU (median)"
    )
    print(f"load average before {load_before}, after {os.getloadavg()}")
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        document = {**result, "rounds": rounds, "load_before": load_before}
        arguments.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
