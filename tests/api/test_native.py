"""The native /api routes: datasets with their stats, runs with recipe, events and evaluations."""

from __future__ import annotations

import httpx

from tests.conftest import chat_rows, write_jsonl


def get(server, path, **params):
    return httpx.get(server["url"].removesuffix("/v1") + path, params=params,
                     headers={"Authorization": f"Bearer {server['key']}"}, timeout=30)


def test_datasets_runs_events_and_missing_ones(server, tmp_path, tiny_chat_model, monkeypatch):
    from typer.testing import CliRunner

    from tuneloop.cli.main import app

    monkeypatch.setenv("TUNELOOP_HOME", str(server["settings"].home))
    data = write_jsonl(tmp_path / "chats.jsonl", chat_rows(12))
    runner = CliRunner()
    assert runner.invoke(app, ["data", "import", str(data), "--name", "chats"]).exit_code == 0
    assert runner.invoke(app, ["train", "--model", str(tiny_chat_model), "--data", str(data), "--max-steps", "2",
                               "--output", str(server["settings"].runs_dir / "cli-run")]).exit_code == 0

    listed = get(server, "/api/datasets").json()["data"]
    assert [d["name"] for d in listed] == ["chats"] and listed[0]["examples"] == 12
    one = get(server, f"/api/datasets/{listed[0]['id']}").json()
    assert one["stats"]["examples"] == 12 and one["imports"][0]["name"] == "chats"
    assert get(server, "/api/datasets/chats").json()["id"] == listed[0]["id"]  # by name too

    runs = {r["id"]: r for r in get(server, "/api/runs").json()["data"]}
    assert runs["cli-run"]["status"] == "succeeded" and runs["cli-run"]["steps"] == 2
    detail = get(server, "/api/runs/cli-run").json()
    assert detail["recipe"]["model"] == str(tiny_chat_model) and detail["result"]["steps"] == 2
    events = get(server, "/api/runs/cli-run/events", after=1, limit=2).json()
    assert len(events["data"]) == 2 and events["next"] == 3 and events["has_more"]

    assert runner.invoke(app, ["eval", str(server["settings"].runs_dir / "cli-run"), "--data", str(data),
                               "--max-generate", "2"]).exit_code == 0
    evals = get(server, "/api/evals").json()["data"]
    assert evals[0]["run"] == "cli-run" and evals[0]["task"] == "sft" and evals[0]["generated"] == 2
    assert get(server, "/api/runs/cli-run").json()["evaluations"][0]["file"] == "eval-chats.json"

    for path in ("/api/datasets/ds-nope", "/api/runs/nope", "/api/runs/nope/events"):
        response = get(server, path)
        assert response.status_code == 404 and response.json()["error"]["message"]
    assert get(server, "/api/runs/cli-run/events", after=-1).status_code == 400
    assert httpx.get(server["url"].removesuffix("/v1") + "/api/runs").status_code == 401


def test_openapi_document_lists_both_surfaces(server):
    paths = httpx.get(server["url"].removesuffix("/v1") + "/openapi.json").json()["paths"]
    assert {"/v1/files", "/v1/fine_tuning/jobs", "/v1/chat/completions", "/v1/models", "/api/runs",
            "/api/datasets"} <= set(paths)
