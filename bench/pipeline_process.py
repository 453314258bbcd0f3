"""One process of the benchmark's latency run, as a deployment runs it: `okr scorer`'s jobs
(`scorer`) or `okr serve`'s other jobs without HTTP (`pipeline`: command consumer, relay,
projector), with the stage timers of `bench.stages` written to a JSON file when it stops.

    python -m bench.pipeline_process scorer|pipeline STAGES_JSON [PROFILE_DIR]

With PROFILE_DIR, each stage's batches are profiled (cProfile) into PROFILE_DIR/ROLE.STAGE.prof,
and the event loop's thread (Kafka clients, the relay's publishing) into PROFILE_DIR/ROLE.loop.prof.

Settings come from the environment (`OKR_*`), as for the `okr` commands. SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from bench.stages import timed_stages
from services.bootstrap import pipeline_jobs, run_jobs, scorer_jobs
from services.settings import Settings

ROLES = ("scorer", "pipeline")


async def run_until_terminated(settings: Settings, role: str) -> None:
    jobs = scorer_jobs(settings) if role == "scorer" else pipeline_jobs(settings)
    task = asyncio.ensure_future(run_jobs(settings, jobs))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main(argv: Sequence[str]) -> int:
    role, stages_path = argv[0], Path(argv[1])
    profile_dir = Path(argv[2]) if len(argv) > 2 else None
    if role not in ROLES:
        raise SystemExit(f"role is one of {ROLES}")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = Settings()
    profiles: dict[str, cProfile.Profile] | None = {} if profile_dir else None
    with timed_stages(profiles) as stages:
        loop_profile = cProfile.Profile() if profiles is not None else None
        try:
            if loop_profile is not None:
                loop_profile.runcall(asyncio.run, run_until_terminated(settings, role))
            else:
                asyncio.run(run_until_terminated(settings, role))
        finally:
            if loop_profile is not None:
                assert profile_dir is not None
                loop_profile.dump_stats(profile_dir / f"{role}.loop.prof")
            document = {name: times.to_json() for name, times in stages.items()}
            stages_path.write_bytes(orjson.dumps(document))
            for name, profile in (profiles or {}).items():
                assert profile_dir is not None
                profile.dump_stats(profile_dir / f"{role}.{name}.prof")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
