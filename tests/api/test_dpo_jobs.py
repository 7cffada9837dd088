"""`method.type: dpo` through the official openai SDK: a job on OpenAI's DPO format with its reward metrics in
the events, bad hyperparameters named, and a training file that is not made of pairs failing line by line."""

from __future__ import annotations

import io

import openai
import pytest

from tests.api.test_openai_flow import jsonl, wait_for
from tests.conftest import chat_rows


def dpo_rows(n: int = 12) -> list[dict]:
    return [{"input": {"messages": [{"role": "user", "content": f"where is the order {i}"}]},
             "preferred_output": [{"role": "assistant", "content": "the package will arrive at the address"}],
             "non_preferred_output": [{"role": "assistant", "content": "please reset my password"}]} for i in range(n)]


def test_a_dpo_job_trains_and_reports_rewards(client, tiny_chat_model):
    uploaded = client.files.create(file=("pairs.jsonl", io.BytesIO(jsonl(dpo_rows()))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=uploaded.id, suffix="prefs", method={
        "type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2, "batch_size": 4,
                                                   "learning_rate_multiplier": 5, "lora_rank": 4}}})
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    done = wait_for(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    metrics = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"]
    assert len(metrics) == 6  # 12 pairs / 4 x 2 epochs
    assert all({"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"} <= set(m) for m in metrics)
    reply = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                           messages=[{"role": "user", "content": "where is the order"}])
    assert reply.choices[0].message.role == "assistant"


@pytest.mark.parametrize("hyperparameters,param", [
    ({"beta": 0}, "method.dpo.hyperparameters.beta"), ({"beta": -1}, "method.dpo.hyperparameters.beta"),
    ({"loss": "kto"}, "method.dpo.hyperparameters.loss"),
    ({"label_smoothing": 0.5}, "method.dpo.hyperparameters.label_smoothing"),
    ({"n_epochs": 0}, "method.dpo.hyperparameters.n_epochs"), ({"temperature": 1}, "method.dpo.hyperparameters.temperature"),
    ({"label_smoothing": "0.2"}, "method.dpo.hyperparameters.label_smoothing"),
    ({"label_smoothing": 0.1, "loss": "hinge"}, "method.dpo.hyperparameters.label_smoothing"),
    ({"sft_weight": True}, "method.dpo.hyperparameters.sft_weight"), ({"beta": 1e-300}, "method.dpo.hyperparameters.beta")])
def test_bad_dpo_hyperparameters_are_a_400_naming_the_parameter(client, tiny_chat_model, hyperparameters, param):
    uploaded = client.files.create(file=("pairs.jsonl", io.BytesIO(jsonl(dpo_rows()))), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=uploaded.id,
                                       method={"type": "dpo", "dpo": {"hyperparameters": hyperparameters}})
    assert bad.value.body["param"] == param


def test_a_dpo_training_file_is_checked_pair_by_pair(client, tiny_chat_model):
    chats = client.files.create(file=("chats.jsonl", io.BytesIO(jsonl(chat_rows(12)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=chats.id, method={"type": "dpo"})
    failed = wait_for(client, job.id, {"failed", "succeeded"}, timeout=60)
    assert failed.status == "failed" and failed.error.param == "training_file"
    assert "chats.jsonl looks like chat data; a dpo job trains on preference pairs" in failed.error.message
    assert "line 1: missing field 'input'" in failed.error.message
    rows = dpo_rows()
    rows[4]["non_preferred_output"] = rows[4]["preferred_output"]
    del rows[7]["input"]
    same = client.files.create(file=("same.jsonl", io.BytesIO(jsonl(rows))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=same.id, method={"type": "dpo"})
    failed = wait_for(client, job.id, {"failed", "succeeded"}, timeout=60)
    assert "line 5: 'preferred_output' and 'non_preferred_output' are the same answer" in failed.error.message
    assert "line 8: missing field 'input'" in failed.error.message


def test_a_method_block_that_does_not_match_the_type_is_named(client, tiny_chat_model):
    uploaded = client.files.create(file=("pairs.jsonl", io.BytesIO(jsonl(dpo_rows()))), purpose="fine-tune")
    for method, param in (({"type": "dpo", "supervised": {"hyperparameters": {"n_epochs": 3}}}, "method.supervised"),
                          ({"dpo": {"hyperparameters": {"beta": 0.3}}}, "method.dpo")):
        with pytest.raises(openai.BadRequestError) as bad:
            client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=uploaded.id, method=method)
        assert bad.value.body["param"] == param
