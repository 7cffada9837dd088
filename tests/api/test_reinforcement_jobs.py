"""`method.type: reinforcement` through the official openai SDK: a job whose grader scores each sampled completion,
with RL metrics in its events; bad hyperparameters and graders named; a training file checked line by line against
the grader's fields."""

from __future__ import annotations

import io

import openai
import pytest

from tests.api.test_openai_flow import jsonl, wait_for

GRADER = {"type": "string_check", "name": "team", "input": "{{ sample.output_text }}",
          "reference": "{{ item.team }}", "operation": "ilike"}


def prompt_rows(n: int = 12) -> list[dict]:
    teams = ["billing", "shipping", "technical"]
    return [{"messages": [{"role": "user", "content": f"which team handles ticket {i}?"}], "team": teams[i % 3]}
            for i in range(n)]


def test_a_reinforcement_job_trains_and_reports_rewards(client, tiny_chat_model):
    train = client.files.create(file=("prompts.jsonl", io.BytesIO(jsonl(prompt_rows()))), purpose="fine-tune")
    valid = client.files.create(file=("valid.jsonl", io.BytesIO(jsonl(prompt_rows(10)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=str(tiny_chat_model), training_file=train.id, validation_file=valid.id, suffix="rl",
        method={"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {
            "n_epochs": 1, "batch_size": 4, "num_generations": 2, "max_completion_length": 4, "lora_rank": 4}}})
    assert job.method.type == "reinforcement" and job.method.reinforcement.grader.type == "string_check"
    done = wait_for(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    steps = [e.data for e in events if e.type == "metrics" and "reward" in e.data]
    assert len(steps) == 3 and all({"reward", "reward_std", "completions/mean_length", "rewards/team"} <= set(m)
                                   for m in steps)
    evaluations = sorted((e.data for e in events if e.type == "metrics" and "valid_reward" in e.data),
                         key=lambda m: m["step"])
    assert [m["step"] for m in evaluations] == [0, 3]  # the starting model, then after the epoch
    assert all(0 <= m["valid_reward"] <= 1 for m in evaluations)
    reply = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                           messages=[{"role": "user", "content": "which team handles ticket 3?"}])
    assert reply.choices[0].message.role == "assistant"


@pytest.mark.parametrize("reinforcement,param", [
    ({"grader": GRADER, "hyperparameters": {"num_generations": 1}}, "method.reinforcement.hyperparameters.num_generations"),
    ({"grader": GRADER, "hyperparameters": {"eval_samples": 3}}, "method.reinforcement.hyperparameters.eval_samples"),
    ({"grader": GRADER, "hyperparameters": {"loss": "ppo"}}, "method.reinforcement.hyperparameters.loss"),
    ({"grader": {**GRADER, "type": "regex"}}, "method.reinforcement.grader.type"),
    ({"grader": {**GRADER, "operation": "contains"}}, "method.reinforcement.grader.operation"),
    ({"grader": {**GRADER, "input": "{{ output }}"}}, "method.reinforcement.grader.input"),
    ({"hyperparameters": {"n_epochs": 1}}, "method.reinforcement.grader"),
])
def test_bad_reinforcement_settings_are_a_400_naming_the_field(client, tiny_chat_model, reinforcement, param):
    train = client.files.create(file=("prompts.jsonl", io.BytesIO(jsonl(prompt_rows()))), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=train.id,
                                       method={"type": "reinforcement", "reinforcement": reinforcement})
    assert bad.value.body["param"] == param, bad.value.body


def test_a_training_file_is_checked_against_the_graders_fields(client, tiny_chat_model):
    rows = prompt_rows()
    del rows[6]["team"]
    missing = client.files.create(file=("missing.jsonl", io.BytesIO(jsonl(rows))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=missing.id,
                                         method={"type": "reinforcement", "reinforcement": {"grader": GRADER}})
    failed = wait_for(client, job.id, {"failed", "succeeded"}, timeout=60)
    assert failed.status == "failed" and failed.error.param == "training_file"
    assert "line 7: lacks the field team that the grader's templates name" in failed.error.message
    answered = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "team": "x"}
                for _ in range(12)]
    chats = client.files.create(file=("chats.jsonl", io.BytesIO(jsonl(answered))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=str(tiny_chat_model), training_file=chats.id,
                                         method={"type": "reinforcement", "reinforcement": {"grader": GRADER}})
    failed = wait_for(client, job.id, {"failed", "succeeded"}, timeout=60)
    assert "looks like chat data; a reinforcement job trains on prompts" in failed.error.message
    assert "line 1: an RL prompt ends with the user's message" in failed.error.message
