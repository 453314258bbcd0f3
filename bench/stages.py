"""The benchmark's table of pipeline stages, read from the `okr_stage_*` histograms the jobs keep.

The scorer, the relay and the projector time each batch's stages themselves
(`projections.stage_timings`). A snapshot holds, per (job, stage), the batches, seconds and items
observed so far: scraped from a process's metrics endpoint (`okr scorer --metrics-port`, or
`bench.pipeline_process`), or read from a job board in this process. The difference of two
snapshots is what the stages did in between: the benchmark takes one when it starts offering
events and one when it stops.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from projections.stage_timings import STAGES

DURATION = "okr_stage_duration_seconds"
SIZE = "okr_stage_batch_size"


@dataclass(frozen=True)
class StageTotals:
    """What one stage of one job observed: batches, seconds and items (histogram count, sums)."""

    batches: float = 0.0
    seconds: float = 0.0
    items: float = 0.0

    def __add__(self, other: StageTotals) -> StageTotals:
        return StageTotals(
            self.batches + other.batches, self.seconds + other.seconds, self.items + other.items
        )

    def __sub__(self, earlier: StageTotals) -> StageTotals:
        return self + StageTotals(-earlier.batches, -earlier.seconds, -earlier.items)


Snapshot = dict[tuple[str, str], StageTotals]
"""Per (job, stage), what it observed since the process started."""


def snapshot(families: Iterable[Metric]) -> Snapshot:
    """The stages' totals in metric families (parsed from a scrape, or a board's `collect()`)."""
    found: dict[tuple[str, str], dict[str, float]] = {}
    for family in families:
        for sample in family.samples:
            key = (sample.labels.get("job", ""), sample.labels.get("stage", ""))
            if sample.name == f"{DURATION}_count":
                found.setdefault(key, {})["batches"] = sample.value
            elif sample.name == f"{DURATION}_sum":
                found.setdefault(key, {})["seconds"] = sample.value
            elif sample.name == f"{SIZE}_sum":
                found.setdefault(key, {})["items"] = sample.value
    return {key: StageTotals(**totals) for key, totals in found.items()}


async def scrape(url: str) -> Snapshot:
    """A process's stage totals, from its metrics endpoint."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    response.raise_for_status()
    return snapshot(text_string_to_metric_families(response.text))


def since(earlier: Snapshot, later: Snapshot) -> Snapshot:
    """What each stage observed between two snapshots (of one process, or merged)."""
    return {key: totals - earlier.get(key, StageTotals()) for key, totals in later.items()}


def merged(*snapshots: Snapshot) -> Snapshot:
    """Several processes' snapshots as one (a stage in two processes adds up)."""
    total: Snapshot = {}
    for one in snapshots:
        for key, totals in one.items():
            total[key] = total.get(key, StageTotals()) + totals
    return total


def summary(stages: Snapshot) -> dict[str, dict[str, dict[str, float]]]:
    """Per job, per stage (in the order a batch goes through them): batches, total seconds,
    mean milliseconds a batch, share of the job's stage time, mean items a batch. A stage that
    saw no batch is left out."""
    seen: dict[str, list[tuple[str, StageTotals]]] = {}
    for (job, stage), totals in sorted(stages.items(), key=lambda item: _order(*item[0])):
        if totals.batches > 0:
            seen.setdefault(job, []).append((stage, totals))
    table: dict[str, dict[str, dict[str, float]]] = {}
    for job, rows in seen.items():
        busy_s = sum(totals.seconds for _, totals in rows)
        table[job] = {
            stage: {
                "count": round(totals.batches),
                "total_s": round(totals.seconds, 3),
                "mean_ms": round(1000 * totals.seconds / totals.batches, 2),
                "share": round(totals.seconds / busy_s, 3) if busy_s else 0.0,
                "mean_size": round(totals.items / totals.batches, 1),
            }
            for stage, totals in rows
        }
    return table


COLUMNS = (
    ("count", "count", "{:,}"),
    ("total_s", "total s", "{:,.3f}"),
    ("mean_ms", "mean ms", "{:,.2f}"),
    ("share", "share", "{:.0%}"),
    ("mean_size", "mean size", "{:,.1f}"),
)


def table_lines(table: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """The summary as aligned text: a row per job and stage (share: of the job's stage time)."""
    cells = [["job", "stage", *(title for _, title, _ in COLUMNS)]] + [
        [job, stage, *(form.format(row[key]) for key, _, form in COLUMNS)]
        for job, rows in table.items()
        for stage, row in rows.items()
    ]
    return aligned(cells, left=2)


def aligned(cells: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Rows of cells as lines, each column as wide as its widest cell: the first `left` columns
    flush left, the figures after them flush right."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]


def _order(job: str, stage: str) -> tuple[int, str, int, str]:
    jobs, stages = list(STAGES), STAGES.get(job, ())
    return (
        jobs.index(job) if job in jobs else len(jobs),
        job,
        stages.index(stage) if stage in stages else len(stages),
        stage,
    )


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]
