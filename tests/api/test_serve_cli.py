"""`tuneloop serve` as a user starts it: it prints a key once, and its own worker process trains jobs with the
settings serve was given."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

from openai import OpenAI

from tests.conftest import free_port
from tests.api.test_openai_flow import jsonl, wait_for
from tests.conftest import chat_rows


def test_serve_prints_a_key_and_its_worker_trains(tmp_path, tiny_chat_model):
    port = free_port()
    env = {**os.environ, "TUNELOOP_HOME": str(tmp_path / "home"), "TUNELOOP_OFFLINE": "1", "COLUMNS": "300",
           "TUNELOOP_ALLOWED_PATHS": str(tiny_chat_model.parent),  # an admin lets clients name the model folder
           "TUNELOOP_STALE_SECONDS": "17.5"}
    serve = subprocess.Popen([sys.executable, "-c", "from tuneloop.cli.main import app; app()", "serve", "--port",
                              str(port), "--workers", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        output, key = "", None
        deadline = time.time() + 60
        while key is None and time.time() < deadline:
            output += serve.stdout.readline()
            key = next(iter(re.findall(r"tl-[A-Za-z0-9_-]{20,}", output)), None)
        assert key, output
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        while True:
            try:
                client.models.list()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                assert time.time() < deadline
                time.sleep(0.2)
        file = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(chat_rows(12)))), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=file.id, method={
            "type": "supervised", "supervised": {"hyperparameters": {"max_steps": 2, "batch_size": 4}}})
        done = wait_for(client, job.id, {"succeeded", "failed"}, timeout=120)
        assert done.status == "succeeded", done.error
        child = (tmp_path / "home" / "runs" / job.id / "training.log").read_text()  # serve -> worker -> child
        assert "stale_seconds=17.5" in child and f"allowed_paths=['{tiny_chat_model.parent}']" in child, child
    finally:
        serve.terminate()
        serve.wait(30)
    assert serve.returncode is not None
