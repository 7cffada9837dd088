"""The defects an outside probe of `tuneloop serve` found (issue 14), each reproduced against a live server:
a client that leaves mid-stream, inputs that gave a 500, inputs accepted that should be refused, model ids
that probed the disks, bodies read before authentication, and the shape of every error."""

from __future__ import annotations

import io
import json
import shutil
import socket
import sys
import threading
import time
from urllib.parse import quote

import httpx
import openai
import pytest

from tests.conftest import chat_rows, live_server

MESSAGES = [{"role": "user", "content": "where is my order"}]


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
def long_context_model(tiny_chat_model, tmp_path_factory):
    """The tiny chat model with a context of 32k tokens, so an answer can take many seconds to generate."""
    folder = tmp_path_factory.mktemp("tiny-long") / "model"
    shutil.copytree(tiny_chat_model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 32768}))
    return folder


@pytest.fixture(scope="module")
def api(server_without_worker):
    return httpx.Client(base_url=server_without_worker["base"], timeout=30,
                        headers={"Authorization": f"Bearer {server_without_worker['key']}"})


@pytest.fixture(scope="module")
def sdk(server_without_worker):
    return openai.OpenAI(base_url=server_without_worker["url"], api_key=server_without_worker["key"], max_retries=0)


def assert_error(response: httpx.Response, status: int, param: str | None = "?") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param != "?":
        assert error["param"] == param, error
    return error


def generating() -> bool:
    """Whether any thread of this process (the live server runs in it) is inside transformers' generate()."""
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code.co_name == "generate" and "transformers" in frame.f_code.co_filename:
                return True
            frame = frame.f_back
    return False


# 1. A client that disconnects mid-stream


def test_a_client_that_leaves_mid_stream_stops_generation_and_frees_the_model(server_without_worker, sdk,
                                                                              long_context_model):
    host, port = server_without_worker["base"].removeprefix("http://").split(":")
    body = json.dumps({"model": str(long_context_model), "messages": MESSAGES, "max_tokens": 30000,
                       "temperature": 0, "stream": True}).encode()
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer " + server_without_worker["key"].encode() +
                    b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        received = b""
        while b'"delta": {"content"' not in received:  # the first piece of the answer
            chunk = raw.recv(4096)
            assert chunk, received  # the server closed the connection before answering
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
        assert generating(), "the answer is being generated"
    left = time.time()
    cache = server_without_worker["app"].state.models
    while generating() or cache.lock.locked():  # stops at the next token, not after 30,000, and lets go
        assert time.time() - left < 3, "generation went on, or the model stayed held, after the client left"
        time.sleep(0.05)
    time.sleep(0.5)
    answer = sdk.with_options(timeout=5).chat.completions.create(model=str(long_context_model), messages=MESSAGES,
                                                                 max_tokens=4, temperature=0)
    assert answer.usage.completion_tokens <= 4


def test_a_non_streamed_request_whose_client_leaves_stops_too(server_without_worker, long_context_model):
    seen_generating = []

    def watch() -> None:
        deadline = time.time() + 2
        while time.time() < deadline and not seen_generating:
            seen_generating.extend([True] if generating() else [])
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 2 s and closes the connection
        httpx.post(server_without_worker["url"] + "/chat/completions", timeout=2.0,
                   headers={"Authorization": f"Bearer {server_without_worker['key']}"},
                   json={"model": str(long_context_model), "messages": MESSAGES, "max_tokens": 30000,
                         "temperature": 0})
    watcher.join()
    assert seen_generating, "the answer was being generated"
    left = time.time()
    cache = server_without_worker["app"].state.models
    while generating() or cache.lock.locked():
        assert time.time() - left < 3, "generation went on, or the model stayed held, after the client left"
        time.sleep(0.05)


# 2-4. Fine-tuning jobs: no 500, and what must be refused is refused


@pytest.fixture(scope="module")
def training_file(sdk):
    return sdk.files.create(file=("t.jsonl", io.BytesIO(jsonl(chat_rows(12)))), purpose="fine-tune").id


