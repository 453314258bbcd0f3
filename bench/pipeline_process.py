"""One process of the benchmark's latency run, as a deployment runs it: `okr scorer`'s jobs
(`scorer`) or `okr serve`'s other jobs without HTTP (`pipeline`: command consumer, relay,
projector), with its job board's metrics (the `okr_stage_*` histograms the benchmark reads)
served on 127.0.0.1:METRICS_PORT, as `okr scorer --metrics-port` serves them.

    python -m bench.pipeline_process scorer|pipeline METRICS_PORT [PROFILE_DIR]

With PROFILE_DIR, each stage's batches are profiled (cProfile) into PROFILE_DIR/ROLE.STAGE.prof,
and the event loop's thread (Kafka clients, the relay's publishing) into PROFILE_DIR/ROLE.loop.prof.

Settings come from the environment (`OKR_*`), as for the `okr` commands. SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import functools
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from projections import projector as projector_module
from projections.job_health import current_board
from services.bootstrap import pipeline_jobs, run_jobs, scorer_jobs
from services.operations.job_metrics import serve_job_metrics
from services.relay.follower import NotificationFollower
from services.scoring.scorer import KpiScorer
from services.settings import Settings

ROLES = ("scorer", "pipeline")
PROFILED: tuple[tuple[str, Any, str], ...] = (
    ("scorer", KpiScorer, "score"),
    ("log_read", NotificationFollower, "read"),
    ("project", projector_module, "apply_batch"),
)
"""The batch functions profiled, by name: they run in worker threads, out of reach of a profile
of the main thread."""


async def run_until_terminated(settings: Settings, role: str) -> None:
    jobs = scorer_jobs(settings) if role == "scorer" else pipeline_jobs(settings)
    task = asyncio.ensure_future(run_jobs(settings, jobs))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.contextmanager
def profiled_stages(profiles: dict[str, cProfile.Profile]) -> Iterator[None]:
    """One cProfile per batch function, enabled while it runs."""
    originals: list[tuple[Any, str, Callable[..., Any]]] = []
    for name, owner, attribute in PROFILED:
        original = getattr(owner, attribute)
        originals.append((owner, attribute, original))
        setattr(
            owner, attribute, _profiled(profiles.setdefault(name, cProfile.Profile()), original)
        )
    try:
        yield
    finally:
        for owner, attribute, original in originals:
            setattr(owner, attribute, original)


def _profiled(profile: cProfile.Profile, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        profile.enable()
        try:
            return function(*args, **kwargs)
        finally:
            profile.disable()

    return run


def main(argv: Sequence[str]) -> int:
    role, metrics_port = argv[0], int(argv[1])
    profile_dir = Path(argv[2]) if len(argv) > 2 else None
    if role not in ROLES:
        raise SystemExit(f"role is one of {ROLES}")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = Settings()
    serve_job_metrics(current_board(), "127.0.0.1", metrics_port)
    if profile_dir is None:
        asyncio.run(run_until_terminated(settings, role))
        return 0
    profiles: dict[str, cProfile.Profile] = {}
    loop_profile = cProfile.Profile()
    with profiled_stages(profiles):
        try:
            loop_profile.runcall(asyncio.run, run_until_terminated(settings, role))
        finally:
            loop_profile.dump_stats(profile_dir / f"{role}.loop.prof")
            for name, profile in profiles.items():
                profile.dump_stats(profile_dir / f"{role}.{name}.prof")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
