"""The official openai SDK, unchanged, drives the whole flow against a live tuneloop server."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest

from tests.conftest import chat_rows


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def wait_for(client, job_id, statuses, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")


def test_upload_train_chat_delete(client, server, tiny_chat_model):
    uploaded = client.files.create(file=("train.jsonl", io.BytesIO(jsonl(chat_rows(12)))), purpose="fine-tune")
    assert uploaded.object == "file" and uploaded.bytes > 0 and uploaded.filename == "train.jsonl"
    assert client.files.content(uploaded.id).read() == jsonl(chat_rows(12))
    assert uploaded.id in [f.id for f in client.files.list()]

    job = client.fine_tuning.jobs.create(
        model=str(tiny_chat_model), training_file=uploaded.id, suffix="tiny", seed=1,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10, "lora_rank": 4}}})
    assert job.status == "validating_files" and job.id.startswith("ftjob-")
    done = wait_for(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:{tiny_chat_model.name}:tuneloop:tiny:{job.id}"
    assert done.trained_tokens and done.trained_tokens > 0

    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 6 and all("train_loss" in e.data for e in metrics)  # 12 examples / 4 x 2 epochs
    assert any("successfully completed" in e.message for e in events)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert sorted(c.step_number for c in checkpoints) == [3, 6]  # one per epoch

    results = client.files.content(done.result_files[0]).read().decode().splitlines()
    assert results[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy" and len(results) == 7

    ids = [m.id for m in client.models.list().data]
    assert done.fine_tuned_model in ids and "smollm2-135m-instruct" in ids
    messages = [{"role": "user", "content": "What is 3 plus 3?"}]
    reply = client.chat.completions.create(model=done.fine_tuned_model, messages=messages, max_tokens=5,
                                           temperature=0)
    assert reply.choices[0].message.role == "assistant" and reply.usage.completion_tokens <= 5
    streamed = client.chat.completions.create(model=done.fine_tuned_model, messages=messages, max_tokens=5,
                                              temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1
    checkpoint = next(c for c in checkpoints if c.step_number == 3).fine_tuned_model_checkpoint
    at_checkpoint = client.chat.completions.create(model=checkpoint, messages=messages, max_tokens=5, temperature=0,
                                                   logprobs=True, top_logprobs=2)
    assert at_checkpoint.choices[0].logprobs.content[0].logprob <= 0
    assert len(at_checkpoint.choices[0].logprobs.content[0].top_logprobs) == 2

    by_folder = client.chat.completions.create(model=str(server["settings"].runs_dir / job.id), messages=messages,
                                               max_tokens=5, temperature=0)  # a run folder serves too
    assert by_folder.choices[0].message.content == reply.choices[0].message.content

    with pytest.raises(openai.ConflictError):
        client.files.delete(uploaded.id)  # the job uses it
    assert client.models.delete(done.fine_tuned_model).deleted
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=done.fine_tuned_model, messages=messages, max_tokens=2)


def test_error_paths_through_the_sdk(client, server, tiny_chat_model):
    from openai import OpenAI

    with pytest.raises(openai.NotFoundError) as missing:
        client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file="file-nope")
    assert missing.value.body["param"] == "training_file"
    good = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(chat_rows(12)))), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=good.id,
                                       method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}})
    assert bad.value.body["param"] == "method.supervised.hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as rank:
        client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=good.id,
                                       method={"type": "supervised", "supervised": {"hyperparameters": {"lora_rank": "x"}}})
    assert rank.value.body["param"] == "method.supervised.hyperparameters.lora_rank"
    with pytest.raises(openai.BadRequestError) as no_grader:
        client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=good.id,
                                       method={"type": "reinforcement", "reinforcement": {}})
    assert no_grader.value.body["param"] == "method.reinforcement.grader"
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=server["url"], api_key="tl-wrong", max_retries=0).models.list()

    broken = jsonl(chat_rows(11)) + b'{"messages": [{"role": "user", "content": "hi"}]}\n' + b"not json\n"
    bad_file = client.files.create(file=("broken.jsonl", io.BytesIO(broken)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=bad_file.id)
    failed = wait_for(client, job.id, {"failed", "succeeded"}, timeout=60)
    assert failed.status == "failed" and failed.error.param == "training_file"
    assert "line 12" in failed.error.message and "line 13" in failed.error.message


def test_no_key_is_401_with_the_error_shape(server):
    import httpx

    response = httpx.get(server["url"] + "/models")
    assert response.status_code == 401 and response.headers["x-should-retry"] == "false"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_cancel_stops_a_running_job_within_seconds(client, tiny_chat_model):
    uploaded = client.files.create(file=("c.jsonl", io.BytesIO(jsonl(chat_rows(12)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=uploaded.id, method={
        "type": "supervised", "supervised": {"hyperparameters": {"max_steps": 100000, "batch_size": 2}}})
    wait_for(client, job.id, {"running"}, timeout=60)
    deadline = time.time() + 60  # until the child has written its first training step
    while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=50).data):
        assert time.time() < deadline
        time.sleep(0.3)
    client.fine_tuning.jobs.cancel(job.id)
    started = time.time()
    cancelled = wait_for(client, job.id, {"cancelled", "failed", "succeeded"}, timeout=30)
    assert cancelled.status == "cancelled" and time.time() - started < 10
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(job.id)


def test_pause_saves_a_checkpoint_and_resume_continues_from_it(client, tiny_chat_model):
    uploaded = client.files.create(file=("p.jsonl", io.BytesIO(jsonl(chat_rows(12)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=uploaded.id, method={
        "type": "supervised", "supervised": {"hyperparameters": {"max_steps": 100000, "batch_size": 2}}})
    wait_for(client, job.id, {"running"}, timeout=60)
    deadline = time.time() + 60
    while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=50).data):
        assert time.time() < deadline
        time.sleep(0.3)
    client.fine_tuning.jobs.pause(job.id)
    paused = wait_for(client, job.id, {"paused", "failed"}, timeout=30)
    assert paused.status == "paused"
    message = next(e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data
                   if e.message.startswith("Job paused at step"))
    step = int(message.split("step ")[1].split()[0])
    kept = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data]
    assert kept[0] == step and len(kept) == len(set(kept)) <= 3  # newest first; pruned ones are forgotten
    with pytest.raises(openai.BadRequestError, match="only a running job can be paused"):
        client.fine_tuning.jobs.pause(job.id)
    client.fine_tuning.jobs.resume(job.id)
    wait_for(client, job.id, {"running"}, timeout=60)
    deadline = time.time() + 60
    while not any(e.message == f"Resumed from the checkpoint at step {step}"
                  for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data):
        assert time.time() < deadline
        time.sleep(0.3)
    client.fine_tuning.jobs.cancel(job.id)
    assert wait_for(client, job.id, {"cancelled"}, timeout=30).status == "cancelled"


def test_chat_parameters(client, tiny_chat_model):
    model, messages = str(tiny_chat_model), [{"role": "user", "content": "where is my order"}]
    full = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    text = full.choices[0].message.content
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 12
    assert full.usage.total_tokens == full.usage.prompt_tokens + 12
    stop = text.split()[1] if len(text.split()) > 1 else text[2:4]
    cut = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed_cut = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0,
                                                  stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed_cut) == cut.choices[0].message.content
    sampled = [client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=1.5,
                                              seed=7, n=3) for _ in range(2)]
    assert [c.message.content for c in sampled[0].choices] == [c.message.content for c in sampled[1].choices]
    assert [c.index for c in sampled[0].choices] == [0, 1, 2] and sampled[0].usage.completion_tokens <= 24
    assert len({c.message.content for c in sampled[0].choices}) > 1  # each choice its own sample


def test_malformed_requests_are_4xx_never_500(server):
    import httpx

    headers = {"Authorization": f"Bearer {server['key']}"}
    url = server["url"]
    cases = [("post", "/chat/completions", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
             ("post", "/chat/completions", {"json": {"model": "smollm2-135m-instruct"}}),
             ("post", "/chat/completions", {"json": {"model": "nope/nope-model", "messages": [{"role": "user",
                                                                                            "content": "hi"}]}}),
             ("post", "/chat/completions", {"json": {"model": "minilm-l6", "messages": [{"role": "user",
                                                                                      "content": "hi"}]}}),
             ("post", "/chat/completions", {"json": {"model": "x", "messages": [], "temperature": 9}}),
             ("post", "/fine_tuning/jobs", {"content": b"[1, 2]", "headers": {"content-type": "application/json"}}),
             ("post", "/fine_tuning/jobs", {"json": {"model": "smollm2-135m-instruct", "training_file": 3}}),
             ("post", "/fine_tuning/jobs", {"json": {"model": "smollm2-135m-instruct", "training_file": "f",
                                                     "method": "dpo"}}),
             ("get", "/fine_tuning/jobs", {"params": {"limit": "many"}}),
             ("get", "/fine_tuning/jobs/ftjob-nope/events", {}),
             ("post", "/fine_tuning/jobs/ftjob-nope/pause", {}),
             ("get", "/files/file-nope/content", {}),
             ("post", "/files", {"data": {"purpose": "fine-tune"}}),
             ("delete", "/models/smollm2-135m-instruct", {}),
             ("get", "/models/ft:nope:tuneloop::ftjob-nope", {})]
    for method, path, kwargs in cases:
        response = getattr(httpx, method)(url + path, headers={**headers, **kwargs.pop("headers", {})}, timeout=30,
                                          **kwargs)
        assert 400 <= response.status_code < 500, (path, kwargs, response.status_code, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}, response.text
