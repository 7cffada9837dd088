"""A worker killed with SIGKILL mid-run: its training child dies with it, the job's heartbeat goes
stale, another worker requeues it and resumes from the last checkpoint, and the job succeeds."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from openai import OpenAI

from tests.api.test_openai_flow import jsonl, wait_for
from tests.conftest import chat_rows


def start_worker(home: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "TUNELOOP_HOME": str(home), "TUNELOOP_OFFLINE": "1", "TUNELOOP_STALE_SECONDS": "3"}
    return subprocess.Popen([sys.executable, "-c", "from tuneloop.cli.main import app; app()", "worker", "--id", name],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkilled_worker_job_resumes_from_its_checkpoint(server_without_worker, tiny_chat_model):
    server = server_without_worker
    client = OpenAI(base_url=server["url"], api_key=server["key"], max_retries=0)
    home = server["settings"].home
    uploaded = client.files.create(file=("r.jsonl", io.BytesIO(jsonl(chat_rows(12)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=uploaded.id, method={
        "type": "supervised", "supervised": {"hyperparameters": {"max_steps": 400, "batch_size": 2,
                                                                 "checkpoint_steps": 20}}})
    first = start_worker(home, "A")
    try:
        deadline = time.time() + 90
        while not client.fine_tuning.jobs.checkpoints.list(job.id).data:
            assert time.time() < deadline, first.stderr.read1().decode() if first.poll() is not None else "no checkpoint"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = time.time()
    events_file = home / "runs" / job.id / "events.jsonl"
    time.sleep(1.5)
    size = events_file.stat().st_size
    time.sleep(1.5)
    assert events_file.stat().st_size == size  # the orphaned training child died with its worker
    steps_before = [json.loads(line)["step"] for line in events_file.read_text().splitlines()
                    if json.loads(line)["type"] == "checkpoint"]
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # nobody knows yet

    second = start_worker(home, "B")
    try:
        done = wait_for(client, job.id, {"succeeded", "failed"}, timeout=180)
    finally:
        second.terminate()
        second.wait(10)
    assert done.status == "succeeded", done.error
    assert time.time() - killed_at > 3  # it waited for the heartbeat to go stale
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
    assert any("stopped answering" in m for m in messages)
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    resumed = max(i for i, e in enumerate(events) if e["type"] == "resumed")
    # the newest checkpoint on disk (the kill may land between saving one and logging it), never step 0
    step = events[resumed]["step"]
    assert step >= steps_before[-1] > 0 and (step % 20 == 0 or step % 6 == 0)  # every 20 steps, and each epoch (6)
    assert f"Resumed from the checkpoint at step {step}" in messages
    after = [e["step"] for e in events[resumed:] if e["type"] == "step"]
    assert after == list(range(step + 1, 401))  # every step after the checkpoint, once, in order