def job_body(tiny_chat_model, training_file, **extra) -> dict:
    return {"model": str(tiny_chat_model), "training_file": training_file, **extra}


HP = "method.supervised.hyperparameters"


@pytest.mark.parametrize("extra, param", [
    ({"seed": 10**30}, "seed"),
    ({"seed": -1}, "seed"),
    ({"method": {"type": "supervised", "supervised": "x"}}, "method.supervised"),
    ({"method": {"type": ["x"]}}, "method.type"),
    ({"method": {"type": {}}}, "method.type"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": 1e308}}}},
     f"{HP}.learning_rate_multiplier"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2.5}}}}, f"{HP}.n_epochs"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"lora_rank": True}}}}, f"{HP}.lora_rank"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"warmup": 3}}}}, f"{HP}.warmup"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"metadata": {"k" * 65: "v"}}, "metadata.kkkk"),
    ({"metadata": {"note": "x" * 513}}, "metadata.note"),
    ({"metadata": {"note": "x" * 10_000_000}}, "metadata.note"),  # (20 MB is over any JSON body limit: 413)
    ({"suffix": "tickets:ckpt-step-3"}, "suffix"),
    ({"suffix": "a/b"}, "suffix"),
    ({"integrations": [{"type": "wandb"}]}, "integrations"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_job_fields_are_400_naming_the_field(api, tiny_chat_model, training_file, extra, param):
    response = api.post("/v1/fine_tuning/jobs", json=job_body(tiny_chat_model, training_file, **extra))
    error = assert_error(response, 400)
    assert (error["param"] or "").startswith(param) and error["message"].startswith(param), error
    assert len(response.content) < 2000  # a huge value is not echoed back


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN"])
@pytest.mark.parametrize("field", ["n_epochs", "learning_rate_multiplier", "batch_size"])
def test_non_finite_numbers_are_400(api, tiny_chat_model, training_file, field, value):
    text = json.dumps(job_body(tiny_chat_model, training_file)).rstrip("}") + \
        f', "method": {{"type": "supervised", "supervised": {{"hyperparameters": {{"{field}": {value}}}}}}}}}'
    response = api.post("/v1/fine_tuning/jobs", content=text, headers={"content-type": "application/json"})
    error = assert_error(response, 400, f"{HP}.{field}")
    assert "got" in error["message"]


def test_good_job_fields_are_kept(api, sdk, tiny_chat_model, training_file):
    job = sdk.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=training_file, seed=2**31 - 1,
                                      suffix="tickets.v2_a-b", metadata={"k" * 64: "v" * 512},
                                      method={"type": "supervised", "supervised": {"hyperparameters": {
                                          "n_epochs": 2, "learning_rate_multiplier": 10, "lora_rank": 8}}})
    assert job.seed == 2**31 - 1 and job.suffix == "tickets.v2_a-b" and job.metadata == {"k" * 64: "v" * 512}
    assert job.method.supervised.hyperparameters.n_epochs == 2
    assert job.method.supervised.hyperparameters.batch_size == "auto"


def test_a_model_that_cannot_be_resolved_is_400_at_creation(api, training_file):
    messages = set()
    for model in ("org/name", "/etc", "/nonexistent/model", "~", "minilm-l6"):
        response = api.post("/v1/fine_tuning/jobs", json={"model": model, "training_file": training_file})
        messages.add(assert_error(response, 400, "model")["message"].replace(model, "MODEL"))
    assert len(messages) == 2, messages  # one for the encoder, one for everything the server cannot name
    stored = {job["model"] for job in api.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]}
    assert not stored & {"org/name", "/etc", "/nonexistent/model", "~", "minilm-l6"}


