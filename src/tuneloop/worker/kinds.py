"""Job kinds beyond training. A kind is a function `run(job_id, settings)` that a worker runs in a child
process of its own: it opens its own database session, does the work, keeps `job.progress` up to date, and
writes `job.result` together with its last piece of work (so a job that restarts after a crash does not do
that work twice). Services register their kinds here (`@register("repredict")`); the worker layer itself
imports none of them. `train` is the worker's own kind (runner.py): it runs `job.recipe` with the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.store import repo
from tuneloop.store.db import make_engine, sessions
from tuneloop.store.tables import Job

KindFn = Callable[[str, Settings], Any]
KINDS: dict[str, KindFn] = {}


def register(kind: str) -> Callable[[KindFn], KindFn]:
    def add(fn: KindFn) -> KindFn:
        KINDS[kind] = fn
        return fn

    return add


@contextmanager
def job_session(job_id: str, settings: Settings) -> Iterator[tuple[Session, Job]]:
    """A kind's own database session (its child process has no other) and its job, with typed `params`."""
    engine = make_engine(settings.db_url)
    try:
        with sessions(engine)() as session:
            job = repo.get_job(session, job_id=job_id)
            if job is None or job.params is None:
                raise RuntimeError(f"job {job_id} is gone, or has no parameters")
            yield session, job
    finally:
        engine.dispose()
