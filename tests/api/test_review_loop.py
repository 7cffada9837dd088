"""Closing the loop through the API with a real worker: train a fine-tuning job on the reviewed records,
re-predict the remaining and held-out records with the fine-tuned model, and see the round."""

from __future__ import annotations

import json
import time

import httpx
from openai import OpenAI

from tests.api.test_openai_flow import wait_for
from tests.conftest import chat_rows, labelled_rows, live_server, write_jsonl
from tuneloop.store.tables import Job


def test_train_on_reviewed_then_repredict_records_a_round(tmp_path_factory, tiny_chat_model, tiny_encoder):
    from tuneloop.services.auth import create_user
    from tuneloop.services.review import projects, queue

    data = tmp_path_factory.mktemp("loop-data")
    rows = labelled_rows(24)
    gold = {row["text"]: row["label"] for row in rows}
    for server in live_server(tmp_path_factory.mktemp("loop-home"), with_worker=True):
        with server["app"].state.sessions() as session:
            ann = create_user(session, username="ann", password="ann-password", role="annotator")
            project = projects.create_project(session, server["settings"], name="tickets", task="classification",
                                              data=str(write_jsonl(data / "t.jsonl", rows)), holdout=0.25)
            projects.create_project(session, server["settings"], name="rated", task="rating",
                                    data=str(write_jsonl(data / "r.jsonl", chat_rows(3))))
            projects.create_project(session, server["settings"], name="empty", task="classification",
                                    data=str(write_jsonl(data / "e.jsonl", rows)))
            while (view := queue.next_record(session, project, ann, "id")) is not None:
                queue.submit(session, project, ann, view["id"], {"label": gold[view["text"]]})
        api = httpx.Client(base_url=server["base"], headers={"Authorization": f"Bearer {server['key']}"}, timeout=60)

        created = api.post("/api/projects/tickets/train", json={"model": str(tiny_chat_model), "epochs": 1})
        assert created.status_code == 200, created.text
        job = created.json()
        assert job["examples"] == 18  # the pool; the 6 held-out records only measure
        client = OpenAI(base_url=server["url"], api_key=server["key"], max_retries=0)
        finished = wait_for(client, job["id"], {"succeeded", "failed"})
        assert finished.status == "succeeded", finished.error
        listed = api.get("/api/projects/tickets").json()["jobs"]
        assert [j["fine_tuned_model"] for j in listed] == [finished.fine_tuned_model]

        task = api.post("/api/projects/tickets/repredict", json={"model": finished.fine_tuned_model}).json()
        assert task["status"] == "queued" and task["id"].startswith("job-")  # a job; the worker runs it
        busy = api.post("/api/projects/tickets/repredict", json={"model": finished.fine_tuned_model})
        assert busy.status_code == 409 and "already re-predicting" in busy.json()["error"]["message"]
        deadline = time.time() + 120
        while not (current := api.get("/api/projects/tickets/tasks").json()["data"][0])["finished"]:
            assert time.time() < deadline, current
            time.sleep(0.3)
        assert current["status"] == "succeeded", current["error"]
        assert current["done"] == current["total"] == 6  # every pool record is labelled: only the held-out remain
        assert current["result"]["round"] == 1
        job = api.get(f"/api/jobs/{task['id']}").json()  # the same job among jobs of every kind
        assert job["kind"] == "repredict" and job["progress"]["done"] == 6 and job["links"]["project"]
        assert client.fine_tuning.jobs.list().data[0].id != task["id"]  # the fine-tuning API lists train jobs
        assert api.get(f"/v1/fine_tuning/jobs/{task['id']}").status_code == 404
        [round_] = api.get("/api/projects/tickets").json()["rounds"]
        assert round_["round"] == 1 and round_["labels_used"] == 18 and 0 <= round_["accuracy"] <= 1
        assert round_["model"] == finished.fine_tuned_model

        # a classifier head on an encoder (defect: "is an encoder; fine-tuning jobs train chat models")
        head = api.post("/api/projects/tickets/train", json={"model": str(tiny_encoder), "epochs": 2})
        assert head.status_code == 200, head.text
        trained = wait_for(client, head.json()["id"], {"succeeded", "failed"})
        assert trained.status == "succeeded", trained.error
        with server["app"].state.sessions() as session:
            recipe = session.get(Job, trained.id).recipe
        assert (recipe["method"], recipe["classifier"]) == ("classify", "auto")
        assert api.post("/api/projects/tickets/repredict", json={"model": trained.fine_tuned_model}).status_code == 200
        deadline = time.time() + 120
        while not (current := api.get("/api/projects/tickets/tasks").json()["data"][0])["finished"]:
            assert time.time() < deadline, current
            time.sleep(0.3)
        assert current["status"] == "succeeded" and current["result"]["predicted"] == 6, current
        second = api.get("/api/projects/tickets").json()["rounds"][1]
        assert second["model"] == trained.fine_tuned_model and second["predicted"] == 6
        chat = api.post("/v1/chat/completions", json={"model": trained.fine_tuned_model,
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 404 and chat.json()["error"]["param"] == "model", chat.text  # no 500
        assert "is an encoder; it cannot generate text" in chat.json()["error"]["message"]
        wrong = api.post("/api/projects/tickets/train", json={"model": str(tiny_encoder), "classifier": "generative"})
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "classifier"
        assert "is an encoder: it cannot answer with a label" in wrong.json()["error"]["message"]

        missing = api.post("/api/projects/tickets/repredict", json={"model": "ft:nope:tuneloop::ftjob-x"})
        assert missing.status_code == 404 and "no model 'ft:nope" in missing.json()["error"]["message"]
        rated = api.post("/api/projects/rated/train", json={})
        assert rated.status_code == 400 and "reward" in rated.json()["error"]["message"]
        empty = api.post("/api/projects/empty/train", json={})
        assert empty.status_code == 409 and "no reviewed records" in empty.json()["error"]["message"]


def test_a_spans_project_trains_a_token_classifier_and_repredicts_with_it(tmp_path_factory, tiny_encoder):
    """The span loop through the API with a real worker: people mark spans, "train on reviewed data" trains a
    token classifier (token_classify) on an encoder, and re-predicting with it drafts spans on the open and
    held-out records and records a round scored by entity F1."""
    from tests.engine.test_token_classify import span_rows
    from tuneloop.services.auth import create_user
    from tuneloop.services.review import projects, queue

    data = tmp_path_factory.mktemp("spans-data")
    rows = span_rows(40)
    gold = {row["text"]: row["spans"] for row in rows}
    for server in live_server(tmp_path_factory.mktemp("spans-home"), with_worker=True):
        with server["app"].state.sessions() as session:
            ann = create_user(session, username="ann", password="ann-password", role="annotator")
            project = projects.create_project(session, server["settings"], name="things", task="spans",
                                              data=str(write_jsonl(data / "s.jsonl", [{"text": r["text"]} for r in rows])),
                                              labels=["THING", "WHEN"], holdout=0.2)
            for _ in range(36):  # the 8 held-out records and 28 of the pool; 4 stay open
                view = queue.next_record(session, project, ann, "id")
                queue.submit(session, project, ann, view["id"], {"spans": gold[view["text"]]})
        api = httpx.Client(base_url=server["base"], headers={"Authorization": f"Bearer {server['key']}"}, timeout=60)
        bio = api.get("/api/projects/things/export", params={"as": "bio"})
        first = json.loads(bio.text.splitlines()[0])
        assert bio.headers["x-tuneloop-examples"] == "28" and set(first) == {"tokens", "tags"}
        assert {t[2:] for t in first["tags"] if t != "O"} <= {"THING", "WHEN"}
        generative = api.post("/api/projects/things/train", json={"model": str(tiny_encoder), "classifier": "generative"})
        assert generative.status_code == 400 and "no generative classifier" in generative.json()["error"]["message"]
        created = api.post("/api/projects/things/train", json={"model": str(tiny_encoder), "epochs": 25})
        assert created.status_code == 200, created.text
        client = OpenAI(base_url=server["url"], api_key=server["key"], max_retries=0)
        trained = wait_for(client, created.json()["id"], {"succeeded", "failed"})
        assert trained.status == "succeeded", trained.error
        with server["app"].state.sessions() as session:
            assert session.get(Job, trained.id).recipe["method"] == "token_classify"
        assert api.post("/api/projects/things/repredict", json={"model": trained.fine_tuned_model}).status_code == 200
        deadline = time.time() + 120
        while not (current := api.get("/api/projects/things/tasks").json()["data"][0])["finished"]:
            assert time.time() < deadline, current
            time.sleep(0.3)
        assert current["status"] == "succeeded" and current["result"]["predicted"] == 12, current  # 4 open + 8 held out
        [round_] = api.get("/api/projects/things").json()["rounds"]
        assert round_["metric"] == "entity F1" and round_["labels_used"] == 28 and 0 <= round_["accuracy"] <= 1
        table = api.get("/api/projects/things/records", params={"status": "open"}).json()
        assert table["data"] and all(r["pred_model"] == trained.fine_tuned_model for r in table["data"])
