"""Repositories: keyword-only functions over a session. Callers commit."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuneloop.store.tables import ApiKey, Checkpoint, File, Job, JobEvent


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# ---------------------------------------------------------------- keys
def create_key(session: Session, *, name: str) -> tuple[ApiKey, str]:
    """A new key; the secret is returned once and only its hash is stored."""
    secret = "tl-" + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key"), name=name, prefix=secret[:10], hash=key_hash(secret), created_at=time.time())
    session.add(key)
    return key, secret


def find_active_key(session: Session, *, secret: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.hash == key_hash(secret), ApiKey.revoked_at.is_(None)))


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(session: Session, *, key_id: str) -> bool:
    result = session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                             .values(revoked_at=time.time()))
    return result.rowcount == 1


# ---------------------------------------------------------------- files
def add_file(session: Session, *, filename: str, purpose: str, size: int, sha256: str) -> File:
    file = File(id=new_id("file"), filename=filename, purpose=purpose, bytes=size, sha256=sha256,
                created_at=time.time(), status="processed")
    session.add(file)
    return file


def get_file(session: Session, *, file_id: str) -> File | None:
    return session.get(File, file_id)


def list_files(session: Session, *, purpose: str | None, after: str | None, limit: int, newest_first: bool
               ) -> tuple[list[File], bool]:
    query = select(File)
    if purpose:
        query = query.where(File.purpose == purpose)
    return page(session, query, File, after, limit, newest_first)


def jobs_using_file(session: Session, *, file_id: str) -> list[Job]:
    return list(session.scalars(select(Job).where((Job.training_file == file_id) | (Job.validation_file == file_id))))


def files_with(session: Session, *, sha256: str) -> list[File]:
    return list(session.scalars(select(File).where(File.sha256 == sha256)))


# ---------------------------------------------------------------- jobs
def get_job(session: Session, *, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def job_for_model(session: Session, *, model: str) -> Job | None:
    return session.scalar(select(Job).where(Job.fine_tuned_model == model))


def list_jobs(session: Session, *, after: str | None, limit: int, kind: str | None = "train"
              ) -> tuple[list[Job], bool]:
    """Newest first; `kind`: only jobs of that kind (None: every kind)."""
    query = select(Job) if kind is None else select(Job).where(Job.kind == kind)
    return page(session, query, Job, after, limit, True)


def claim_next_job(session: Session, *, worker_id: str, kinds: set[str] | None = None) -> Job | None:
    """Atomically take the oldest queued job (of one of `kinds`, when given): the conditional UPDATE succeeds for
    one worker only."""
    queued = select(Job.id).where(Job.status == "queued")
    if kinds is not None:
        queued = queued.where(Job.kind.in_(sorted(kinds)))
    for job_id in session.scalars(queued.order_by(Job.created_at).limit(5)):
        now = time.time()
        claimed = session.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                                  .values(status="running", worker_id=worker_id, heartbeat_at=now,
                                          started_at=now))
        session.commit()
        if claimed.rowcount == 1:
            return session.get(Job, job_id)
    return None


def claim_validation(session: Session, *, worker_id: str) -> Job | None:
    """Atomically take the oldest job whose files nobody is checking yet (status validating_files)."""
    pending = select(Job.id).where(Job.status == "validating_files", Job.worker_id.is_(None))
    for job_id in session.scalars(pending.order_by(Job.created_at).limit(5)):
        claimed = session.execute(update(Job).where(Job.id == job_id, Job.status == "validating_files",
                                                    Job.worker_id.is_(None))
                                  .values(worker_id=worker_id, heartbeat_at=time.time()))
        session.commit()
        if claimed.rowcount == 1:
            return session.get(Job, job_id)
    return None


def requeue_stale_jobs(session: Session, *, older_than: float) -> list[str]:
    """Running jobs whose worker stopped beating since `older_than`: back to the queue (atomically, once).
    A validation whose worker stopped is handed back to any worker the same way (not reported)."""
    session.execute(update(Job).where(Job.status == "validating_files", Job.worker_id.is_not(None),
                                      Job.heartbeat_at < older_than).values(worker_id=None))
    session.commit()
    requeued = []
    for job_id in session.scalars(select(Job.id).where(Job.status == "running", Job.heartbeat_at < older_than)):
        done = session.execute(update(Job).where(Job.id == job_id, Job.status == "running",
                                                 Job.heartbeat_at < older_than)
                               .values(status="queued", worker_id=None))
        session.commit()
        if done.rowcount == 1:
            requeued.append(job_id)
    return requeued


def add_event(session: Session, *, job_id: str, message: str, level: str = "info", kind: str = "message",
              data: dict[str, Any] | None = None) -> JobEvent:
    event = JobEvent(job_id=job_id, message=message, level=level, type=kind, data=data, created_at=time.time())
    session.add(event)
    return event


def list_events(session: Session, *, job_id: str, after: str | None, limit: int) -> tuple[list[JobEvent], bool]:
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after:
        query = query.where(JobEvent.seq < int(after.removeprefix("ftevent-")))
    rows = list(session.scalars(query.order_by(JobEvent.seq.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def events_since(session: Session, *, job_id: str, since: int, limit: int) -> list[JobEvent]:
    """A job's events after sequence number `since`, oldest first (what a follower has not seen yet)."""
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > since)
    return list(session.scalars(query.order_by(JobEvent.seq).limit(limit)))


def add_checkpoint(session: Session, *, job_id: str, step: int, path: str, metrics: dict[str, Any]) -> Checkpoint:
    checkpoint = Checkpoint(id=new_id("ftckpt"), job_id=job_id, step=step, path=path, metrics=metrics,
                            created_at=time.time())
    session.add(checkpoint)
    return checkpoint


def drop_checkpoints(session: Session, *, job_id: str, step: int) -> None:
    for checkpoint in session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)):
        session.delete(checkpoint)


def list_checkpoints(session: Session, *, job_id: str, after: str | None, limit: int) -> tuple[list[Checkpoint], bool]:
    return page(session, select(Checkpoint).where(Checkpoint.job_id == job_id), Checkpoint, after, limit, True)


def page(session: Session, query: Any, table: Any, after: str | None, limit: int, newest_first: bool
          ) -> tuple[list[Any], bool]:
    """One page in creation order (newest first by default), starting after the row `after`."""
    order = (table.created_at.desc(), table.id.desc()) if newest_first else (table.created_at, table.id)
    if after:
        anchor = session.get(table, after)
        if anchor is not None:
            query = query.where(table.created_at < anchor.created_at if newest_first
                                else table.created_at > anchor.created_at)
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
