"""One worker: claim a job, train it in a child process, follow its events.jsonl into the store,
beat a heartbeat, and stop the child within seconds when the job is cancelled."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tuneloop.config.recipe import dump_recipe, load_recipe
from tuneloop.config.settings import Settings
from tuneloop.engine.checkpoint import list_checkpoints
from tuneloop.worker.jobs import build_recipe, fine_tuned_name, store_results
from tuneloop.store import repo
from tuneloop.store.db import make_engine, sessions, upgrade
from tuneloop.store.tables import Job

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 2.0


def _train_child(run_dir: str, home: str, resume: bool) -> None:
    """The child process: the engine alone, knowing nothing of the store."""
    from tuneloop.config.settings import Settings
    from tuneloop.engine.loop import resume as resume_run, train

    settings = Settings(home=Path(home), offline=True)
    if resume:
        resume_run(Path(run_dir), settings)
    else:
        train(load_recipe(Path(run_dir) / "recipe.yaml"), settings, Path(run_dir))


class EventFollower:
    """Reads new lines of a run's events.jsonl and turns them into job events and checkpoints."""

    def __init__(self, path: Path):
        self.path, self.offset, self.last_error = path, 0, None

    def poll(self, session: Session, job: Job) -> None:
        import json

        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            self._event(session, job, json.loads(line))
        session.commit()

    def _event(self, session: Session, job: Job, e: dict[str, Any]) -> None:
        kind = e["type"]
        if kind == "start":
            repo.add_event(session, job_id=job.id, message=f"Training started: {e['total_steps']} steps, "
                           f"{e['train_examples']} examples, {e['trainable_parameters']} trainable parameters")
        elif kind == "step":
            data = {"step": e["step"], "total_steps": e["total_steps"], "train_loss": e["loss"],
                    "learning_rate": e["lr"], "tokens_per_second": e["tokens_per_second"]}
            repo.add_event(session, job_id=job.id, kind="metrics", data=data,
                           message=f"Step {e['step']}/{e['total_steps']}: training loss={e['loss']:.4f}")
        elif kind == "eval":
            repo.add_event(session, job_id=job.id, kind="metrics", data={"step": e["step"], "valid_loss": e["eval_loss"]},
                           message=f"Step {e['step']}: validation loss={e['eval_loss']:.4f}")
        elif kind == "checkpoint":
            model = Path(e["path"]) / "model"
            if model.exists():
                repo.add_checkpoint(session, job_id=job.id, step=e["step"], path=str(model), metrics={})
            repo.add_event(session, job_id=job.id, message=f"Checkpoint saved at step {e['step']}")
        elif kind == "error":
            self.last_error = e["message"]
            repo.add_event(session, job_id=job.id, level="error", message=e["message"])
        elif kind == "done":
            repo.add_event(session, job_id=job.id, message=f"Training finished: {e['step']} steps in {e['seconds']}s")


class Worker:
    def __init__(self, settings: Settings, worker_id: str | None = None):
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        engine = make_engine(settings.db_url)
        upgrade(engine)
        self.sessions: sessionmaker[Session] = sessions(engine)

    def run(self, stop: Any = None, once: bool = False) -> None:
        """Claim and run jobs until `stop` (a threading/multiprocessing Event) is set."""
        while stop is None or not stop.is_set():
            with self.sessions() as session:
                job = repo.claim_next_job(session, worker_id=self.worker_id)
            if job is None:
                if once:
                    return
                time.sleep(POLL_SECONDS)
                continue
            self.run_job(job.id)
            if once:
                return

    def run_job(self, job_id: str) -> None:
        with self.sessions() as session:
            job = repo.get_job(session, job_id=job_id)
            assert job is not None
            run_dir = self.settings.runs_dir / job.id
            resume = bool(list_checkpoints(run_dir))
            if not resume:
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "recipe.yaml").write_text(dump_recipe(build_recipe(session, job, self.settings)))
            job.run_dir = str(run_dir)
            repo.add_event(session, job_id=job.id, message=f"Worker {self.worker_id} "
                           f"{'resumed the job from its last checkpoint' if resume else 'started the job'}")
            session.commit()
        child = multiprocessing.get_context("spawn").Process(
            target=_train_child, args=(str(run_dir), str(self.settings.home), resume), daemon=True)
        child.start()
        follower = EventFollower(run_dir / "events.jsonl")
        last_beat = 0.0
        cancelled = False
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
        with self.sessions() as session:
            job = repo.get_job(session, job_id=job_id)
            follower.poll(session, job)
            job.finished_at = time.time()
            if cancelled:
                job.status = "cancelled"
                repo.add_event(session, job_id=job.id, message="Job cancelled")
            elif child.exitcode == 0:
                job.status, job.fine_tuned_model = "succeeded", fine_tuned_name(job)
                job.trained_tokens = _trained_tokens(run_dir)
                job.result_files = [store_results(session, self.settings, job)]
                repo.add_event(session, job_id=job.id, message=f"The job has successfully completed: "
                               f"{job.fine_tuned_model}")
            else:
                message = follower.last_error or f"training stopped unexpectedly (exit code {child.exitcode})"
                job.status, job.error = "failed", {"code": "training_failed", "message": message, "param": None}
                repo.add_event(session, job_id=job.id, level="error", message=f"Job failed: {message}")
            session.commit()


def _trained_tokens(run_dir: Path) -> int:
    from tuneloop.engine.events import read_events

    done = [e for e in read_events(run_dir / "events.jsonl") if e["type"] == "done"]
    return int(done[-1]["tokens_per_second"] * done[-1]["seconds"]) if done else 0
