"""A live server on 127.0.0.1 (uvicorn in a thread) with one worker (a thread; it trains in a child
process), a fresh home and SQLite database per test module, and the official openai SDK as client."""

from __future__ import annotations

import pytest

from tests.conftest import live_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from live_server(tmp_path_factory.mktemp("server-home"), with_worker=True)


@pytest.fixture(scope="module")
def server_without_worker(tmp_path_factory):
    yield from live_server(tmp_path_factory.mktemp("server-home"), with_worker=False)


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server["url"], api_key=server["key"], max_retries=0)
