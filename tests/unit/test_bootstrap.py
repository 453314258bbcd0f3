"""What `okr serve` runs: the scorer in the same process unless `okr scorer` runs beside it."""

from __future__ import annotations

from functools import partial

from services.bootstrap import pipeline_jobs, scorer_jobs, service_jobs
from services.relay.publisher import run_relay
from services.scoring.bindings import run_bindings_follower
from services.scoring.scorer import run_scorer
from services.settings import Settings


def job_functions(jobs: list[object]) -> set[object]:
    return {job.func for job in jobs if isinstance(job, partial)}


def test_serve_runs_the_scorer_and_its_bindings_follower_by_default() -> None:
    functions = job_functions(service_jobs(Settings()))
    assert {run_scorer, run_bindings_follower, run_relay} <= functions


def test_serve_leaves_scoring_to_a_scorer_process_when_told() -> None:
    settings = Settings(serve_runs_scorer=False)
    functions = job_functions(service_jobs(settings))
    assert run_scorer not in functions and run_bindings_follower not in functions
    assert functions == job_functions(pipeline_jobs(settings))
    assert job_functions(scorer_jobs(settings)) == {run_scorer, run_bindings_follower}
