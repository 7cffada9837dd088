"""One worker: claim a job, train it in a child process, follow its events.jsonl into the store,
beat a heartbeat, and stop the child within seconds when the job is cancelled."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from tuneloop.config.recipe import dump_recipe
from tuneloop.config.settings import Settings
from tuneloop.engine.checkpoint import list_checkpoints
from tuneloop.models.run_folder import (Checkpoint, Done, Error, Evaluation, Event, Paused, Resumed, RunFolder, Start,
                                        Step, parse_lines)
from tuneloop.store import repo
from tuneloop.store.db import make_engine, sessions, upgrade
from tuneloop.store.tables import Job
from tuneloop.worker.jobs import fine_tuned_name, job_recipe, store_results, validate_files
from tuneloop.worker.kinds import KINDS, KindFn
from tuneloop.worker.lifeline import run_kind, run_training

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 2.0
LOG_TAIL_LINES, LOG_TAIL_BYTES = 20, 4000
"""How much of a training child's stderr a job's error message quotes."""


class EventFollower:
    """Reads new lines of a run's events.jsonl and turns them into job events and checkpoints."""

    def __init__(self, path: Path, offset: int = 0):
        self.path, self.offset, self.last_error, self.paused_at = path, offset, None, None

    def poll(self, session: Session, job: Job) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for event in parse_lines(complete.decode()):
            self._event(session, job, event)
        job.events_offset = self.offset
        session.commit()

    def _event(self, session: Session, job: Job, e: Event) -> None:
        if isinstance(e, Start):
            repo.add_event(session, job_id=job.id, message=f"Training started: {e.total_steps} steps, "
                           f"{e.train_examples} examples, {e.trainable_parameters} trainable parameters")
        elif isinstance(e, Step):
            job.progress = {"done": e.step, "total": e.total_steps, "unit": "steps"}
            data = {"step": e.step, "total_steps": e.total_steps, "train_loss": e.loss,
                    "learning_rate": e.lr, "tokens_per_second": e.tokens_per_second,
                    **{k: v for k, v in e.extra.items() if isinstance(v, (int, float))}}  # a method's own (DPO rewards)
            repo.add_event(session, job_id=job.id, kind="metrics", data=data,
                           message=f"Step {e.step}/{e.total_steps}: training loss={e.loss:.4f}")
        elif isinstance(e, Evaluation) and e.metrics:
            shown = {f"valid_{k.removeprefix('eval_')}": v for k, v in e.metrics.items()}
            first = "valid_loss" if "valid_loss" in shown else next(iter(shown))
            repo.add_event(session, job_id=job.id, kind="metrics", data={"step": e.step, **shown},
                           message=f"Step {e.step}: validation {first.removeprefix('valid_').replace('_', ' ')}="
                                   f"{shown[first]:.4f}")
        elif isinstance(e, Checkpoint):
            model = e.model
            repo.drop_checkpoints(session, job_id=job.id, step=e.step)  # a pause may re-save a step
            if model.exists():
                repo.add_checkpoint(session, job_id=job.id, step=e.step, path=str(model), metrics={})
            for kept in repo.list_checkpoints(session, job_id=job.id, after=None, limit=1000)[0]:
                if not Path(kept.path).exists():  # the engine keeps the last few; forget the pruned ones
                    session.delete(kept)
            repo.add_event(session, job_id=job.id, message=f"Checkpoint saved at step {e.step}")
        elif isinstance(e, Error):
            self.last_error = e.message
            repo.add_event(session, job_id=job.id, level="error", message=e.message)
        elif isinstance(e, Resumed):
            repo.add_event(session, job_id=job.id, message=f"Resumed from the checkpoint at step {e.step}")
        elif isinstance(e, Paused):
            self.paused_at = e.step
        elif isinstance(e, Done):
            repo.add_event(session, job_id=job.id, message=f"Training finished: {e.step} steps in {e.seconds}s")


