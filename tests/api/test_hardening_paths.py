"""What API clients may name: a project's data is an upload, an uploaded file id, a dataset version, or a file in
a folder of TUNELOOP_ALLOWED_PATHS; any other server path gets one message that tells nothing about it. Uploaded
file names keep their last part only, and messages name an upload as its client named it, never where it is kept."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.conftest import labelled_rows, live_server, write_jsonl


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A server (API key: admin) that allows one folder, and an annotator 'ann' logged in with a session cookie."""
    from tuneloop.services.auth import create_user

    allowed = tmp_path_factory.mktemp("allowed")
    for server in live_server(tmp_path_factory.mktemp("paths-home"), with_worker=False, allowed_paths=[allowed]):
        with server["app"].state.sessions() as session:
            create_user(session, username="ann", password="annotator-pass-1", role="annotator")
        api = httpx.Client(base_url=server["base"], headers={"Authorization": f"Bearer {server['key']}"}, timeout=30)
        ann = httpx.Client(base_url=server["base"], timeout=30)
        token = re.search(r'name="csrf" value="([^"]+)"', ann.get("/login").text).group(1)
        ann.post("/login", data={"username": "ann", "password": "annotator-pass-1", "next": "/", "csrf": token})
        yield {**server, "api": api, "ann": ann, "allowed": allowed}
        api.close()
        ann.close()


def _jsonl(rows: list) -> bytes:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows).encode()


def test_server_paths_outside_the_allowed_folders_are_refused_alike(env, tmp_path_factory):
    outside = write_jsonl(tmp_path_factory.mktemp("outside") / "t.jsonl", labelled_rows(6))
    (env["allowed"] / "link.jsonl").symlink_to(outside)
    refused = ["/etc/shadow", "/etc/passwd", "/nonexistent/t.jsonl", "../../../etc", str(outside),
               str(env["allowed"] / ".." / outside.parent.name / "t.jsonl"), str(env["allowed"] / "link.jsonl")]
    errors = []
    for data in refused:
        response = env["api"].post("/api/projects", json={"name": "p", "data": data})
        assert response.status_code == 404, (data, response.text)
        errors.append(response.json()["error"])
    assert all(error == errors[0] for error in errors), errors  # nothing tells one path from another
    assert errors[0]["param"] == "data"
    assert "/" not in errors[0]["message"].replace("POST /api/projects/upload", "").replace("POST /v1/files", "")
    assert env["api"].get("/api/projects/p").status_code == 404


def test_allowed_files_uploaded_files_and_dataset_versions_make_projects(env):
    from tuneloop.data.dataset import Source, load_records
    from tuneloop.data.versions import store_version
    from tuneloop.store import review as store

    api = env["api"]
    inside = write_jsonl(env["allowed"] / "inside.jsonl", labelled_rows(6))
    assert api.post("/api/projects", json={"name": "inside", "data": str(inside)}).json()["records"] == 6

    upload = api.post("/v1/files", files={"file": ("tickets.jsonl", _jsonl(labelled_rows(5)))},
                      data={"purpose": "user_data"}).json()
    by_id = api.post("/api/projects", json={"name": "by-id", "data": upload["id"]})
    assert by_id.status_code == 200, by_id.text
    assert by_id.json()["records"] == 5
    with env["app"].state.sessions() as session:
        project = store.find_project(session, ref="by-id")
        assert {r.source.split("@")[0] for r in store.all_records(session, project_id=project.id)} == {"tickets.jsonl"}
    missing = api.post("/api/projects", json={"name": "nope", "data": "file-nope"})
    assert (missing.status_code, missing.json()["error"]["param"]) == (404, "data")

    fmt, numbered = load_records(Source(inside))
    version = store_version(env["settings"].datasets_dir, "imported", fmt, inside, numbered, {})
    for name, ref in (("by-version", version.id), ("by-name", "imported")):
        created = api.post("/api/projects", json={"name": name, "data": ref})
        assert created.status_code == 200, created.text
        assert created.json()["records"] == 6


@pytest.mark.parametrize("route", ["/api/projects/upload", "/api/projects"])
def test_a_bad_upload_is_named_as_uploaded_never_by_where_it_is_kept(env, route):
    api = env["api"]
    for filename, content, expected in (("empty.jsonl", b"", "empty.jsonl: no records"),
                                        ("broken.jsonl", _jsonl([{"text": "fine", "label": "a"}, "{not json"]),
                                         "broken.jsonl: 1 problem(s): line 2"),
                                        ("binary.jsonl", b"\x00\x01", "binary.jsonl is a binary file")):
        if route == "/api/projects":
            upload = api.post("/v1/files", files={"file": (filename, content)}, data={"purpose": "user_data"}).json()
            response = api.post(route, json={"name": "bad", "data": upload["id"]})
        else:
            response = api.post(route, files={"file": (filename, content)}, data={"name": "bad"})
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        assert expected in message
        assert not re.search(r"[0-9a-f]{64}|files/", message), message


@pytest.mark.parametrize("route", ["/v1/files", "/api/projects/upload"])
def test_an_upload_keeps_only_the_last_part_of_its_name(env, route):
    api = env["api"]
    body = _jsonl([{"text": f"request {i}"} for i in range(3)])
    if route == "/v1/files":
        stored = api.post(route, files={"file": ("../../etc/passwd.jsonl", body)}, data={"purpose": "user_data"}).json()
    else:
        created = api.post(route, files={"file": ("..\\..\\etc\\passwd.jsonl", body)},
                           data={"name": "named", "labels": "a,b"})
        assert created.status_code == 200, created.text
        stored = api.get("/v1/files", params={"purpose": "user_data", "limit": 1}).json()["data"][0]  # the newest
    assert stored["filename"] == "passwd.jsonl"
    content = api.get(f"/v1/files/{stored['id']}/content")
    assert content.headers["content-disposition"] == 'attachment; filename="passwd.jsonl"'
    assert content.content == body


def test_a_refusal_names_the_role_with_the_right_article(env):
    refused = env["ann"].get("/api/users")
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "'ann' is an annotator; this needs an admin"
