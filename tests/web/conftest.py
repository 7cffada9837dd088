"""A live server with review projects and people, and Debian's Chromium driven by Playwright (headless).
Screenshots go to artifacts/screenshots/ for people to look at."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import chat_rows, labelled_rows, live_server, write_jsonl

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORDS = {"admin": "admin-pass-1", "rev": "reviewer-pass-1", "ann": "annotator-pass-1", "other": "other-pass-1"}


@pytest.fixture(scope="module")
def review_server(tmp_path_factory, tiny_chat_model):
    """Users admin/rev/ann/other; 'tickets' (classification, pre-labelled by a real local model) and
    'answers' (response correction, drafts by that model) with ann and rev as members; 'private' without them."""
    from tuneloop.services.auth import create_user
    from tuneloop.services.review import prelabel, projects

    home = tmp_path_factory.mktemp("review-home")
    data = tmp_path_factory.mktemp("review-data")
    for server in live_server(home, with_worker=False):
        settings = server["settings"]
        with server["app"].state.sessions() as session:
            for name, password in PASSWORDS.items():
                create_user(session, username=name, password=password,
                            role={"admin": "admin", "rev": "reviewer"}.get(name, "annotator"))
            tickets = projects.create_project(session, settings, name="tickets", task="classification",
                                              data=str(write_jsonl(data / "t.jsonl", labelled_rows(24))),
                                              guidelines="Route each request to the team that can solve it.")
            answers = projects.create_project(session, settings, name="answers", task="response",
                                              data=str(write_jsonl(data / "c.jsonl", chat_rows(6))))
            projects.create_project(session, settings, name="private", task="classification",
                                    data=str(write_jsonl(data / "p.jsonl", labelled_rows(6))))
            pairs = [{"prompt": f"Greet person {i}", "chosen": f"Hello, person {i}!", "rejected": "Go away."}
                     for i in range(3)]
            prefs = projects.create_project(session, settings, name="prefs", task="preference",
                                            data=str(write_jsonl(data / "pairs.jsonl", pairs)))
            rated = projects.create_project(session, settings, name="rated", task="rating",
                                            data=str(write_jsonl(data / "rated.jsonl", chat_rows(3))))
            for project in (tickets, answers, prefs, rated):
                for name in ("ann", "rev"):
                    projects.add_member(session, project, name)
            model = prelabel.LocalModel(str(tiny_chat_model), settings, name="tiny-chat", max_tokens=8)
            prelabel.prelabel(session, tickets, model)
            prelabel.prelabel(session, answers, model)
        yield server


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/system-deps.sh installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def login(browser, review_server):
    """login(name) -> a page logged in as that user, through the login form."""
    contexts = []

    def _login(name: str):
        page = log_in(browser, review_server["base"], name, PASSWORDS[name])
        contexts.append(page.context)
        return page

    yield _login
    for context in contexts:
        context.close()


def log_in(browser, base: str, name: str, password: str):
    """A page of a new browser context, logged in as `name` through the login form."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(base + "/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    return page


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