class Worker:
    def __init__(self, settings: Settings, worker_id: str | None = None, kinds: dict[str, KindFn] | None = None,
                 only: set[str] | None = None):
        """kinds: the job kinds it runs besides `train` (default: those registered in this process); only: claim
        jobs of these kinds alone (`tuneloop search` runs its trials without taking other queued work)."""
        self.settings = settings
        self.kinds = dict(KINDS if kinds is None else kinds)
        self.only = only
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.stale_seconds = settings.stale_seconds
        engine = make_engine(settings.db_url)
        upgrade(engine)
        self.sessions: sessionmaker[Session] = sessions(engine)

    def run(self, stop: Any = None, once: bool = False) -> None:
        """Claim and run jobs until `stop` (a threading/multiprocessing Event) is set."""
        while stop is None or not stop.is_set():
            with self.sessions() as session:
                for job_id in repo.requeue_stale_jobs(session, older_than=time.time() - self.stale_seconds):
                    repo.add_event(session, job_id=job_id, level="warn", message=f"The worker running this job "
                                   f"stopped answering for {self.stale_seconds:.0f}s; the job is queued again and "
                                   "resumes where it stopped (training: from its last checkpoint)")
                    session.commit()
            if self.validate_next():
                continue
            with self.sessions() as session:
                job = repo.claim_next_job(session, worker_id=self.worker_id, kinds=self.only)
            if job is None:
                if once:
                    return
                time.sleep(POLL_SECONDS)
                continue
            self.run_job(job.id)
            if once:
                return

    def validate_next(self) -> bool:
        """Check the files of one job that waits for it (validating_files -> queued or failed); False: none waits."""
        with self.sessions() as session:
            job = repo.claim_validation(session, worker_id=self.worker_id)
            if job is None:
                return False
            job_id, last = job.id, [time.monotonic()]

            def beat() -> None:  # a big file takes a while: keep the claim alive, at most once a heartbeat
                if time.monotonic() - last[0] >= HEARTBEAT_SECONDS:
                    last[0] = time.monotonic()
                    with self.sessions() as other:
                        other.execute(update(Job).where(Job.id == job_id, Job.worker_id == self.worker_id)
                                      .values(heartbeat_at=time.time()))
                        other.commit()

            validate_files(session, self.settings, job_id, beat)
        return True

    def run_job(self, job_id: str) -> None:
        with self.sessions() as session:
            job = repo.get_job(session, job_id=job_id)
            assert job is not None
            if job.kind != "train":
                return self.run_other(job)
            run_dir = self.settings.runs_dir / job.id
            folder = RunFolder(run_dir)
            resume = bool(list_checkpoints(run_dir))
            if not folder.is_run():
                run_dir.mkdir(parents=True, exist_ok=True)
                folder.recipe.write_text(dump_recipe(job_recipe(session, self.settings, job)))
            job.run_dir = str(run_dir)
            repo.add_event(session, job_id=job.id, message=f"Worker {self.worker_id} "
                           f"{'resumed the job from its last checkpoint' if resume else 'started the job'}")
            session.commit()
            follower = EventFollower(folder.events, job.events_offset)
        log = folder.training_log
        log_start = log.stat().st_size if log.exists() else 0  # earlier attempts' lines are not this one's
        child = multiprocessing.get_context("spawn").Process(target=run_training, daemon=True, args=(
            os.getpid(), str(run_dir), self.settings.to_child()))
        child.start()
        last_beat, cancelled, pausing = 0.0, False, False
        while child.is_alive():
            child.join(POLL_SECONDS)
            with self.sessions() as session:
                job = repo.get_job(session, job_id=job_id)
                follower.poll(session, job)
                if time.time() - last_beat > HEARTBEAT_SECONDS:
                    job.heartbeat_at, last_beat = time.time(), time.time()
                    session.commit()
                if job.cancel_requested and child.is_alive():
                    child.terminate()
                    child.join(10)
                    cancelled = True
                elif job.pause_requested and not pausing and child.is_alive():
                    os.kill(child.pid, signal.SIGUSR1)  # the loop checkpoints after this step and stops
                    pausing = True
        self._finish(job_id, run_dir, child.exitcode, follower, cancelled, log_start)

    def _finish(self, job_id: str, run_dir: Path, exitcode: int | None, follower: EventFollower,
                cancelled: bool, log_start: int) -> None:
        with self.sessions() as session:
            job = repo.get_job(session, job_id=job_id)
            follower.poll(session, job)
            job.pause_requested = False
            if cancelled:
                job.status, job.finished_at = "cancelled", time.time()
                repo.add_event(session, job_id=job.id, message="Job cancelled")
            elif exitcode == 0 and follower.paused_at is not None:
                job.status = "paused"
                repo.add_event(session, job_id=job.id, message=f"Job paused at step {follower.paused_at} "
                               "(a checkpoint was saved; resume continues from it)")
            elif exitcode == 0:
                job.status, job.fine_tuned_model, job.finished_at = "succeeded", fine_tuned_name(job), time.time()
                job.trained_tokens = _trained_tokens(run_dir)
                job.result_files = [store_results(session, self.settings, job)]
                repo.add_event(session, job_id=job.id, message=f"The job has successfully completed: "
                               f"{job.fine_tuned_model}")
            else:
                message = follower.last_error or _unexplained(exitcode, RunFolder(run_dir).training_log, log_start)
                job.status, job.finished_at = "failed", time.time()
                job.error = {"code": "training_failed", "message": message, "param": None}
                repo.add_event(session, job_id=job.id, level="error", message=f"Job failed: {message}")
            session.commit()


    def run_other(self, job: Job) -> None:
        """A job of a registered kind, in a child process; its progress and result it writes itself."""
        fn = self.kinds.get(job.kind)
        if fn is None:
            with self.sessions() as session:
                job = repo.get_job(session, job_id=job.id)
                job.status, job.finished_at = "failed", time.time()
                job.error = {"code": "unknown_kind", "message": f"this worker does not run jobs of kind "
                             f"'{job.kind}' (it runs: train, {', '.join(sorted(self.kinds))})", "param": None}
                session.commit()
            return
        log = self.settings.home / "jobs" / f"{job.id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log_start = log.stat().st_size if log.exists() else 0
        with self.sessions() as session:
            repo.add_event(session, job_id=job.id, message=f"Worker {self.worker_id} started the job")
            session.commit()
        child = multiprocessing.get_context("spawn").Process(target=run_kind, daemon=True, args=(
            os.getpid(), fn, job.id, str(log), self.settings.to_child()))
        child.start()
        last_beat, cancelled = 0.0, False
        while child.is_alive():
            child.join(POLL_SECONDS)
            with self.sessions() as session:
                current = repo.get_job(session, job_id=job.id)
                if time.time() - last_beat > HEARTBEAT_SECONDS:
                    current.heartbeat_at, last_beat = time.time(), time.time()
                    session.commit()
                if current.cancel_requested and child.is_alive():
                    child.terminate()
                    child.join(10)
                    cancelled = True
        with self.sessions() as session:
            current = repo.get_job(session, job_id=job.id)
            session.refresh(current)
            current.finished_at = time.time()
            if cancelled:
                current.status = "cancelled"
                repo.add_event(session, job_id=job.id, message="Job cancelled")
            elif child.exitcode == 0:
                current.status = "succeeded"
                repo.add_event(session, job_id=job.id, message="The job has successfully completed")
            else:
                if not current.error:
                    current.error = {"code": "job_failed", "message": _unexplained(child.exitcode, log, log_start),
                                     "param": None}
                current.status = "failed"
                repo.add_event(session, job_id=job.id, level="error", message=f"Job failed: {current.error['message']}")
            session.commit()


def _unexplained(exitcode: int | None, log: Path, start: int) -> str:
    """A child that died without an error event (a signal, a crash in native code, the kernel's out-of-memory
    killer): how it ended and the last lines it wrote to stderr."""
    names = {-s.value: s.name for s in signal.Signals}
    how = f"killed by {names[exitcode]}" if exitcode in names else f"exit code {exitcode}"
    text = ""
    if log.exists():
        with log.open("rb") as f:
            f.seek(max(start, log.stat().st_size - LOG_TAIL_BYTES))
            text = f.read().decode(errors="replace")
    tail = "\n".join(text.strip().splitlines()[-LOG_TAIL_LINES:])
    return f"training stopped unexpectedly ({how})" + (f"; the end of its {log.name}:\n{tail}" if tail else "")


def _trained_tokens(run_dir: Path) -> int:
    done = [e for e in RunFolder(run_dir).read_events() if isinstance(e, Done)]
    return int(done[-1].tokens_per_second * done[-1].seconds) if done else 0