def test_an_empty_training_file_is_named_as_uploaded(sdk, tiny_chat_model, server_without_worker):
    from tuneloop.worker.runner import Worker

    empty = sdk.files.create(file=("my-empty.jsonl", io.BytesIO(b"")), purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=empty.id)
    time.sleep(1.0)  # the API process checks no file: a worker does
    assert sdk.fine_tuning.jobs.retrieve(job.id).status == "validating_files"
    worker = Worker(server_without_worker["settings"], "validator", kinds={})
    while worker.validate_next():
        pass
    job = sdk.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "failed" and "my-empty.jsonl" in job.error.message
    assert "/files/" not in job.error.message and empty.id not in job.error.message.split("my-empty")[0]


# 3, 4, 6. Chat completions


def test_a_huge_seed_is_400_streamed_or_not(api, tiny_chat_model):
    for stream in (False, True):
        response = api.post("/v1/chat/completions", json={"model": str(tiny_chat_model), "messages": MESSAGES,
                                                           "seed": 10**30, "stream": stream})
        assert_error(response, 400, "seed")


def test_max_tokens_beyond_the_context_is_400(api, tiny_chat_model):
    for field in ("max_tokens", "max_completion_tokens"):
        response = api.post("/v1/chat/completions", json={"model": str(tiny_chat_model), "messages": MESSAGES,
                                                           field: 256})  # the tiny model's whole context
        error = assert_error(response, 400, field)
        assert error["code"] == "context_length_exceeded" and "256" in error["message"]
    long_prompt = [{"role": "user", "content": "order " * 400}]
    response = api.post("/v1/chat/completions", json={"model": str(tiny_chat_model), "messages": long_prompt})
    assert assert_error(response, 400, "messages")["code"] == "context_length_exceeded"


def test_a_stream_that_fails_after_it_began_ends_with_an_error_event(server_without_worker, sdk, api,
                                                                     tiny_chat_model, monkeypatch):
    from tuneloop.models import generation

    real = generation.stream

    def fails_midway(*args, **kwargs):
        pieces = real(*args, **kwargs)
        yield next(pieces)
        raise RuntimeError("the accelerator fell over")

    monkeypatch.setattr(generation, "stream", fails_midway)
    with api.stream("POST", "/v1/chat/completions", json={"model": str(tiny_chat_model), "messages": MESSAGES,
                                                           "max_tokens": 20, "stream": True}) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["type"] == "server_error" and "RuntimeError" in last["error"]["message"]
    assert "[DONE]" not in events[-1]
    with pytest.raises(openai.APIError, match="generation failed"):
        for _ in sdk.chat.completions.create(model=str(tiny_chat_model), messages=MESSAGES, max_tokens=20,
                                             stream=True):
            pass


def test_a_stop_string_ends_generation(sdk, tiny_chat_model):
    full = sdk.chat.completions.create(model=str(tiny_chat_model), messages=MESSAGES, max_tokens=40, temperature=0)
    assert full.usage.completion_tokens == 40
    stop = full.choices[0].message.content[2:4]
    for stream in (False, True):
        cut = sdk.chat.completions.create(model=str(tiny_chat_model), messages=MESSAGES, max_tokens=40,
                                          temperature=0, stop=[stop], stream=stream,
                                          **({"stream_options": {"include_usage": True}} if stream else {}))
        usage = [c.usage for c in cut if c.usage][-1] if stream else cut.usage
        assert usage.completion_tokens < 10, "tokens were generated past the stop string"


@pytest.mark.parametrize("message, param", [
    ({"role": "tool", "content": "42"}, "messages[0].tool_call_id"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
     "messages[0].content[0]"),
    ({"role": "user", "content": ""}, "messages[0].content"),
    ({"role": "user", "content": 7}, "messages[0].content"),
    ({"role": "wizard", "content": "hi"}, "messages[0].role"),
])
def test_unsupported_messages_are_400_saying_what_is_supported(api, tiny_chat_model, message, param):
    response = api.post("/v1/chat/completions", json={"model": str(tiny_chat_model), "messages": [message]})
    assert_error(response, 400, param)


# 8. Model ids never probe the disks


