"""A re-predict is a job on the worker queue, so a crash loses nothing: `tuneloop serve` and its worker are
killed with SIGKILL in the middle of one, started again, and the job finishes. No record gets two
predictions from the model, and the round is recorded once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from sqlalchemy import text

from tests.conftest import free_port, write_jsonl
from tuneloop.config.settings import Settings
from tuneloop.services.review import projects
from tuneloop.store import repo
from tuneloop.store.db import make_engine, sessions, upgrade


def start_serve(home, port: int, allowed) -> subprocess.Popen:
    env = {**os.environ, "TUNELOOP_HOME": str(home), "TUNELOOP_OFFLINE": "1", "TUNELOOP_STALE_SECONDS": "3",
           "TUNELOOP_ALLOWED_PATHS": str(allowed)}
    return subprocess.Popen([sys.executable, "-c", "from tuneloop.cli.main import app; app()", "serve", "--port",
                             str(port), "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # its own group: kill -9 takes all


def wait_ready(base: str, deadline: float) -> None:
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, "serve did not start"
        time.sleep(0.2)


def test_a_repredict_killed_with_its_server_finishes_after_a_restart(tmp_path, tiny_chat_model):
    home = tmp_path / "home"
    settings = Settings(home=home, offline=True)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    labels = ["billing", "shipping", "technical"]
    rows = [{"text": f"message {i} about the {labels[i % 3]} of order {i * 13}", "label": labels[i % 3]}
            for i in range(300)]
    with sessions(engine)() as session:
        projects.create_project(session, settings, name="big", task="classification",
                                data=str(write_jsonl(tmp_path / "big.jsonl", rows)), holdout=0.1)
        _, key = repo.create_key(session, name="tests")
        session.commit()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    serve = start_serve(home, port, tiny_chat_model.parent)
    try:
        wait_ready(base, time.time() + 60)
        job = api.post("/api/projects/big/repredict", json={"model": str(tiny_chat_model)}).json()
        deadline = time.time() + 120
        while not 0 < (progress := api.get(f"/api/jobs/{job['id']}").json()["progress"])["done"] < 200:
            assert time.time() < deadline and progress["done"] < 200, progress
            time.sleep(0.05)
        os.killpg(serve.pid, signal.SIGKILL)  # the server, its worker and the worker's child, at once
        serve.wait(10)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
    with engine.connect() as connection:
        predicted = connection.execute(text("select count(*) from predictions")).scalar()
        status = connection.execute(text("select status from jobs where id = :id"), {"id": job["id"]}).scalar()
    assert 0 < predicted < 300 and status == "running"  # stopped half-way; nobody knows yet

    serve = start_serve(home, port, tiny_chat_model.parent)
    try:
        wait_ready(base, time.time() + 60)
        deadline = time.time() + 180
        while not (current := api.get(f"/api/jobs/{job['id']}").json())["finished"]:
            assert time.time() < deadline, current
            time.sleep(0.3)
        assert current["status"] == "succeeded", current["error"]
        assert current["result"]["round"] == 1
        events = [e["message"] for e in api.get(f"/api/jobs/{job['id']}/events").json()["data"]]
        assert any("stopped answering" in m for m in events)  # requeued once its heartbeat went stale
    finally:
        serve.terminate()
        serve.wait(30)
    with engine.connect() as connection:
        twice = connection.execute(text("select record_id from predictions group by record_id, model "
                                        "having count(*) > 1")).all()
        predicted = connection.execute(text("select count(distinct record_id) from predictions")).scalar()
        rounds = connection.execute(text("select job_id from rounds")).all()
    assert twice == []
    assert predicted == 300  # every open and held-out record (none is reviewed yet)
    assert rounds == [(job["id"],)]
    engine.dispose()
