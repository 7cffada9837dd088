"""Every route of the app, API and pages alike: without credentials it answers 401 (the API) or redirects to
the login page (pages), except a named allow-list; and each role that may not use it gets 403. A route that
is added without a rule here fails the test until someone decides who may use it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from tests.conftest import labelled_rows, live_server, write_jsonl

PUBLIC = {("GET", "/health"), ("GET", "/ready"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"),
          ("GET", "/docs/oauth2-redirect"), ("GET", "/login"), ("POST", "/login"), ("POST", "/logout")}
"""Routes anyone may call: liveness and readiness, the OpenAPI document and its viewers, logging in and out."""
PUBLIC_MOUNTS = {"/static"}

ADMIN, REVIEWER, ANNOTATOR, OUTSIDER = "admin", "reviewer", "annotator", "outsider"
"""Logged-in people: an admin, a reviewer and an annotator who are members of project `p`, and an annotator
who is not (the outsider)."""

PROJECT_RULES: dict[tuple[str, str], list[str]] = {
    ("GET", "/api/projects"): [],  # everyone sees the projects they belong to
    ("POST", "/api/projects"): [REVIEWER, ANNOTATOR],
    ("POST", "/api/projects/upload"): [REVIEWER, ANNOTATOR],
    ("GET", "/api/projects/{ref}"): [OUTSIDER],
    ("PATCH", "/api/projects/{ref}"): [REVIEWER, ANNOTATOR],
    ("POST", "/api/projects/{ref}/members"): [REVIEWER, ANNOTATOR],
    ("DELETE", "/api/projects/{ref}/members/{username}"): [REVIEWER, ANNOTATOR],
    ("PATCH", "/api/users/{username}"): [REVIEWER, ANNOTATOR],
    ("GET", "/api/projects/{ref}/next"): [OUTSIDER],
    ("POST", "/api/projects/{ref}/records/{record_id}/annotations"): [OUTSIDER],
    ("POST", "/api/projects/{ref}/records/{record_id}/skip"): [OUTSIDER],
    ("POST", "/api/projects/{ref}/undo"): [OUTSIDER],
    ("GET", "/api/projects/{ref}/records"): [OUTSIDER],
    ("GET", "/api/projects/{ref}/adjudication/next"): [ANNOTATOR, OUTSIDER],
    ("POST", "/api/projects/{ref}/records/{record_id}/adjudicate"): [ANNOTATOR, OUTSIDER],
    ("GET", "/api/projects/{ref}/records/{record_id}"): [ANNOTATOR, OUTSIDER],
    ("POST", "/api/projects/{ref}/annotations/{annotation_id}/review"): [ANNOTATOR],
    ("POST", "/api/projects/{ref}/bulk-accept"): [ANNOTATOR, OUTSIDER],
    ("POST", "/api/projects/{ref}/gold"): [ANNOTATOR, OUTSIDER],
    ("GET", "/api/projects/{ref}/export"): [ANNOTATOR, OUTSIDER],  # everyone's answers
    ("GET", "/api/projects/{ref}/export/summary"): [ANNOTATOR, OUTSIDER],
    ("POST", "/api/projects/{ref}/train"): [REVIEWER, ANNOTATOR],
    ("POST", "/api/projects/{ref}/repredict"): [REVIEWER, ANNOTATOR],
    ("GET", "/api/projects/{ref}/tasks"): [OUTSIDER],
    ("GET", "/api/users"): [REVIEWER, ANNOTATOR],
    ("POST", "/api/users"): [REVIEWER, ANNOTATOR],
    ("GET", "/"): [],
    ("GET", "/projects/{ref}"): [OUTSIDER],
    ("GET", "/projects/{ref}/queue"): [OUTSIDER],
    ("GET", "/projects/{ref}/adjudicate"): [ANNOTATOR, OUTSIDER],
    ("GET", "/projects/{ref}/table"): [OUTSIDER],
    ("GET", "/projects/{ref}/records/{record_id}"): [ANNOTATOR, OUTSIDER],
    ("GET", "/admin/users"): [REVIEWER, ANNOTATOR],
    ("GET", "/runs"): [ANNOTATOR],
    ("GET", "/jobs"): [ANNOTATOR],
    ("GET", "/runs/{run_id}"): [ANNOTATOR],
    ("GET", "/comparisons"): [ANNOTATOR],
    ("GET", "/comparisons/{comparison_id}"): [ANNOTATOR],
    ("GET", "/searches"): [ANNOTATOR],
    ("GET", "/searches/{search_id}"): [ANNOTATOR],
    ("POST", "/api/comparisons"): [REVIEWER, ANNOTATOR],  # starting one: admins (and keys)
    ("POST", "/api/comparisons/{comparison_id}/cancel"): [REVIEWER, ANNOTATOR],
    ("POST", "/api/arenas"): [REVIEWER, ANNOTATOR],
    ("POST", "/api/arenas/{ref}/judge"): [REVIEWER, ANNOTATOR],
    ("GET", "/api/arenas/{ref}"): [ANNOTATOR, OUTSIDER],
    ("GET", "/playground"): [ANNOTATOR],
    ("POST", "/api/playground"): [ANNOTATOR],
    ("POST", "/api/playground/{play_id}/slots/{slot}/stream"): [ANNOTATOR],
    ("POST", "/api/playground/{play_id}/judgement"): [ANNOTATOR],
}
BODIES: dict[tuple[str, str], dict[str, Any]] = {  # valid requests, so that what answers is the role check
    ("POST", "/api/projects"): {"json": {"name": "q", "data": "file-none"}},
    ("POST", "/api/projects/upload"): {"files": {"file": ("q.jsonl", b'{"text": "a"}\n')}, "data": {"name": "q"}},
    ("POST", "/api/projects/{ref}/members"): {"json": {"username": "out"}},
    ("PATCH", "/api/projects/{ref}"): {"json": {"hide_predictions": False}},
    ("PATCH", "/api/users/{username}"): {"json": {"role": "annotator"}},
    ("POST", "/api/projects/{ref}/records/{record_id}/annotations"): {"json": {"value": {"label": "billing"}}},
    ("POST", "/api/projects/{ref}/annotations/{annotation_id}/review"): {"json": {"accept": True}},
    ("POST", "/api/projects/{ref}/bulk-accept"): {"json": {"record_ids": [1]}},
    ("POST", "/api/projects/{ref}/gold"): {"json": {"record_ids": [1]}},
    ("POST", "/api/projects/{ref}/records/{record_id}/adjudicate"): {"json": {"value": {"label": "billing"}}},
    ("POST", "/api/projects/{ref}/train"): {"json": {}},
    ("POST", "/api/projects/{ref}/repredict"): {"json": {"model": "smollm2-135m-instruct"}},
    ("POST", "/api/users"): {"json": {"username": "zed", "password": "a-long-password-1", "role": "annotator"}},
    ("POST", "/api/comparisons"): {"json": {"candidates": ["zero-shot"], "data": "file-none"}},
    ("GET", "/api/comparisons/{comparison_id}/disagreements"): {"params": {"metric": "accuracy"}},
    ("POST", "/api/arenas"): {"json": {"name": "duel", "models": ["m1", "m2"], "data": "file-none"}},
    ("POST", "/api/arenas/{ref}/judge"): {"json": {"judge": "m1"}},
    ("POST", "/api/playground"): {"json": {"models": ["m1", "m2"], "prompt": "hi"}},
    ("POST", "/api/playground/{play_id}/slots/{slot}/stream"): {"json": {}},
    ("POST", "/api/playground/{play_id}/judgement"): {"json": {"winner": "A", "answers": {}}},
    ("GET", "/api/projects/{ref}/export"): {"params": {"as": "classify"}},
    ("GET", "/api/projects/{ref}/export/summary"): {"params": {"as": "classify"}},
}
PARAMS = {"ref": "p", "username": "out", "record_id": "1", "annotation_id": "1", "file_id": "file-none",
          "job_id": "ftjob-none", "model_id": "smollm2-135m-instruct", "run_id": "run-none", "eval_id": "eval-none",
          "output_item_id": "outputitem-none", "search_id": "search-none", "name": "history",
          "comparison_id": "cmp-none",
          "play_id": "play-none", "slot": "A"}


def forbidden_for(method: str, path: str) -> list[str]:
    """Who may not use a route. The OpenAI-compatible and native API: never annotators; a login only reads."""
    if (method, path) in PROJECT_RULES:
        return PROJECT_RULES[(method, path)]
    if path.startswith("/v1/"):
        return [ANNOTATOR] if method == "GET" else [ANNOTATOR, REVIEWER, ADMIN]
    if path.startswith(("/api/datasets", "/api/runs", "/api/evals", "/api/jobs", "/api/searches", "/api/comparisons")
                       ) and method == "GET":
        return [ANNOTATOR]
    if path.startswith(("/api/jobs", "/api/rewards", "/api/searches")) and method == "POST":  # like the OpenAI API
        return [ANNOTATOR, REVIEWER, ADMIN]
    raise AssertionError(f"{method} {path} has no access rule in tests/api/test_routes.py: decide who may use it")


def every_route(app) -> list[tuple[str, str]]:
    """(method, path) of every route, those of included routers with their prefixes."""
    routes = []
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, Mount):
            assert context.path in PUBLIC_MOUNTS, f"mounted app {context.path} is not in the allow-list"
            continue
        routes += [(method, context.path) for method in sorted(set(context.methods or ()) - {"HEAD"})]
    assert routes and len(set(routes)) == len(routes)
    return routes


def url(path: str) -> str:
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: PARAMS[m.group(1)], path)


def login(base: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": username, "password": password, "next": "/",
                                       "csrf": token}).status_code == 303
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)
    client.headers["X-CSRF-Token"] = csrf  # so a 403 below is about the role, never a missing token
    return client


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from tuneloop.services.auth import create_user
    from tuneloop.services.review import projects

    data = write_jsonl(tmp_path_factory.mktemp("routes-data") / "t.jsonl", labelled_rows(12))
    for server in live_server(tmp_path_factory.mktemp("routes-home"), with_worker=False):
        people = {ADMIN: "ada", REVIEWER: "rev", ANNOTATOR: "ann", OUTSIDER: "out"}
        with server["app"].state.sessions() as session:
            for role, name in people.items():
                create_user(session, username=name, password=f"{name}-password-1",
                            role=ANNOTATOR if role == OUTSIDER else role)
            project = projects.create_project(session, server["settings"], name="p", task="classification",
                                              data=str(data), labels=["billing", "shipping", "technical"])
            for name in ("ada", "rev", "ann"):
                projects.add_member(session, project, name)
        clients = {role: login(server["base"], name, f"{name}-password-1") for role, name in people.items()}
        yield {**server, "people": clients}
        for client in clients.values():
            client.close()


def test_every_route_needs_credentials_except_the_allow_list(env):
    anonymous = httpx.Client(base_url=env["base"], timeout=30, follow_redirects=False)
    checked = 0
    for method, path in every_route(env["app"]):
        if (method, path) in PUBLIC:
            continue
        response = anonymous.request(method, url(path), **BODIES.get((method, path), {}))
        if path.startswith(("/v1/", "/api/")):
            assert response.status_code == 401, (method, path, response.status_code, response.text)
            assert response.json()["error"]["type"] == "authentication_error"
        else:
            assert response.status_code in (302, 303, 307), (method, path, response.status_code)
            assert response.headers["location"].startswith("/login"), (method, path)
        checked += 1
    assert checked >= 50, checked  # every API route and page, not a few


def test_every_public_route_answers_without_credentials(env):
    anonymous = httpx.Client(base_url=env["base"], timeout=30, follow_redirects=False)
    for method, path in sorted(PUBLIC):
        if (method, path) == ("POST", "/login"):
            continue  # answered below with a form
        assert anonymous.request(method, path).status_code in (200, 303), (method, path)
    assert anonymous.post("/login", data={"username": "x", "password": "y", "csrf": "z"}).status_code == 403
    from tuneloop.web.pages import STATIC

    shipped = sorted(p.name for p in STATIC.iterdir() if p.is_file())
    assert shipped and all(anonymous.get(f"/static/{name}").status_code == 200 for name in shipped)


def test_every_role_that_may_not_use_a_route_gets_403(env):
    checked = []
    for method, path in every_route(env["app"]):
        if (method, path) in PUBLIC:
            continue
        for role in forbidden_for(method, path):
            response = env["people"][role].request(method, url(path), follow_redirects=False,
                                                   **BODIES.get((method, path), {}))
            assert response.status_code == 403, (role, method, path, response.status_code, response.text[:300])
            if path.startswith(("/v1/", "/api/")):
                assert response.json()["error"]["code"] != "csrf", (role, method, path)
            checked.append((role, method, path))
    assert len(checked) >= 40, checked


def test_the_roles_that_may_use_a_route_are_not_refused(env):
    """The other side of the rules: a member reaches what its role allows (any answer but 401 and 403)."""
    for method, path in [("GET", "/api/projects/{ref}"), ("GET", "/api/projects/{ref}/records"),
                         ("GET", "/projects/{ref}/queue"), ("GET", "/v1/models"), ("GET", "/runs")]:
        allowed = [r for r in (ADMIN, REVIEWER, ANNOTATOR) if r not in forbidden_for(method, path)]
        for role in allowed:
            response = env["people"][role].request(method, url(path), follow_redirects=False)
            assert response.status_code not in (401, 403), (role, method, path, response.status_code)
