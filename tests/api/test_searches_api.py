"""POST /api/searches: a search over the native API, on an uploaded file, run by the server's worker; its trials,
best recipe and plots; and the requests that are refused (naming what is wrong) before anything is queued."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import chat_rows, write_jsonl


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server["base"], headers={"Authorization": f"Bearer {server['key']}"},
                      timeout=60) as client:
        yield client


def recipe(model, file_id) -> dict:
    return {"model": str(model), "data": {"train": file_id, "validation": file_id},
            "hyperparameters": {"max_steps": 2, "batch_size": 4, "warmup_ratio": 0},
            "evaluation": {"every_steps": 1, "each_epoch": False}, "checkpoints": {"each_epoch": False}}


def test_a_search_over_the_api_runs_on_the_servers_worker(api, client, tiny_chat_model, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    file_id = client.files.create(file=open(data, "rb"), purpose="fine-tune").id
    created = api.post("/api/searches", json={"recipe": recipe(tiny_chat_model, file_id), "sampler": "grid",
                                              "space": {"learning_rate": [1e-3, 1e-2]}, "name": "lr"})
    assert created.status_code == 200, created.text
    search = created.json()
    assert search["trials"] == 2 and search["status"] in ("queued", "running") and search["name"] == "lr"
    deadline = time.time() + 180
    while search["status"] not in ("finished", "cancelled"):
        assert time.time() < deadline, search
        time.sleep(1)
        search = api.get(f"/api/searches/{search['id']}").json()
    assert [t["state"] for t in search["trial_rows"]] == ["COMPLETE", "COMPLETE"], search["trial_rows"]
    assert sorted(t["params"]["hyperparameters.learning_rate"] for t in search["trial_rows"]) == [1e-3, 1e-2]
    assert search["best"]["value"] == min(t["value"] for t in search["trial_rows"])
    assert f"learning_rate: {search['best']['params']['hyperparameters.learning_rate']}" in search["best"]["recipe"]
    plot = api.get(f"/api/searches/{search['id']}/plots/history")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert plot.content.startswith(b"\x89PNG")
    assert search["id"] in [s["id"] for s in api.get("/api/searches").json()["data"]]
    jobs = api.get("/api/jobs", params={"kind": "search-trial"}).json()["data"]
    assert {j["id"] for j in jobs} >= set(search["jobs"])


@pytest.mark.parametrize("change, status, param, words", [
    ({"recipe": {"output_dir": "/etc/x"}}, 400, "recipe.output_dir", "runs folder"),
    ({"recipe": {"data": {"train": "/etc/passwd", "validation_split": 0.2}}}, 404, "recipe.data.train[0]",
     "no uploaded file"),
    ({"space": {"lr": [1]}}, 400, "space", "'lr' is not a recipe field"),
    ({"space": {"model": ["/etc"]}}, 400, "space.model", "no base model '/etc'"),
    ({"recipe": {"model": "/etc"}}, 400, "recipe.model", "no base model '/etc'"),
    ({"sampler": "cmaes"}, 400, "sampler", "grid"),
    ({"recipe": {"method": "grpo", "grpo": {"rewards": [{"reward_model": "/etc"}]}}}, 404,
     "recipe.grpo.rewards[0].reward_model", "/etc"),
    ({"metric": "loss"}, 400, "metric", "eval_"),
])
def test_a_bad_search_is_refused_and_queues_nothing(api, client, tiny_chat_model, tmp_path, change, status, param,
                                                    words):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    file_id = client.files.create(file=open(data, "rb"), purpose="fine-tune").id
    body = {"recipe": recipe(tiny_chat_model, file_id), "space": {"learning_rate": [1e-3]}}
    for key, value in change.items():
        body[key] = {**body[key], **value} if isinstance(value, dict) and key == "recipe" else value
    before = len(api.get("/api/searches").json()["data"])
    answer = api.post("/api/searches", json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and words in error["message"], error
    assert len(api.get("/api/searches").json()["data"]) == before
