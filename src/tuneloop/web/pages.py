"""The browser UI: server-rendered Jinja2 pages; small scripts in static/ call /api for the live parts.
No front-end build step."""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from markupsafe import Markup

from tuneloop.web.session import SessionDep, SettingsDep, csrf_token, session_user
from tuneloop.services import ServiceError, catalog
from tuneloop.services.auth import authenticate, check_project_access, require_admin, require_reviewer
from tuneloop.services.review import projects, queue
from tuneloop.services.review.tasks import task_of, task_titles
from tuneloop.store import review as store
from tuneloop.store.tables import User

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["tojson_attr"] = lambda value: json.dumps(value)


def _when(at: float | None) -> str:
    """A stored Unix time as people read it (UTC; the page turns it into local time)."""
    return "" if at is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _readable(value: Any) -> str:
    """An answer or a history snapshot as words: `label: billing · comment: fine`, lists joined, long text cut."""
    if value is None:
        return ""
    if not isinstance(value, dict):
        return str(value)
    parts = []
    for key, item in value.items():
        if item is None or item == "" or key in ("diff",):
            continue
        if isinstance(item, dict):
            item = _readable(item)
        elif isinstance(item, list):
            item = ", ".join(str(x) for x in item)
        text = str(item)
        parts.append(f"{key}: {text if len(text) <= 200 else text[:197] + '...'}")
    return " · ".join(parts)


_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False})
"""Guidelines are Markdown; raw HTML in them is shown as text and unsafe links (javascript:) are dropped."""


templates.env.filters["markdown"] = lambda text: Markup(_MARKDOWN.render(text or ""))
templates.env.filters["when"] = _when
templates.env.filters["readable"] = _readable

router = APIRouter(include_in_schema=False)


class LoginThrottle:
    """After `limit` failed logins for one username from one address within `window` seconds, further
    tries are refused until the oldest failure ages out (per server process)."""

    def __init__(self, limit: int = 5, window: float = 300.0):
        self.limit, self.window = limit, window
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, key: tuple[str, str]) -> float:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(key, []) if now - t < self.window]
            self._failures[key] = recent
            return self.window - (now - recent[0]) if len(recent) >= self.limit else 0.0

    def failed(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.setdefault(key, []).append(time.monotonic())

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)


throttle = LoginThrottle()


class LoginRequired(Exception):
    """A page asked for without a session: the app answers with a redirect to /login."""

    def __init__(self, next_url: str):
        self.next_url = next_url


def login_redirect(request: Request, e: LoginRequired) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(e.next_url)}", status_code=303)


class PageError(Exception):
    """A page that cannot be shown to this person (403, 404): the app renders error.html with the reason."""

    def __init__(self, user: User, error: ServiceError):
        self.user, self.error = user, error


def page_error(request: Request, e: PageError) -> HTMLResponse:
    return render(request, "error.html", e.user, status=e.error.status, error=e.error)


def _user(request: Request, session: Any) -> User:
    user = session_user(request, session)
    if user is None:
        raise LoginRequired(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""))
    return user


def render(request: Request, name: str, user: User | None, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"user": user, "csrf": csrf_token(request), **context},
                                      status_code=status)


@router.get("/login")
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", None, next=next if next.startswith("/") else "/", failed=False)


@router.post("/login", response_model=None)
def login(request: Request, session: SessionDep, username: str = Form(...), password: str = Form(...),
          next: str = Form("/"), csrf: str = Form("")) -> Response:
    expected = request.session.get("csrf")
    if not expected or not secrets.compare_digest(expected, csrf):  # a form from another site cannot log you in
        return render(request, "login.html", None, status=403, next=next, failed=False, expired=True,
                      username=username)
    key = (username.lower(), request.client.host if request.client else "")
    if (wait := throttle.wait_seconds(key)) > 0:
        return render(request, "login.html", None, status=429, next=next, failed=False, username=username,
                      wait=int(wait) + 1)
    user = authenticate(session, username=username, password=password)
    if user is None:
        throttle.failed(key)
        return render(request, "login.html", None, status=401, next=next, failed=True, username=username)
    throttle.succeeded(key)
    request.session.clear()
    request.session["user_id"] = user.id
    return RedirectResponse(next if next.startswith("/") and not next.startswith("//") else "/", status_code=303)


@router.post("/logout")
def logout(request: Request) -> RedirectResponse:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/")
def home(request: Request, session: SessionDep) -> HTMLResponse:
    user = _user(request, session)
    rows = [projects.counters(session, p) for p in projects.visible_projects(session, user)]
    return render(request, "projects.html", user, projects=rows, tasks=task_titles())


def _member_project(session: Any, user: User, ref: str) -> Any:
    """The project, when this person may see it; otherwise the 403/404 page."""
    try:
        project = projects.get_project(session, ref)
        check_project_access(session, user, project)
    except ServiceError as e:
        raise PageError(user, e) from None
    return project


@router.get("/projects/{ref}", response_model=None)
def project_page(request: Request, session: SessionDep, ref: str) -> HTMLResponse:
    user = _user(request, session)
    project = _member_project(session, user, ref)
    return render(request, "project.html", user, project=project, task=task_of(project))


