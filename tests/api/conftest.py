"""A live server on 127.0.0.1 (uvicorn in a thread) with one worker (a thread; it trains in a child
process), a fresh home and SQLite database per test module, and the official openai SDK as client."""

from __future__ import annotations

import socket
import threading
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from live_server(tmp_path_factory.mktemp("server-home"), with_worker=True)


@pytest.fixture(scope="module")
def server_without_worker(tmp_path_factory):
    yield from live_server(tmp_path_factory.mktemp("server-home"), with_worker=False)


def live_server(home, with_worker: bool, database_url: str | None = None):
    import uvicorn

    from tuneloop.api.app import create_app
    from tuneloop.config.settings import Settings
    from tuneloop.store import repo
    from tuneloop.worker.runner import Worker

    settings = Settings(home=home, offline=True, database_url=database_url)
    app = create_app(settings)
    with app.state.sessions() as session:
        _, key = repo.create_key(session, name="tests")
        session.commit()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    stop = threading.Event()
    worker = threading.Thread(target=Worker(settings, "test-worker").run, kwargs={"stop": stop}, daemon=True)
    if with_worker:
        worker.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}/v1", "key": key, "settings": settings, "app": app}
    stop.set()
    server.should_exit = True
    thread.join(10)
    if with_worker:
        worker.join(30)


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server["url"], api_key=server["key"], max_retries=0)
