"""The processes that `tuneloop serve` and a worker start never outlive them, whenever they die, and a
training child that fails tells its job why."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from openai import OpenAI

from tests.api.test_openai_flow import jsonl, wait_for
from tests.conftest import chat_rows, free_port

MARKER = "TUNELOOP_TEST_PROCESS_MARKER"
TUNELOOP = Path(sys.executable).with_name("tuneloop")  # the console script users run (spawn re-imports it)


def marked(marker: str) -> dict[int, bytes]:
    """Live processes (pid: command line) with this marker in their environment, whoever their parent is now."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"{MARKER}={marker}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes()
        except OSError:  # ended meanwhile
            pass
    return found


def start(home: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`tuneloop <args>` with a marker of its own; its output goes to <home>.log."""
    marker = uuid.uuid4().hex
    env = {**os.environ, "TUNELOOP_HOME": str(home), "TUNELOOP_OFFLINE": "1", MARKER: marker}
    with home.with_name(f"{home.name}.log").open("wb") as log:
        return subprocess.Popen([str(TUNELOOP), *args], env=env, stdout=log, stderr=subprocess.STDOUT), marker


def spawned(parent: int) -> list[int]:
    """The multiprocessing children of `parent` (not its resource tracker)."""
    try:
        pids = [pid for task in Path(f"/proc/{parent}/task").glob("*/children") for pid in task.read_text().split()]
        return [int(pid) for pid in pids if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    except OSError:  # one ended meanwhile
        return []


def open_files(pid: int) -> set[str]:
    with contextlib.suppress(OSError):
        return {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    return set()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_until(condition, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def assert_all_end(process: subprocess.Popen, marker: str, sig: int) -> None:
    """Send `sig` to `process`: every process with its marker must be gone within seconds. Any left are
    killed, so a failure leaks nothing."""
    try:
        assert process.pid in marked(marker), f"it ended by itself ({process.poll()}); see its log"
        process.send_signal(sig)
        process.wait(30)
        deadline = time.time() + 15
        while marked(marker) and time.time() < deadline:
            time.sleep(0.2)
        assert not marked(marker), f"left running: {marked(marker)}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in marked(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("moment", ["after 0.5s", "worker spawned", "listening", "worker polling"])
def test_serve_killed_during_start_up_leaves_no_process(tmp_path, moment):
    port = free_port()
    home = tmp_path / "home"
    serve, marker = start(home, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
    try:
        if moment == "after 0.5s":  # no worker yet
            time.sleep(0.5)
        elif moment == "worker spawned":  # it is still importing
            wait_until(lambda: spawned(serve.pid))
        elif moment == "listening":
            wait_until(lambda: listening(port))
        else:  # the worker has the database open
            wait_until(lambda: any(str(home / "tuneloop.db") in open_files(pid) for pid in spawned(serve.pid)))
    finally:
        assert_all_end(serve, marker, signal.SIGKILL)


def test_serve_stopped_with_sigterm_leaves_no_process(tmp_path):
    port = free_port()
    serve, marker = start(tmp_path / "home", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
    try:
        wait_until(lambda: listening(port))
    finally:
        assert_all_end(serve, marker, signal.SIGTERM)


def test_training_child_dies_with_its_worker_killed_while_it_starts(server_without_worker, tiny_chat_model):
    server = server_without_worker
    client = OpenAI(base_url=server["url"], api_key=server["key"], max_retries=0)
    uploaded = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(chat_rows(12)))), purpose="fine-tune")
    client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=uploaded.id, method={
        "type": "supervised", "supervised": {"hyperparameters": {"max_steps": 100000, "batch_size": 2}}})
    worker, marker = start(server["settings"].home, "worker", "--id", "lifecycle")
    try:
        wait_until(lambda: spawned(worker.pid))  # the training child, still importing the engine
    finally:
        assert_all_end(worker, marker, signal.SIGKILL)


def test_a_training_child_that_raises_gives_the_job_its_reason(client, tiny_chat_model, tmp_path_factory):
    model = tmp_path_factory.mktemp("weightless") / "tiny"
    shutil.copytree(tiny_chat_model, model)
    (model / "model.safetensors").unlink()  # still a chat model folder to the API; the engine cannot load it
    uploaded = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(chat_rows(12)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=str(model), training_file=uploaded.id, method={
        "type": "supervised", "supervised": {"hyperparameters": {"max_steps": 2, "batch_size": 4}}})
    failed = wait_for(client, job.id, {"succeeded", "failed"}, timeout=120)
    assert failed.status == "failed"
    assert failed.error.message.startswith("OSError: ") and "model.safetensors" in failed.error.message


def test_a_training_child_killed_by_a_signal_names_it(client, server, tiny_chat_model):
    uploaded = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(chat_rows(12)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=uploaded.id, method={
        "type": "supervised", "supervised": {"hyperparameters": {"max_steps": 100000, "batch_size": 2}}})
    log = str(server["settings"].runs_dir / job.id / "training.log")
    children = lambda: [pid for pid in spawned(os.getpid()) if log in open_files(pid)]  # noqa: E731 - its stderr
    wait_until(lambda: client.fine_tuning.jobs.list_events(job.id).data[0].type == "metrics")  # it trains
    [child] = children()
    os.kill(child, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    failed = wait_for(client, job.id, {"succeeded", "failed"}, timeout=60)
    assert failed.status == "failed"
    assert failed.error.message.startswith("training stopped unexpectedly (killed by SIGKILL)")