def test_every_unknown_model_gets_the_same_404(api):
    messages = set()
    for model in ("/etc", "/etc/passwd", "/nonexistent", "~", "~nobody-here", "~Ó\x00", "../../etc", "org/name",
                  "nope"):
        for method, path, kwargs in (("POST", "/v1/chat/completions", {"json": {"model": model, "messages": MESSAGES}}),
                                     ("GET", f"/v1/models/{quote(model, safe='')}", {})):
            response = api.request(method, path, **kwargs)
            error = assert_error(response, 404, "model")
            messages.add(error["message"].replace(model, "MODEL"))
    assert len(messages) == 1, messages


def test_a_run_of_this_server_and_an_allowed_folder_are_models(tmp_path_factory, tiny_chat_model, monkeypatch):
    from typer.testing import CliRunner

    from tuneloop.cli.main import app

    home = tmp_path_factory.mktemp("strict-home")
    data = tmp_path_factory.mktemp("strict-data") / "chat.jsonl"
    data.write_bytes(jsonl(chat_rows(12)))
    monkeypatch.setenv("TUNELOOP_HOME", str(home))
    trained = CliRunner().invoke(app, ["train", "--model", str(tiny_chat_model), "--data", str(data),
                                       "--max-steps", "1"])
    assert trained.exit_code == 0, trained.output
    run = next((home / "runs").iterdir())
    for server in live_server(home, with_worker=False, allowed_paths=[]):
        api = httpx.Client(base_url=server["base"], headers={"Authorization": f"Bearer {server['key']}"}, timeout=30)

        def chat(model: str) -> httpx.Response:
            return api.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES, "max_tokens": 2})

        assert chat(run.name).status_code == 200  # a run of this server, by name
        assert chat(str(run)).status_code == 200  # and by its folder
        assert_error(chat(str(run / ".." / ".." )), 404, "model")
        assert_error(chat(str(tiny_chat_model)), 404, "model")  # a folder this server does not allow
        server["settings"].allowed_paths.append(tiny_chat_model.parent)
        assert chat(str(tiny_chat_model)).status_code == 200


def test_a_huge_value_is_not_echoed_back(api, tiny_chat_model, training_file):
    body = job_body(tiny_chat_model, training_file, method={"type": "supervised", "supervised": {
        "hyperparameters": {"n_epochs": "x" * 5_000_000}}})
    response = api.post("/v1/fine_tuning/jobs", json=body)
    assert_error(response, 400, f"{HP}.n_epochs")
    assert len(response.content) < 1000


def test_dataset_and_run_refs_never_leave_their_folders(api, server_without_worker):
    home = server_without_worker["settings"].home
    (home / "datasets").mkdir(exist_ok=True)
    (home / "runs").mkdir(exist_ok=True)
    for ref in ("%2E%2E", "%2E"):
        for kind in ("datasets", "runs"):
            error = assert_error(api.get(f"/api/{kind}/{ref}"), 404)
            assert str(home) not in error["message"]  # nor does a message say where the server keeps them


# 9. Authentication before the body


def test_bad_json_without_credentials_is_401(server_without_worker):
    response = httpx.post(server_without_worker["url"] + "/chat/completions", content=b"{nope",
                          headers={"content-type": "application/json"})
    assert_error(response, 401)
    response = httpx.post(server_without_worker["base"] + "/api/projects", content=b"{nope",
                          headers={"content-type": "application/json"})
    assert_error(response, 401)


def test_the_gate_holds_under_a_root_path(server_without_worker):
    """Behind a proxy that mounts the app under a prefix, an anonymous body is still refused unread."""
    from fastapi.testclient import TestClient

    with TestClient(server_without_worker["app"], root_path="/tuneloop") as client:
        response = client.post("/tuneloop/v1/chat/completions", content=b"{nope",
                               headers={"content-type": "application/json"})
        assert_error(response, 401)


def test_bodies_beyond_their_route_limit_are_413_unread(server_without_worker):
    head = b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n" \
           b"Content-Length: 20000000\r\n\r\n"
    assert raw_request(server_without_worker["base"], head, b"username=a").startswith(b"HTTP/1.1 413")
    key = server_without_worker["key"].encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" \
           b"Authorization: Bearer " + key + b"\r\nContent-Length: 20000000\r\n\r\n"
    answer = raw_request(server_without_worker["base"], head, b"{")
    assert answer.startswith(b"HTTP/1.1 413") and b"POST /v1/files" in answer


