"""/v1/evals through the official openai SDK, against a live server and worker: evals with an item schema and
graders, runs on given answers (jsonl) and on a model's answers (completions, through the shared generation module),
their counts, usage and output items, and a 400 naming the field for every bad eval or run (nothing stored)."""

from __future__ import annotations

import json
import time

import openai
import pytest

SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
          "required": ["question", "answer"]}
EXACT = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
         "reference": "{{ item.answer }}", "operation": "eq"}
CLOSE = {"type": "text_similarity", "name": "close", "input": "{{ sample.output_text }}",
         "reference": "{{ item.answer }}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.7}
ITEMS = [("What is 2+2?", "4", "4"), ("Capital of France?", "Paris", "Paris"), ("Colour of the sky?", "blue", "Blue"),
         ("Largest planet?", "Jupiter", "Saturn")]


def wait_for(client, eval_id: str, run_id: str, timeout: float = 120):
    deadline = time.time() + timeout
    while True:
        run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in ("completed", "failed", "canceled"):
            return run
        assert time.time() < deadline, run
        time.sleep(0.3)


def test_an_eval_on_given_answers_counts_each_criterion_and_keeps_every_item(client):
    ev = client.evals.create(name="qa", data_source_config={"type": "custom", "item_schema": SCHEMA,
                                                             "include_sample_schema": True},
                             testing_criteria=[EXACT, CLOSE], metadata={"team": "ml"})
    assert ev.object == "eval" and ev.id.startswith("eval") and ev.name == "qa" and ev.metadata == {"team": "ml"}
    assert ev.data_source_config.type == "custom"
    assert ev.data_source_config.schema_["properties"]["item"] == SCHEMA
    assert "sample" in ev.data_source_config.schema_["required"]
    assert [c.name for c in ev.testing_criteria] == ["exact", "close"]
    assert ev.testing_criteria[1].pass_threshold == 0.7

    content = [{"item": {"question": q, "answer": a}, "sample": {"output_text": given}} for q, a, given in ITEMS]
    run = client.evals.runs.create(ev.id, name="given", data_source={
        "type": "jsonl", "source": {"type": "file_content", "content": content}})
    assert run.object == "eval.run" and run.eval_id == ev.id and run.status in ("queued", "in_progress")
    run = wait_for(client, ev.id, run.id)
    assert run.status == "completed", run.error
    # exact: "4" and "Paris" pass; "Blue" != "blue", "Saturn" != "Jupiter". close (fuzzy ratio >= 0.7): "Blue" (0.75) passes too.
    assert run.result_counts.model_dump() == {"total": 4, "passed": 2, "failed": 2, "errored": 0}
    per = {p.testing_criteria: (p.passed, p.failed) for p in run.per_testing_criteria_results}
    assert per == {"exact": (2, 2), "close": (3, 1)}
    assert run.per_model_usage == []  # no model answered

    items = client.evals.runs.output_items.list(run.id, eval_id=ev.id)
    assert [i.datasource_item_id for i in items.data] == [0, 1, 2, 3]
    first = items.data[0]
    assert first.object == "eval.run.output_item" and first.run_id == run.id and first.eval_id == ev.id
    assert first.datasource_item == {"question": "What is 2+2?", "answer": "4"} and first.status == "pass"
    assert first.sample.output[0].content == "4"
    blue = items.data[2]
    assert [(r.name, r.passed) for r in blue.results] == [("exact", False), ("close", True)]
    assert blue.results[1].score == pytest.approx(0.75) and blue.status == "fail"
    failed = client.evals.runs.output_items.list(run.id, eval_id=ev.id, status="fail")
    assert [i.datasource_item_id for i in failed.data] == [2, 3]
    page = client.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=2, after=items.data[0].id)
    assert [i.datasource_item_id for i in page.data] == [1, 2] and page.has_more
    one = client.evals.runs.output_items.retrieve(items.data[3].id, eval_id=ev.id, run_id=run.id)
    assert one.sample.output[0].content == "Saturn" and one.status == "fail"

    assert [r.id for r in client.evals.runs.list(ev.id).data] == [run.id]
    assert [r.id for r in client.evals.runs.list(ev.id, status="completed").data] == [run.id]
    assert client.evals.runs.list(ev.id, status="failed").data == []
    assert ev.id in [e.id for e in client.evals.list(limit=100).data]
    renamed = client.evals.update(ev.id, name="qa v2")
    assert renamed.name == "qa v2" and client.evals.retrieve(ev.id).name == "qa v2"

    deleted = client.evals.runs.delete(run.id, eval_id=ev.id)
    assert deleted.deleted and deleted.run_id == run.id
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.retrieve(run.id, eval_id=ev.id)
    assert client.evals.delete(ev.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.evals.retrieve(ev.id)


def test_a_completions_run_answers_with_the_shared_generation_module(client, server, tiny_chat_model, tmp_path):
    """The model answers each item's rendered messages; the answers are those `generation.complete` gives (greedy),
    usage counts its tokens, and the items may come from an uploaded file."""
    from tuneloop.models import generation
    from tuneloop.models.loading import load_causal_lm, load_tokenizer

    ev = client.evals.create(name="gen", data_source_config={"type": "custom", "item_schema": SCHEMA},
                             testing_criteria=[EXACT])
    lines = "".join(json.dumps({"item": {"question": q, "answer": a}}) + "\n" for q, a, _ in ITEMS[:3])
    uploaded = client.files.create(file=("items.jsonl", lines.encode()), purpose="evals")
    template = [{"role": "developer", "content": "Answer in one word."},
                {"role": "user", "content": "Question: {{ item.question }}"}]
    run = client.evals.runs.create(ev.id, data_source={
        "type": "completions", "model": str(tiny_chat_model),
        "input_messages": {"type": "template", "template": template},
        "sampling_params": {"max_completion_tokens": 5, "temperature": 0, "seed": 3},
        "source": {"type": "file_id", "id": uploaded.id}})
    assert run.model == str(tiny_chat_model)
    assert run.data_source.sampling_params.max_completion_tokens == 5
    run = wait_for(client, ev.id, run.id)
    assert run.status == "completed", run.error
    assert run.result_counts.total == 3 and run.result_counts.errored == 0
    items = client.evals.runs.output_items.list(run.id, eval_id=ev.id).data

    model, _ = load_causal_lm(str(tiny_chat_model), server["settings"])
    tokenizer = load_tokenizer(str(tiny_chat_model), server["settings"])
    prompt_tokens = completion_tokens = 0
    for (question, answer, _), item in zip(ITEMS, items):
        messages = [{"role": "system", "content": "Answer in one word."},
                    {"role": "user", "content": f"Question: {question}"}]
        expected = generation.complete(model, tokenizer, messages, generation.GenerationOptions(max_tokens=5))
        assert [m.model_dump() for m in item.sample.input] == messages
        assert item.sample.output[0].content == expected.text and item.sample.model == str(tiny_chat_model)
        assert item.sample.usage.completion_tokens == expected.completion_tokens
        assert item.sample.usage.prompt_tokens == len(generation.encode_chat(tokenizer, messages)[0])
        assert item.results[0].passed == (expected.text == answer)
        prompt_tokens += item.sample.usage.prompt_tokens
        completion_tokens += item.sample.usage.completion_tokens
    usage = run.per_model_usage
    assert len(usage) == 1 and usage[0].run_model_name == str(tiny_chat_model) and usage[0].invocation_count == 3
    assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (prompt_tokens, completion_tokens)


def test_a_judge_that_cannot_answer_errors_its_items_and_counts_its_usage(client, tiny_chat_model):
    """A label_model criterion judged by the tiny model (random weights) gets no label: each item is `error`,
    nothing is counted as passed, and the judge's invocations are in per_model_usage. Items named by reference."""
    schema = {"type": "object", "properties": {"chat": {"type": "array"}}}
    judge = {"type": "label_model", "name": "polite", "model": str(tiny_chat_model), "labels": ["polite", "rude"],
             "passing_labels": ["polite"],
             "input": [{"role": "user", "content": "Is this polite? {{ sample.output_text }}"}]}
    ev = client.evals.create(data_source_config={"type": "custom", "item_schema": schema}, testing_criteria=[judge])
    chats = [{"item": {"chat": [{"role": "user", "content": f"Say hello {i}"}]}} for i in range(2)]
    run = client.evals.runs.create(ev.id, data_source={
        "type": "completions", "model": str(tiny_chat_model), "sampling_params": {"max_completion_tokens": 3},
        "input_messages": {"type": "item_reference", "item_reference": "item.chat"},
        "source": {"type": "file_content", "content": chats}})
    run = wait_for(client, ev.id, run.id)
    assert run.status == "completed", run.error
    assert run.result_counts.model_dump() == {"total": 2, "passed": 0, "failed": 0, "errored": 2}
    assert run.per_testing_criteria_results[0].failed == 2
    assert [u.invocation_count for u in run.per_model_usage] == [4]  # one model: 2 answers and 2 judgements
    item = client.evals.runs.output_items.list(run.id, eval_id=ev.id, status="error").data[0]
    assert item.sample.input[0].content == "Say hello 0" and item.results[0].error


def test_cancelling_a_queued_run(server_without_worker):
    client = openai.OpenAI(base_url=server_without_worker["url"], api_key=server_without_worker["key"],
                           max_retries=0)
    ev = client.evals.create(data_source_config={"type": "custom", "item_schema": SCHEMA}, testing_criteria=[EXACT])
    content = [{"item": {"question": "q", "answer": "a"}, "sample": {"output_text": "a"}}]
    run = client.evals.runs.create(ev.id, data_source={"type": "jsonl",
                                                       "source": {"type": "file_content", "content": content}})
    assert run.status == "queued"
    with pytest.raises(openai.ConflictError) as e:
        client.evals.delete(ev.id)
    assert "cancel it first" in e.value.message
    assert client.evals.runs.cancel(run.id, eval_id=ev.id).status == "canceled"
    with pytest.raises(openai.BadRequestError):
        client.evals.runs.cancel(run.id, eval_id=ev.id)
    assert client.evals.delete(ev.id).deleted


def _param(call) -> tuple[str, str]:
    with pytest.raises(openai.BadRequestError) as e:
        call()
    return e.value.body["param"], e.value.message


@pytest.mark.parametrize("config, criteria, param, words", [
    ({"type": "custom", "item_schema": SCHEMA}, [{**EXACT, "reference": "{{ item.answer "}],
     "testing_criteria[0].reference", "does not parse"),
    ({"type": "custom", "item_schema": SCHEMA}, [{**EXACT, "reference": "{{ item.anwser }}"}],
     "testing_criteria[0].reference", "item.anwser"),
    ({"type": "custom", "item_schema": SCHEMA}, [{k: v for k, v in CLOSE.items() if k != "pass_threshold"}],
     "testing_criteria[0].pass_threshold", "needs one"),
    ({"type": "custom", "item_schema": SCHEMA}, [EXACT, {**CLOSE, "name": "exact"}], "testing_criteria[1].name",
     "already"),
    ({"type": "custom", "item_schema": SCHEMA}, [{**EXACT, "type": "multi"}], "testing_criteria[0].type", "multi"),
    ({"type": "custom", "item_schema": SCHEMA}, [{**EXACT, "operation": "equals"}], "testing_criteria[0].operation",
     "eq"),
    ({"type": "custom", "item_schema": SCHEMA}, [{"type": "python", "name": "py", "source": "def grade(s, i): return 1"}],
     "testing_criteria[0].type", "python graders are off"),
    ({"type": "custom", "item_schema": {"type": "object", "properties": {"a": {"type": "strin"}}}}, [EXACT],
     "data_source_config.item_schema.properties.a.type", "not a valid JSON schema"),
    ({"type": "custom", "item_schema": {"type": "array"}}, [EXACT], "data_source_config.item_schema.type", "object"),
    ({"type": "logs"}, [EXACT], "data_source_config.type", "custom"),
    ({"type": "custom", "item_schema": json.loads("{" + '"not": {' * 900 + "}" * 901)}, [EXACT],
     "data_source_config.item_schema", "nested too deeply"),
])
def test_a_bad_eval_is_a_400_naming_the_field_and_stores_nothing(client, config, criteria, param, words):
    before = len(client.evals.list(limit=100).data)
    got, message = _param(lambda: client.evals.create(data_source_config=config, testing_criteria=criteria))
    assert got == param and words in message, message
    assert len(client.evals.list(limit=100).data) == before


def test_a_bad_run_is_a_400_naming_the_field_and_queues_nothing(client, monkeypatch, tiny_chat_model):
    from tuneloop.services import eval_sources

    ev = client.evals.create(data_source_config={"type": "custom", "item_schema": {
        **SCHEMA, "properties": {**SCHEMA["properties"], "code": {"type": "string", "pattern": "^(a+)+$"}}}},
        testing_criteria=[EXACT])
    good = {"item": {"question": "q", "answer": "a"}, "sample": {"output_text": "a"}}

    def jsonl(*content):
        return lambda: client.evals.runs.create(ev.id, data_source={
            "type": "jsonl", "source": {"type": "file_content", "content": list(content)}})

    def completions(**fields):
        source = {"type": "completions", "model": str(tiny_chat_model), "source": {
            "type": "file_content", "content": [{"item": {"question": "q", "answer": "a"}}]},
            "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{ item.question }}"}]}}
        return lambda: client.evals.runs.create(ev.id, data_source={**source, **fields})

    cases = [
        (jsonl(good, {"item": {"question": "q", "answer": 4}, "sample": {"output_text": "a"}}),
         "data_source.source.content[1].item.answer", "is not of type 'string'"),
        (jsonl(good, {"item": {"question": "q"}, "sample": {"output_text": "a"}}),
         "data_source.source.content[1].item", "answer"),
        (jsonl({"item": {"question": "q", "answer": "a"}}), "data_source.source.content[0].sample", "output_text"),
        (jsonl(), "data_source.source.content", "no items"),
        (completions(model="no-such-model"), "data_source.model", "no-such-model"),
        (completions(input_messages={"type": "template", "template": [
            {"role": "user", "content": "{{ sample.output_text }}"}]}),
         "data_source.input_messages.template[0].content", "sample is the answer"),
        (completions(input_messages={"type": "template", "template": [
            {"role": "user", "content": "{{ item.topic }}"}]}),
         "data_source.input_messages.template[0].content", "item.topic"),
        (completions(input_messages={"type": "template", "template": [
            {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
         "data_source.input_messages.template[0].content[0]", "input_image"),
        (completions(sampling_params={"temperature": 7}), "data_source.sampling_params.temperature", "from 0 to 2"),
        (completions(sampling_params={"tools": []}), "data_source.sampling_params.tools", "not supported"),
        (lambda: client.evals.runs.create(ev.id, data_source={"type": "responses", "source": {}}),
         "data_source.type", "Responses"),
        (lambda: client.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {
            "type": "file_id", "id": "file-none"}}), "data_source.source.id", "file-none"),
        (lambda: client.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {
            "type": "file_id", "id": client.files.create(file=("bad.jsonl", b'{"item": {"question": "q", "answer": "a"},'
                                                               b' "sample": "a"}\n'), purpose="evals").id}}),
         "data_source.source.id", "line 1"),
        (jsonl({**good, "sample": {"output_text": "a", "usage": 5}}), "data_source.source.content[0]", "usage"),
    ]
    monkeypatch.setattr(eval_sources, "SCHEMA_SECONDS", 3.0)  # the server runs in this process
    cases.append((jsonl({"item": {"question": "q", "answer": "a", "code": "a" * 40 + "!"},
                         "sample": {"output_text": "a"}}), "data_source.source.content", "did not finish"))
    for call, param, words in cases:
        try:
            got, message = _param(call)
        except openai.NotFoundError as e:  # the file named is not there
            got, message = e.body["param"], e.message
        assert got == param and words in message, (param, message)
    assert client.evals.runs.list(ev.id).data == []


def test_a_nan_threshold_is_a_400_and_the_evals_list_still_answers(client, server):
    import httpx

    body = {"data_source_config": {"type": "custom", "item_schema": SCHEMA},
            "testing_criteria": [{**CLOSE, "pass_threshold": float("nan")}]}
    answer = httpx.post(f"{server['url']}/evals", content=json.dumps(body),  # NaN: JSON the SDK refuses to send
                        headers={"Authorization": f"Bearer {server['key']}", "Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "testing_criteria[0].pass_threshold"
    assert "finite" in answer.json()["error"]["message"]
    assert client.evals.list(limit=100).object == "list"
