"""The store on a real PostgreSQL server: two workers never claim the same job; a job runs end to end."""

from __future__ import annotations

import threading
import time

from tuneloop.store import repo
from tuneloop.store.db import make_engine, sessions, upgrade
from tuneloop.store.tables import Job


def test_two_workers_never_claim_the_same_job(postgres_url):
    engine = make_engine(postgres_url)
    upgrade(engine)
    factory = sessions(engine)
    with factory() as session:
        file = repo.add_file(session, filename="t.jsonl", purpose="fine-tune", size=1, sha256="0" * 64)
        session.flush()
        for i in range(40):
            session.add(Job(id=f"ftjob-claim-{i:02d}", model="m", training_file=file.id, seed=0, method={},
                            hyperparameters={}, extra={}, status="queued", result_files=[], created_at=time.time(),
                            cancel_requested=False))
        session.commit()
    claimed: dict[str, list[str]] = {"A": [], "B": []}
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        start.wait()
        with factory() as session:
            while (job := repo.claim_next_job(session, worker_id=name)) is not None:
                claimed[name].append(job.id)

    threads = [threading.Thread(target=worker, args=(name,)) for name in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = claimed["A"] + claimed["B"]
    assert sorted(everything) == [f"ftjob-claim-{i:02d}" for i in range(40)]  # each exactly once
    assert claimed["A"] and claimed["B"]  # both really competed
    with factory() as session:
        owners = {job.id: job.worker_id for job in session.query(Job).filter(Job.id.like("ftjob-claim-%"))}
    assert all(owners[j] == name for name, jobs in claimed.items() for j in jobs)


def test_a_job_runs_end_to_end_on_postgres(postgres_url, tmp_path, tiny_chat_model):
    import io
    import json

    from tests.conftest import live_server
    from tests.api.test_openai_flow import wait_for
    from tests.conftest import chat_rows
    from tuneloop.config.settings import Settings
    from tuneloop.worker.runner import Worker

    from openai import OpenAI

    servers = live_server(tmp_path, with_worker=False, database_url=postgres_url)
    server = next(servers)
    stop = threading.Event()
    thread = threading.Thread(target=Worker(Settings(home=tmp_path, database_url=postgres_url, offline=True),
                                            "pg-worker").run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        client = OpenAI(base_url=server["url"], api_key=server["key"], max_retries=0)
        data = "".join(json.dumps(r) + "\n" for r in chat_rows(12)).encode()
        file = client.files.create(file=("t.jsonl", io.BytesIO(data)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=file.id,
                                             method={"type": "supervised", "supervised": {"hyperparameters": {
                                                 "n_epochs": 1, "batch_size": 4}}})
        done = wait_for(client, job.id, {"succeeded", "failed"}, timeout=120)
        assert done.status == "succeeded", done.error
        assert [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=50).data
                if e.type == "metrics"] == [3, 2, 1]
    finally:
        stop.set()
        thread.join(30)
        next(servers, None)