def raw_request(base: str, head: bytes, body: bytes = b"") -> bytes:
    """Send a request's head (and maybe part of its body) and read the answer without sending the rest."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = raw.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_a_big_upload_is_refused_before_it_is_read(server_without_worker):
    fifty_mb = str(50 * 1024 * 1024).encode()
    head = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: " + fifty_mb + b"\r\n\r\n")
    started = time.time()
    assert raw_request(server_without_worker["base"], head, b"--b\r\n").startswith(b"HTTP/1.1 401")
    key = server_without_worker["key"].encode()
    too_big = str(server_without_worker["settings"].max_upload_bytes + (2 << 20)).encode()
    head = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Authorization: Bearer " + key + b"\r\nContent-Length: " + too_big + b"\r\n\r\n")
    answer = raw_request(server_without_worker["base"], head, b"--b\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"TUNELOOP_MAX_UPLOAD_BYTES" in answer
    assert time.time() - started < 5  # neither waited for the 50 MB that never came


def test_a_chunked_body_past_the_limit_is_413(tmp_path_factory):
    for server in live_server(tmp_path_factory.mktemp("small-limit"), with_worker=False, max_upload_bytes=1000):
        def chunks():  # a well-formed start of a file part, then more bytes than the limit allows
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
            for _ in range(40):
                yield b"x" * 65536

        response = httpx.post(server["url"] + "/files", headers={"Authorization": f"Bearer {server['key']}",
                                                                 "content-type": "multipart/form-data; boundary=b"},
                              content=chunks(), timeout=30)
        assert_error(response, 413)
        files = server["settings"].home / "files"
        assert not files.exists() or not any(files.iterdir())  # nothing stored, not even a partial upload


# 11. The shape of every error


def test_405_has_the_error_shape_and_allow(api):
    response = api.delete("/v1/chat/completions")
    error = assert_error(response, 405)
    assert error["type"] == "invalid_request_error" and response.headers["allow"] == "POST"


def test_a_500_has_the_error_shape(tmp_path_factory):
    for server in live_server(tmp_path_factory.mktemp("bug-home"), with_worker=False):
        def broken() -> dict:
            raise ZeroDivisionError("a bug")

        server["app"].add_api_route("/v1/broken", broken)
        response = httpx.get(server["url"] + "/broken", headers={"Authorization": f"Bearer {server['key']}"})
        error = assert_error(response, 500)
        assert error["type"] == "server_error" and "ZeroDivisionError" in error["message"]
        assert "a bug" not in error["message"]  # details stay in the server's log


def test_params_name_fields_as_clients_write_them(api):
    response = api.post("/v1/chat/completions", content=b'{"model": "x", "messages": [1,', headers={
        "content-type": "application/json"})
    error = assert_error(response, 400, None)
    assert error["message"].startswith("the request body is not valid JSON")
    response = api.post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": 3.5}]})
    assert_error(response, 400, "messages[0].content")


def test_health_and_ready(server_without_worker):
    assert httpx.get(server_without_worker["base"] + "/health").json() == {"status": "ok"}
    ready = httpx.get(server_without_worker["base"] + "/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_ready_is_503_when_migrations_are_behind(tmp_path_factory):
    from alembic import command
    from alembic.config import Config

    from tuneloop.store.db import MIGRATIONS, make_engine, upgrade

    for server in live_server(tmp_path_factory.mktemp("behind-home"), with_worker=False):
        engine = make_engine(server["settings"].db_url)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "-1")
        response = httpx.get(server["base"] + "/ready")
        assert_error(response, 503)
        assert response.json()["error"]["code"] == "migrations_pending"
        upgrade(engine)
        assert httpx.get(server["base"] + "/ready").status_code == 200