@router.get("/projects/{ref}/queue", response_model=None)
def queue_page(request: Request, session: SessionDep, ref: str, order: str = "uncertainty") -> HTMLResponse:
    user = _user(request, session)
    project = _member_project(session, user, ref)
    return render(request, "queue.html", user, project=project, task=task_of(project), order=order,
                  orders=queue.ORDERS, mode="label")


@router.get("/projects/{ref}/adjudicate", response_model=None)
def adjudicate_page(request: Request, session: SessionDep, ref: str) -> HTMLResponse:
    """The queue page, for reviewers, over the records whose people disagree."""
    user = _user(request, session)
    project = _member_project(session, user, ref)
    try:
        require_reviewer(user)
    except ServiceError as e:
        raise PageError(user, e) from None
    return render(request, "queue.html", user, project=project, task=task_of(project), order="id", orders=[],
                  mode="adjudicate")


@router.get("/projects/{ref}/table", response_model=None)
def table_page(request: Request, session: SessionDep, ref: str) -> HTMLResponse:
    user = _user(request, session)
    project = _member_project(session, user, ref)
    people = [u.username for u in store.members(session, project_id=project.id)]
    return render(request, "table.html", user, project=project, task=task_of(project), people=people,
                  sorts=list(store.SORTS))


@router.get("/projects/{ref}/records/{record_id}", response_model=None)
def record_page(request: Request, session: SessionDep, ref: str, record_id: int) -> HTMLResponse:
    user = _user(request, session)
    project = _member_project(session, user, ref)
    try:
        if user.role == "annotator":
            raise ServiceError(403, "a record's annotations and their history are for reviewers and admins",
                               None, "forbidden")
        detail = queue.record_detail(session, project, record_id)
    except ServiceError as e:
        raise PageError(user, e) from None
    return render(request, "record.html", user, project=project, record=detail)


@router.get("/admin/users", response_model=None)
def users_page(request: Request, session: SessionDep) -> HTMLResponse:
    user = _user(request, session)
    try:
        require_admin(user)
    except ServiceError as e:
        raise PageError(user, e) from None
    return render(request, "users.html", user, users=store.list_users(session),
                  projects=projects.visible_projects(session, user))


@router.get("/runs", response_model=None)
def runs_page(request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    user = _user(request, session)
    _not_for_annotators(user)
    return render(request, "runs.html", user, runs=catalog.runs(settings))


@router.get("/runs/{run_id}", response_model=None)
def run_page(request: Request, session: SessionDep, settings: SettingsDep, run_id: str) -> HTMLResponse:
    user = _user(request, session)
    _not_for_annotators(user)
    try:
        run = catalog.run(settings, run_id)
        lineage = catalog.lineage(session, settings, run_id)
    except ServiceError as e:
        raise PageError(user, e) from None
    return render(request, "run.html", user, run=run, lineage=lineage)


@router.get("/comparisons", response_model=None)
def comparisons_page(request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """Every comparison, and (for admins) a form that queues one; comparisons.js follows those still running."""
    user = _user(request, session)
    _not_for_annotators(user, "comparisons")
    from tuneloop.services.comparison_jobs import list_comparisons

    return render(request, "comparisons.html", user, comparisons=list_comparisons(session, settings))


@router.get("/comparisons/{comparison_id}", response_model=None)
def comparison_page(request: Request, session: SessionDep, settings: SettingsDep, comparison_id: str) -> HTMLResponse:
    """One comparison's table; each metric row opens the items behind its differences, side by side."""
    user = _user(request, session)
    _not_for_annotators(user, "comparisons")
    from tuneloop.services.comparison_jobs import get_comparison

    try:
        comparison = get_comparison(session, settings, comparison_id)
    except ServiceError as e:
        raise PageError(user, e) from None
    return render(request, "comparison.html", user, c=comparison)


@router.get("/playground", response_model=None)
def playground_page(request: Request, session: SessionDep) -> HTMLResponse:
    """2-4 models side by side on one prompt, names hidden until judged (playground.js)."""
    user = _user(request, session)
    _not_for_annotators(user, "the playground")
    return render(request, "playground.html", user)


@router.get("/searches", response_model=None)
def searches_page(request: Request, session: SessionDep) -> HTMLResponse:
    user = _user(request, session)
    _not_for_annotators(user, "searches")
    from tuneloop.services import searches

    rows = [{"search": r, "status": searches.status(searches.trial_jobs(session, r))}
            for r in searches.list_searches(session)]
    return render(request, "searches.html", user, searches=rows)


@router.get("/searches/{search_id}", response_model=None)
def search_page(request: Request, session: SessionDep, settings: SettingsDep, search_id: str) -> HTMLResponse:
    """A search's trials, its best recipe and Optuna's plots; reloaded while trials run."""
    user = _user(request, session)
    _not_for_annotators(user, "searches")
    from tuneloop.services import searches

    try:
        view = searches.search_view(session, settings, searches.require_search(session, search_id))
    except ServiceError as e:
        raise PageError(user, e) from None
    return render(request, "search.html", user, s=view)


@router.get("/jobs", response_model=None)
def jobs_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Jobs of every kind; jobs.js loads them from /api/jobs and follows them while they run."""
    user = _user(request, session)
    _not_for_annotators(user, "jobs")
    return render(request, "jobs.html", user)


def _not_for_annotators(user: User, what: str = "training runs") -> None:
    if user.role == "annotator":
        raise PageError(user, ServiceError(403, f"{what} are for admins and reviewers"))
