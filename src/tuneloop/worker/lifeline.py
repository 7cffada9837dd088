"""What the processes started by `tuneloop serve` (its workers) and by a worker (its training children) run.
They must never outlive their parent, however and whenever it dies. A spawned child imports this module
before it can act, so it imports nothing heavy at the top."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

"""A training child's stderr, in its run folder: the last words of a child that died without an error event."""
WATCH_SECONDS = 0.5


def tie_to_parent(parent_pid: int) -> None:
    """A child's first act. The death signal kills it when its parent dies from now on, even by SIGKILL;
    a parent that died before (while the child was starting) shows as a changed parent pid; a watcher
    thread covers systems without the death signal."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the watcher alone
        pass
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="watch-parent", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_SECONDS)
    os._exit(1)


def run_worker(parent_pid: int, settings: dict, worker_id: str | None, kinds: dict | None = None) -> None:
    """A worker process of `tuneloop serve`: not a daemon process (it starts training children), so it ties
    itself to `serve`. `settings`: serve's whole Settings (`Settings.to_child`); `kinds`: the job kinds it
    runs besides training (functions, which travel by name)."""
    tie_to_parent(parent_pid)
    from tuneloop.config.settings import Settings
    from tuneloop.worker.runner import Worker

    Worker(Settings.from_child(settings), worker_id, kinds).run()


def run_kind(parent_pid: int, fn: Any, job_id: str, log_path: str, settings: dict) -> None:
    """A worker's child for a job of another kind: `fn(job_id, settings)`, stderr to `log_path`. An exception
    becomes the job's error (written by the child, which has the database), then the child exits non-zero."""
    tie_to_parent(parent_pid)
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 2)
    faulthandler.enable()
    from tuneloop.config.settings import Settings

    config = Settings.from_child(settings)
    print(f"{job_id} child {os.getpid()}: {config.described()}", file=sys.stderr, flush=True)
    try:
        fn(job_id, config)
    except Exception as e:
        from tuneloop.store import repo
        from tuneloop.store.db import make_engine, sessions

        message = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
        with sessions(make_engine(config.db_url))() as session:
            job = repo.get_job(session, job_id=job_id)
            if job is not None:
                job.error = {"code": getattr(e, "code", None) or "job_failed", "message": message, "param": None}
                session.commit()
        raise


def run_training(parent_pid: int, run_dir: str, settings: dict) -> None:
    """A worker's training child: the engine alone, knowing nothing of the store. SIGUSR1 pauses it. Any
    exception reaches events.jsonl as an error event, so the job says why it failed; stderr goes to
    the run folder's training.log, with a Python traceback if native code crashes. `settings`: its worker's whole Settings."""
    tie_to_parent(parent_pid)
    from tuneloop.models.run_folder import RunFolder

    with RunFolder(run_dir).training_log.open("a") as log:
        os.dup2(log.fileno(), 2)
    faulthandler.enable()
    from tuneloop.config.settings import Settings
    from tuneloop.models.run_folder import Error, EventLog
    from tuneloop.engine.loop import TrainingError, run_in_this_process
    import tuneloop.evals.rl  # noqa: F401 - registers grpo's reward sources (graders, reward models, functions)

    config = Settings.from_child(settings)
    print(f"training child {os.getpid()}: {config.described()}", file=sys.stderr, flush=True)
    try:
        run_in_this_process(Path(run_dir), config, pause_signal=signal.SIGUSR1)
    except TrainingError:  # the loop wrote its error event
        raise
    except Exception as e:
        EventLog(RunFolder(run_dir).events).write(Error(f"{type(e).__name__}: {e}"))
        raise
