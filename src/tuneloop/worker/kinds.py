"""Job kinds beyond training. A kind is a function `run(job_id, settings)` that a worker runs in a child
process of its own: it opens its own database session, does the work, keeps `job.progress` up to date, and
writes `job.result` together with its last piece of work (so a job that restarts after a crash does not do
that work twice). Services register their kinds here (`@register("repredict")`); the worker layer itself
imports none of them. `train` is the worker's own kind (runner.py): it runs `job.recipe` with the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuneloop.config.settings import Settings

KindFn = Callable[[str, Settings], Any]
KINDS: dict[str, KindFn] = {}


def register(kind: str) -> Callable[[KindFn], KindFn]:
    def add(fn: KindFn) -> KindFn:
        KINDS[kind] = fn
        return fn

    return add
