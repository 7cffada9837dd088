"""The review UI in a real browser: log in, label with the keyboard only, review, correct a response,
export, and what people without the rights cannot see."""

from __future__ import annotations

import json
import re

import httpx
from playwright.sync_api import expect

from tests.web.conftest import PASSWORDS, screenshot


def answer_and_move_on(page, key="1"):
    """Press `key` and Enter on the record on screen, once one is there, and wait for the queue to move on; returns
    the answered record's id. (Reading the id before the first record has arrived gives None, and then nothing waits.)"""
    record = page.locator("#record")
    expect(record).to_have_attribute("data-record-id", re.compile(r"^\d+$"))
    shown = record.get_attribute("data-record-id")
    page.keyboard.press(key)
    page.keyboard.press("Enter")
    expect(record).not_to_have_attribute("data-record-id", shown)
    return shown


def _annotations(server, project_name: str, username: str, status: str = "submitted"):
    from tuneloop.store import review as store

    with server["app"].state.sessions() as session:
        user = store.user_by_name(session, username=username)
        project = store.find_project(session, ref=project_name)
        return [a for a in store.project_annotations(session, project_id=project.id, statuses=(status,))
                if a.user_id == user.id]


def test_pages_need_a_login(review_server, browser):
    page = browser.new_page()
    page.goto(review_server["base"] + "/projects/tickets/queue")
    assert page.url.startswith(review_server["base"] + "/login?next=/projects/tickets/queue")
    page.fill("input[name=username]", "ann")
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    page.close()
    response = httpx.get(review_server["base"] + "/api/projects/tickets/next")
    assert response.status_code == 401
    assert "log in" in response.json()["error"]["message"]


def test_repeated_wrong_passwords_are_throttled(review_server):
    client = httpx.Client(base_url=review_server["base"])

    def attempt(password):
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        return client.post("/login", data={"username": "other", "password": password, "next": "/", "csrf": token})

    assert [attempt("wrong").status_code for _ in range(5)] == [401] * 5
    blocked = attempt(PASSWORDS["other"])  # even the right password waits now
    assert blocked.status_code == 429 and "Too many failed attempts" in blocked.text
    assert client.get("/").status_code == 303


def test_label_five_records_with_the_keyboard_only(review_server, login):
    page = login("ann")
    page.goto(review_server["base"] + "/projects/tickets/queue?order=id")
    expect(page.get_by_test_id("legend")).to_contain_text("Enter")
    labels = ["billing", "shipping", "technical"]
    pressed = {}
    record_id = None
    for i in range(5):
        record = page.locator("#record")
        if record_id is not None:
            expect(record).not_to_have_attribute("data-record-id", str(record_id))
        expect(record).to_have_attribute("data-record-id", re.compile(r"^\d+$"))
        record_id = int(record.get_attribute("data-record-id"))
        key = str(i % 3 + 1)
        page.keyboard.press(key)
        expect(page.locator(f'#answer [data-key="{key}"]')).to_have_class("selected focused")
        if i == 1:
            screenshot(page, "queue")
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("queue-counters")).to_have_attribute("data-mine", str(i + 1))
        pressed[record_id] = labels[i % 3]
    # Ctrl+Z brings the last record back with its answer selected; a different label replaces it
    page.keyboard.press("Control+z")
    expect(page.get_by_test_id("queue-counters")).to_have_attribute("data-mine", "4")
    last = max(pressed)
    expect(page.locator("#record")).to_have_attribute("data-record-id", str(last))
    expect(page.locator("#answer .selected")).to_have_attribute("data-label", pressed[last])
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("queue-counters")).to_have_attribute("data-mine", "5")
    expect(page.locator("#record")).not_to_have_attribute("data-record-id", str(last))
    pressed[last] = labels[(labels.index(pressed[last]) + 1) % 3]
    page.keyboard.press("s")  # skip one
    expect(page.get_by_test_id("queue-counters")).to_contain_text("1 skipped")

    stored = {a.record_id: a.value["label"] for a in _annotations(review_server, "tickets", "ann")}
    assert stored == pressed
    withdrawn = _annotations(review_server, "tickets", "ann", "withdrawn")
    assert [a.record_id for a in withdrawn] == [last]  # the undone answer is kept, marked withdrawn

    page.goto(review_server["base"] + "/projects/tickets")
    expect(page.get_by_test_id("count-annotated")).to_have_text("5")
    expect(page.get_by_test_id("count-open")).to_have_text("19")
    expect(page.locator('#people tr[data-person="ann"] td').nth(1)).to_have_text("5")
    expect(page.locator("#models")).to_contain_text("on 5 records")  # the pre-labelling model against ann
    expect(page.get_by_test_id("per-label")).to_contain_text("billing")
    screenshot(page, "project")


def test_reviewer_rejects_and_the_record_returns_to_the_queue(review_server, login):
    first = min(a.record_id for a in _annotations(review_server, "tickets", "ann"))
    page = login("rev")
    page.goto(review_server["base"] + "/projects/tickets/table")
    row = page.locator(f'#records tr[data-id="{first}"]')
    expect(row).to_contain_text("ann:")
    page.once("dialog", lambda dialog: dialog.accept("this is about shipping, not billing"))
    row.locator("[data-reject]").click()
    expect(row).to_contain_text("rejected")
    expect(row.locator("td").nth(3)).to_contain_text("open")
    screenshot(page, "table")

    rejected = _annotations(review_server, "tickets", "ann", "rejected")
    assert [a.record_id for a in rejected] == [first]
    assert rejected[0].review_comment == "this is about shipping, not billing"

    annotator = login("ann")
    annotator.goto(review_server["base"] + "/projects/tickets/queue?order=id")
    expect(annotator.locator("#record")).to_have_attribute("data-record-id", str(first))
    expect(annotator.locator("#banner")).to_contain_text("this is about shipping, not billing")


def test_table_filters_and_bulk_accept(review_server, login):
    page = login("rev")
    page.goto(review_server["base"] + "/projects/tickets/table")
    expect(page.get_by_test_id("total")).to_have_text("24 records")
    page.select_option("select[name=status]", "annotated")
    page.click("#filters button[type=submit]")
    expect(page.get_by_test_id("total")).to_have_text("4 records")
    page.fill("input[name=search]", "number 2 ")
    page.select_option("select[name=status]", "")
    page.click("#filters button[type=submit]")
    expect(page.get_by_test_id("total")).to_have_text("1 records")
    page.fill("input[name=search]", "")
    page.select_option("select[name=status]", "open")
    page.select_option("select[name=sort]", "id")
    page.check("input[name=descending]")
    page.click("#filters button[type=submit]")
    expect(page.locator("#records tbody tr").first).to_have_attribute("data-id", "24")
    # the view is in the address: a reload (or the link, shared) shows the same filters and sort
    assert re.search(r"status=open.*sort=id.*descending=true", page.url), page.url
    page.reload()
    expect(page.locator("select[name=status]")).to_have_value("open")
    expect(page.locator("input[name=descending]")).to_be_checked()
    expect(page.locator("#records tbody tr").first).to_have_attribute("data-id", "24")
    open_before = int(page.get_by_test_id("total").inner_text().split()[0])
    page.locator('#records tr[data-id="24"] .pick').check()
    page.locator('#records tr[data-id="23"] .pick').check()
    page.click("#bulk-accept")
    expect(page.get_by_test_id("bulk-message")).to_have_text("Accepted the model's label on 2 record(s).")
    expect(page.get_by_test_id("total")).to_have_text(f"{open_before - 2} records")
    accepted = [a for a in _annotations(review_server, "tickets", "rev", "accepted") if a.source == "model"]
    assert sorted(a.record_id for a in accepted) == [23, 24] and {a.model for a in accepted} == {"tiny-chat"}
    # the rows say the label is the model's, accepted by rev; they are settled, and the counters agree
    page.select_option("select[name=status]", "accepted")
    page.click("#filters button[type=submit]")
    expect(page.get_by_test_id("total")).to_have_text("2 records")
    row = page.locator('#records tr[data-id="24"]')
    expect(row.locator('[data-source="model"]')).to_contain_text("model tiny-chat (accepted by rev)")
    expect(row.get_by_test_id("answer-source")).to_have_text("model's label")
    page.goto(review_server["base"] + "/projects/tickets")
    expect(page.get_by_test_id("count-accepted")).to_have_text("2")
    # a record that people answered is left as it was, and the message says why
    page.goto(review_server["base"] + "/projects/tickets/table?status=annotated")
    expect(page.get_by_test_id("total")).to_have_text("4 records")
    page.locator("#records tbody .pick").first.check()
    page.click("#bulk-accept")
    expect(page.get_by_test_id("bulk-message")).to_have_text(
        "Accepted the model's label on 0 record(s); left as they were: 1 settled already.")


def test_annotators_cannot_bulk_accept(review_server, login):
    page = login("ann")
    page.goto(review_server["base"] + "/projects/tickets/table")
    expect(page.get_by_test_id("total")).to_contain_text("records")
    expect(page.locator("#bulk-accept")).to_have_count(0)
    answer = page.evaluate("""async () => {
        const r = await fetch('/api/projects/tickets/bulk-accept', {method: 'POST', credentials: 'same-origin',
          headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf()}, body: JSON.stringify({record_ids: [1]})});
        return [r.status, (await r.json()).error.message];
    }""")
    assert answer == [403, "'ann' is an annotator; accepting and rejecting needs a reviewer"]


def test_response_correction_saves_the_edit_and_its_diff(review_server, login):
    page = login("ann")
    page.goto(review_server["base"] + "/projects/answers/queue?order=id")
    editor = page.get_by_test_id("editor")
    expect(editor).to_be_visible()
    draft = editor.input_value()
    drafted_by = page.get_by_test_id("draft-model").inner_text()
    page.keyboard.press("e")
    page.keyboard.press("Control+a")
    page.keyboard.type("The answer is 0.")
    expect(page.get_by_test_id("diff").locator("ins")).to_have_text("The answer is 0.")
    if draft:
        expect(page.get_by_test_id("diff").locator("del")).to_have_text(draft)
    screenshot(page, "queue-response")
    page.keyboard.press("Control+Enter")
    expect(page.get_by_test_id("queue-counters")).to_have_attribute("data-mine", "1")
    [saved] = _annotations(review_server, "answers", "ann")
    assert saved.value["text"] == "The answer is 0."
    assert saved.value["draft"] == draft and saved.value["draft_model"] == drafted_by
    assert saved.value["edited"] is True
    assert "+The answer is 0." in saved.value["diff"]


def test_preference_and_rating_with_the_keyboard(review_server, login):
    page = login("ann")
    page.goto(review_server["base"] + "/projects/prefs/queue?order=id")
    expect(page.get_by_test_id("option-B")).to_be_visible()
    shown_as_b = page.get_by_test_id("option-B").inner_text()
    assert "tiny" not in page.locator("#answer").inner_text()  # no model names
    page.keyboard.press("2")
    expect(page.get_by_test_id("option-B")).to_have_class("option selected focused")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("queue-counters")).to_have_attribute("data-mine", "1")
    [choice] = _annotations(review_server, "prefs", "ann")
    with review_server["app"].state.sessions() as session:
        from tuneloop.store import review as store

        answers = store.get_record(session, project_id=choice.project_id, record_id=choice.record_id).data["answers"]
    assert answers[choice.value["preferred"]] in shown_as_b  # what was shown as B is what got stored

    page.goto(review_server["base"] + "/projects/rated/queue?order=id")
    expect(page.locator("#answer [data-label='4']")).to_be_visible()
    page.keyboard.press("4")
    page.keyboard.press("c")
    page.keyboard.type("Right, but terse.")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("queue-counters")).to_have_attribute("data-mine", "1")
    [rating] = _annotations(review_server, "rated", "ann")
    assert rating.value == {"rating": 4, "label": "4", "comment": "Right, but terse."}


def test_runs_page_shows_the_loss_curve_and_events(review_server, login, tiny_chat_model, tmp_path):
    from tests.conftest import chat_rows, write_jsonl
    from tuneloop.config.recipe import parse_recipe
    from tuneloop.engine.loop import train

    data = write_jsonl(tmp_path / "chats.jsonl", chat_rows(8))
    recipe = parse_recipe({"model": str(tiny_chat_model), "data": {"train": [str(data)]},
                           "hyperparameters": {"max_steps": 4, "batch_size": 2}})
    run = train(recipe, review_server["settings"]).run_dir
    page = login("rev")
    page.goto(review_server["base"] + "/runs")
    page.click(f"text={run.name}")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#loss-chart svg path")).to_have_count(1)
    expect(page.locator("#events li").filter(has_text="step 4/4")).to_have_count(1)
    screenshot(page, "run")


def test_an_rl_runs_page_shows_its_rewards_and_latest_rollouts(review_server, login, tiny_chat_model, tmp_path):
    """A person spots reward hacking where they look: the reward curve, and what the completions said for it."""
    import tuneloop.evals.rl  # noqa: F401 - the grader reward source, as the CLI and the worker import it
    from tests.conftest import write_jsonl
    from tuneloop.config.recipe import parse_recipe
    from tuneloop.engine.loop import train

    rows = [{"messages": [{"role": "user", "content": f"which team handles ticket {i}?"}], "team": "a"} for i in range(8)]
    grader = {"type": "string_check", "name": "has_a", "input": "{{ sample.output_text }}",
              "reference": "{{ item.team }}", "operation": "like"}
    recipe = parse_recipe({"model": str(tiny_chat_model), "method": "grpo", "data": {"train": [str(write_jsonl(
        tmp_path / "prompts.jsonl", rows))]}, "hyperparameters": {"max_steps": 3, "batch_size": 2},
        "grpo": {"rewards": [{"grader": grader}], "num_generations": 2, "max_completion_length": 6,
                 "log_completions": 2}})
    run = train(recipe, review_server["settings"]).run_dir
    page = login("rev")
    page.goto(review_server["base"] + f"/runs/{run.name}")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.get_by_test_id("rewards-chart").locator("svg path")).to_have_count(1)  # the mean reward per step
    expect(page.get_by_test_id("rollouts").locator("tbody tr")).to_have_count(6)  # 2 a step, newest first
    first = page.get_by_test_id("rollouts").locator("tbody tr").first
    expect(first.locator("td").first).to_have_text("3")
    expect(first).to_contain_text("which team handles ticket")


def test_export_gives_the_expected_jsonl(review_server, browser):
    """Exports what the browser tests above labelled (so it needs the browser they ran in)."""
    headers = {"Authorization": f"Bearer {review_server['key']}"}
    stored = {a.record_id: a.value["label"] for a in _annotations(review_server, "tickets", "ann")}
    from tuneloop.store import review as store

    with review_server["app"].state.sessions() as session:
        project = store.find_project(session, ref="tickets")
        texts = {r.id: r.text for r in store.all_records(session, project_id=project.id)
                 if r.status != "open"}
    response = httpx.get(review_server["base"] + "/api/projects/tickets/export", params={"as": "classify"},
                         headers=headers)
    assert response.status_code == 200
    rows = [json.loads(line) for line in response.text.splitlines()]
    expected = {texts[i]: label for i, label in stored.items() if i in texts}
    exported = {row["text"]: row["label"] for row in rows}
    assert {t: exported[t] for t in expected} == expected
    assert len(rows) == len(texts)

    answers = httpx.get(review_server["base"] + "/api/projects/answers/export", params={"as": "dpo"}, headers=headers)
    [pair] = [json.loads(line) for line in answers.text.splitlines()]
    assert pair["preferred_output"] == [{"role": "assistant", "content": "The answer is 0."}]
    assert pair["input"]["messages"][-1] == {"role": "user", "content": "What is 0 plus 0?"}
    wrong = httpx.get(review_server["base"] + "/api/projects/answers/export", params={"as": "classify"},
                      headers=headers)
    assert wrong.status_code == 400 and "exports as sft, dpo" in wrong.json()["error"]["message"]


def test_an_annotator_cannot_see_admin_pages_or_other_projects(review_server, login):
    page = login("ann")
    for path in ("/admin/users", "/projects/private", "/projects/private/queue", "/runs"):
        response = page.goto(review_server["base"] + path)
        assert response.status == 403, path
    expect(page.get_by_test_id("error-message")).to_contain_text("training runs")
    page.goto(review_server["base"] + "/")
    expect(page.locator("#projects")).not_to_contain_text("private")
    for method, path in (("GET", "/api/projects/private"), ("GET", "/api/projects/private/next"),
                         ("GET", "/api/users"), ("GET", "/api/runs")):
        status = page.evaluate("async ([m, p]) => (await fetch(p, {method: m})).status", [method, path])
        assert status == 403, path
    # without the page's CSRF token a write is refused even with the session cookie
    status = page.evaluate("async () => (await fetch('/api/projects/tickets/undo', {method: 'POST'})).status")
    assert status == 403
    assert page.goto(review_server["base"] + "/projects/tickets/records/1").status == 403  # others' answers
    expect(page.get_by_test_id("error-message")).to_contain_text(
        "a record's annotations and their history are for reviewers and admins")
    rows = page.evaluate("async () => (await (await fetch('/api/projects/tickets/records?limit=500')).json()).data")
    assert {w["user"] for row in rows for w in row["work"]} == {"ann"} and all(r["human_label"] is None for r in rows)
    assert not any(r["disagreement"] or r["answer_source"] for r in rows)
    page.goto(review_server["base"] + "/projects/tickets/table")
    expect(page.get_by_test_id("total")).to_contain_text("records")
    expect(page.locator("#records tbody a")).to_have_count(0)  # no links to pages they may not see
    expect(page.locator("#records .disagree")).to_have_count(0)
    assert page.request.get(review_server["base"] + "/api/projects/tickets/export?as=classify").status == 403


def test_cookie_writes_need_the_csrf_token_and_reviewers_only_read_the_openai_routes(review_server, login):
    client = httpx.Client(base_url=review_server["base"])
    forged = client.post("/login", data={"username": "ann", "password": "annotator-pass-1", "next": "/"})
    assert forged.status_code == 403  # no form token (login CSRF): not logged in
    assert client.get("/").status_code == 303
    form = client.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    client.post("/login", data={"username": "ann", "password": "annotator-pass-1", "next": "/", "csrf": token})
    assert client.get("/").status_code == 200  # logged in
    refused = client.post("/api/projects/tickets/undo")  # logged in, but no page gave a token yet
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    page = login("rev")
    status = page.evaluate("""async () => (await fetch('/v1/files/file-x', {method: 'DELETE',
        headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}})).status""")
    assert status == 403
    assert page.evaluate("async () => (await fetch('/api/runs')).status") == 200


def test_admin_creates_a_user_who_can_then_log_in(review_server, login, browser):
    page = login("admin")
    page.goto(review_server["base"] + "/admin/users")
    page.fill("#new-user input[name=username]", "newbie")
    page.fill("#new-user input[name=password]", "newbie-pass-1")
    page.select_option("#new-user select[name=project]", "tickets")
    page.click("#new-user button[type=submit]")
    expect(page.locator("#user-message")).to_have_text("Created annotator newbie.")
    fresh = browser.new_page()
    fresh.goto(review_server["base"] + "/login")
    fresh.fill("input[name=username]", "newbie")
    fresh.fill("input[name=password]", "newbie-pass-1")
    fresh.click("button[type=submit]")
    expect(fresh.locator("#projects")).to_contain_text("tickets")
    fresh.close()


def run_repredict_jobs(server) -> None:
    """What a worker does with the queued re-predict jobs, in a thread beside the page."""
    import threading

    from sqlalchemy import select

    from tuneloop.services.job_kinds import kinds
    from tuneloop.store.tables import Job
    from tuneloop.worker.runner import Worker

    worker = Worker(server["settings"], "ui-test-worker", kinds())
    with server["app"].state.sessions() as session:
        jobs = list(session.scalars(select(Job).where(Job.kind == "repredict", Job.status == "queued")))
        for job in jobs:
            job.status, job.worker_id = "running", worker.worker_id
        session.commit()
        ids = [job.id for job in jobs]
    for job_id in ids:
        threading.Thread(target=worker.run_job, args=(job_id,), daemon=True).start()


def test_admin_trains_on_reviewed_data_and_repredicts_from_the_project_page(review_server, login, tiny_chat_model):
    from tuneloop.services.review import queue
    from tuneloop.store import review as store

    page = login("admin")
    page.goto(review_server["base"] + "/projects/tickets")
    page.click("#train button[type=submit]")
    expect(page.get_by_test_id("loop-message")).to_contain_text("at least 10 are needed to train")
    with review_server["app"].state.sessions() as session:  # more reviewed records: accept the model's labels
        project = store.find_project(session, ref="tickets")
        admin = store.user_by_name(session, username="admin")
        open_ids = [r.id for r in store.all_records(session, project_id=project.id) if r.status == "open"]
        queue.bulk_accept(session, project, admin, open_ids[:6])
    expect(page.get_by_test_id("train-model")).to_have_value("minilm-l6")  # defect: encoders were refused
    expect(page.get_by_test_id("train-classifier")).to_have_value("auto")
    page.click("#train button[type=submit]")
    expect(page.get_by_test_id("loop-message")).to_contain_text("a worker trains it")
    expect(page.locator("#jobs")).to_contain_text("validating_files")  # no worker runs in this test server
    from tuneloop.services.review import rounds
    from tuneloop.worker.jobs import job_recipe

    with review_server["app"].state.sessions() as session:
        [job] = rounds.project_jobs(session, store.find_project(session, ref="tickets"))
        recipe = job_recipe(session, review_server["settings"], job)
        assert (recipe.model, recipe.method, recipe.classifier) == ("minilm-l6", "classify", "auto")
        assert recipe.hyperparameters.epochs is None  # the method's defaults
    page.get_by_test_id("repredict-model").fill(str(tiny_chat_model))
    page.click("#repredict button[type=submit]")
    expect(page.locator('#tasks p[data-status="queued"]')).to_be_visible()  # a job on the worker queue
    run_repredict_jobs(review_server)  # a worker for this job alone (the train job stays queued)
    expect(page.locator('#tasks p[data-status="succeeded"]')).to_contain_text("round 1", timeout=60_000)
    expect(page.get_by_test_id("rounds")).to_contain_text(tiny_chat_model.name)
    page.get_by_test_id("repredict-model").fill("no-such-model")
    page.click("#repredict button[type=submit]")
    expect(page.get_by_test_id("loop-message")).to_contain_text("no model 'no-such-model'")
    screenshot(page, "project-loop")
    page.click("#disagreement-link")
    expect(page.locator("select[name=disagreement]")).to_have_value("true")
    total = page.get_by_test_id("total")
    expect(total).not_to_have_text("")
    assert int(total.inner_text().split()[0]) < 24  # only the records with a disagreement


def test_admin_creates_a_project_by_uploading_a_file(review_server, login, tmp_path):
    from tests.conftest import write_jsonl

    page = login("admin")
    page.click("#new-project-box summary")
    broken = write_jsonl(tmp_path / "broken.jsonl", [{"text": "fine", "label": "a"}, "{not json"])
    page.fill("#new-project input[name=name]", "uploaded")
    page.set_input_files("#new-project input[name=file]", str(broken))
    page.click("#new-project button[type=submit]")
    expect(page.locator("#project-message")).to_contain_text("broken.jsonl: 1 problem(s): line 2")
    good = write_jsonl(tmp_path / "requests.jsonl", [{"text": f"request {i}"} for i in range(5)] +
                       [{"text": "refund me", "label": "refund"}])
    page.set_input_files("#new-project input[name=file]", str(good))
    page.fill("#new-project input[name=labels]", "billing,shipping")
    page.fill("#new-project input[name=members]", "ann")
    page.click("#new-project button[type=submit]")
    # a record labelled outside the set: counted and named, and the lead chooses (no CLI flags in the words)
    expect(page.get_by_test_id("project-message")).to_contain_text(
        "1 record(s) carry labels outside the label set billing, shipping: refund (1)")
    expect(page.get_by_test_id("project-message")).not_to_contain_text("--")
    page.get_by_test_id("drop-records").click()
    page.wait_for_url(review_server["base"] + "/projects/uploaded")
    expect(page.get_by_test_id("count-records")).to_have_text("5")
    from tuneloop.store import review as store

    with review_server["app"].state.sessions() as session:
        project = store.find_project(session, ref="uploaded")
        assert project.labels == ["billing", "shipping"]
        assert {r.source.split("@")[0] for r in store.all_records(session, project_id=project.id)} == {"requests.jsonl"}
        assert [u.username for u in store.members(session, project_id=project.id)] == ["ann"]


def test_jobs_page_shows_every_kind_with_its_progress_and_links(review_server, login):
    import time

    from tuneloop.store import repo
    from tuneloop.store.tables import Job

    ids = {}
    with review_server["app"].state.sessions() as session:  # no worker runs here: the queued job stays queued
        for kind, fields in (("repredict", {"status": "queued", "params": {"project": "private"},
                                            "progress": {"done": 0, "total": 24, "unit": "records"}}),
                             ("train", {"status": "succeeded", "progress": {"done": 4, "total": 4, "unit": "steps"},
                                        "run_dir": str(review_server["settings"].home / "runs" / "run-for-jobs")})):
            job = Job(id=repo.new_id("job"), kind=kind, model="tiny-chat", method={}, hyperparameters={}, extra={},
                      result_files=[], created_at=time.time(), **fields)
            session.add(job)
            ids[kind] = job.id
        session.commit()
    page = login("admin")
    page.click("nav >> text=Jobs")
    queued = page.locator(f'#jobs tr[data-id="{ids["repredict"]}"]')
    expect(queued).to_contain_text("repredict")
    expect(queued).to_have_attribute("data-status", "queued")
    expect(queued.get_by_test_id("progress")).to_have_text("0/24 records")
    expect(queued.locator("progress")).to_have_attribute("max", "24")
    expect(queued.locator("a[data-link=project]")).to_have_attribute("href", "/projects/private")
    trained = page.locator(f'#jobs tr[data-id="{ids["train"]}"]')
    expect(trained.get_by_test_id("progress")).to_have_text("4/4 steps")
    expect(trained.locator("a[data-link=run]")).to_have_attribute("href", "/runs/run-for-jobs")
    screenshot(page, "jobs")


def test_a_round_below_the_model_in_use_warns_and_held_out_records_show_no_prediction(review_server, login, tmp_path):
    """Defects 1 and 4: the project page warns when a round's model scores below the one that pre-fills the
    queue, which keeps the queue; the lead switches models from the page. Held-out records never show a
    prediction, and the project can hide predictions everywhere."""
    import time

    from tests.conftest import labelled_rows, write_jsonl
    from tests.services.test_review import KeywordModel
    from tuneloop.services.review import prelabel, projects, queue, rounds
    from tuneloop.store import review as store

    gold = {row["text"]: row["label"] for row in labelled_rows(12)}
    with review_server["app"].state.sessions() as session:
        project = projects.create_project(session, review_server["settings"], name="rounds", task="classification",
                                          data=str(write_jsonl(tmp_path / "r.jsonl", labelled_rows(12))), holdout=0.5)
        admin = store.user_by_name(session, username="admin")
        projects.add_member(session, project, "ann")
        *labelled, held = store.all_records(session, project_id=project.id, split="holdout")
        for record in labelled:  # one held-out record is left for ann
            queue.submit(session, project, admin, record.id, {"label": gold[record.text]})
        for model in (KeywordModel("good-model", right=True), KeywordModel("bad-model", right=False)):
            result = prelabel.prelabel(session, project, model, since=time.time(), use=False)
            rounds.record_round(session, project, model.name, labels_used=6, seconds=1.0, predicted=result.predicted)
    page = login("admin")
    page.goto(review_server["base"] + "/projects/rounds")
    warning = page.get_by_test_id("round-warning")
    expect(warning).to_contain_text("Round 2's model bad-model scores 0.000 on the held-out records, below 1.000 "
                                    "of good-model, which keeps pre-filling the queue.")
    expect(page.get_by_test_id("prefill-model")).to_have_value("good-model")
    expect(page.locator('tr[data-round="2"]')).to_contain_text("below good-model")
    annotator = login("ann")
    annotator.goto(review_server["base"] + "/projects/rounds/queue?order=id")
    expect(annotator.locator("#record")).to_contain_text("held out")  # held-out records come first: no prediction
    expect(annotator.get_by_test_id("record-text")).to_have_text(held.text)
    expect(annotator.get_by_test_id("prelabel")).to_have_count(0)
    expect(annotator.locator('#answer button.selected')).to_have_count(0)
    annotator.keyboard.press(str(["billing", "shipping", "technical"].index(gold[held.text]) + 1))
    annotator.keyboard.press("Enter")
    expect(annotator.get_by_test_id("record-text")).not_to_have_text(held.text)
    expect(annotator.get_by_test_id("prelabel")).to_have_text(gold[annotator.get_by_test_id("record-text").inner_text()])
    with page.expect_response(lambda r: r.request.method == "PATCH"):
        warning.get_by_role("button", name="Use bad-model anyway").click()
    expect(page.get_by_test_id("prefill-model")).to_have_value("bad-model")
    expect(warning).to_be_hidden()
    annotator.reload()
    text = annotator.get_by_test_id("record-text").inner_text()
    expect(annotator.get_by_test_id("prelabel")).not_to_have_text(gold[text])  # bad-model's label now
    expect(annotator.locator('#answer button.selected')).to_have_count(1)
    with page.expect_response(lambda r: r.request.method == "PATCH"):
        page.get_by_test_id("hide-predictions").check()
    annotator.reload()
    expect(annotator.get_by_test_id("record-text")).to_have_text(text)
    expect(annotator.get_by_test_id("prelabel")).to_have_count(0)
    expect(annotator.locator('#answer button.selected')).to_have_count(0)  # nothing chosen for them
    with page.expect_response(lambda r: r.request.method == "PATCH"):
        page.get_by_test_id("hide-predictions").uncheck()
    annotator.reload()
    expect(annotator.get_by_test_id("prelabel")).to_have_count(1)


def test_a_reviewer_adjudicates_a_tie_by_keyboard_and_the_export_says_what_it_left_out(review_server, login, tmp_path):
    """Defect 3: a 1-1 tie was exported as one person's label. The export now leaves it out and says so;
    a reviewer settles it on the adjudication page with the keys; then it exports with the chosen label."""
    from tests.conftest import labelled_rows, write_jsonl
    from tuneloop.services.review import projects, queue
    from tuneloop.store import review as store

    with review_server["app"].state.sessions() as session:
        project = projects.create_project(session, review_server["settings"], name="ties", task="classification",
                                          data=str(write_jsonl(tmp_path / "t.jsonl", labelled_rows(3))), overlap=2)
        for name in ("ann", "rev"):
            projects.add_member(session, project, name)
        ann, other = (store.user_by_name(session, username=n) for n in ("ann", "other"))
        tie, agreed, _ = store.all_records(session, project_id=project.id)
        for record, labels in ((tie, ("billing", "shipping")), (agreed, ("technical", "technical"))):
            for person, label in zip((ann, other), labels):
                queue.submit(session, project, person, record.id, {"label": label})
    page = login("rev")
    page.goto(review_server["base"] + "/projects/ties")
    expect(page.get_by_test_id("export-summary")).to_have_text(
        "1 examples; left out: 1 people tied (not adjudicated), 1 still open")
    page.get_by_test_id("export-policy").select_option("annotations")
    expect(page.get_by_test_id("export-summary")).to_have_text("2 examples; left out: 1 still open")
    page.get_by_test_id("export-policy").select_option("final")
    page.get_by_test_id("export-split").select_option("holdout")
    expect(page.get_by_test_id("export-summary")).to_have_text("0 examples; left out: 3 in the pool split")
    page.get_by_test_id("export-split").select_option("pool")
    expect(page.get_by_test_id("adjudication-link")).to_have_text("Adjudicate (1, of which 1 ties)")
    page.get_by_test_id("adjudication-link").click()
    expect(page.get_by_test_id("record-text")).to_have_text(tie.text)
    expect(page.get_by_test_id("people-answers").locator("li")).to_have_text(["ann: billing", "other: shipping"])
    expect(page.get_by_test_id("queue-counters")).to_have_text("1 to adjudicate (1 ties) · 0 adjudicated")
    expect(page.locator("#answer button.selected")).to_have_count(0)  # nothing chosen for the adjudicator
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("queue-empty")).to_be_visible()
    expect(page.get_by_test_id("queue-counters")).to_have_text("0 to adjudicate (0 ties) · 1 adjudicated")
    with review_server["app"].state.sessions() as session:
        record = store.get_record(session, project_id=store.find_project(session, ref="ties").id, record_id=tie.id)
        assert (record.answer_source, record.human_label) == ("adjudicated", "shipping")
        assert [a.source for a in store.annotations_of(session, record_ids=[tie.id])] == ["person", "person",
                                                                                         "adjudication"]
    page.goto(review_server["base"] + "/projects/ties")
    expect(page.get_by_test_id("export-summary")).to_have_text("2 examples; left out: 1 still open")
    annotator = login("ann")
    annotator.goto(review_server["base"] + "/projects/ties/adjudicate")
    expect(annotator.locator("body")).to_contain_text("'ann' is an annotator")
    expect(annotator.get_by_test_id("export-summary")).to_have_count(0)


def test_two_tabs_of_one_annotator_move_on_instead_of_sticking(review_server, login, tmp_path):
    """Defect: two tabs got the same record; the second tab's submit was refused and the tab stayed stuck."""
    from tests.conftest import labelled_rows, write_jsonl
    from tuneloop.services.review import projects

    with review_server["app"].state.sessions() as session:
        project = projects.create_project(session, review_server["settings"], name="tabs", task="classification",
                                          data=str(write_jsonl(tmp_path / "t.jsonl", labelled_rows(3))))
        projects.add_member(session, project, "ann")
    first = login("ann")
    second = first.context.new_page()
    for tab in (first, second):
        tab.goto(review_server["base"] + "/projects/tabs/queue?order=id")
        expect(tab.get_by_test_id("record-text")).to_have_text(labelled_rows(3)[0]["text"])  # the same record
    record_id = first.locator("#record").get_attribute("data-record-id")
    first.keyboard.press("1")
    first.keyboard.press("Enter")
    expect(first.locator("#record")).not_to_have_attribute("data-record-id", record_id)
    second.keyboard.press("1")
    second.keyboard.press("Enter")
    expect(second.locator("#banner")).to_contain_text(f"Record #{record_id} was settled meanwhile")
    expect(second.locator("#record")).not_to_have_attribute("data-record-id", record_id)


def test_counters_tell_done_partly_done_and_not_started_apart(review_server, login, tmp_path):
    """Defect: with 2 annotations per record the counters showed 0 done after 11 submissions."""
    from tests.conftest import labelled_rows, write_jsonl
    from tuneloop.services.review import projects

    with review_server["app"].state.sessions() as session:
        project = projects.create_project(session, review_server["settings"], name="pairs", task="classification",
                                          data=str(write_jsonl(tmp_path / "p.jsonl", labelled_rows(3))), overlap=2)
        projects.add_member(session, project, "ann")
    page = login("ann")
    page.goto(review_server["base"] + "/projects/pairs/queue?order=id")
    expect(page.get_by_test_id("queue-counters")).to_contain_text("0 of 3 done, 0 partly done, 3 not started")
    for _ in range(2):
        answer_and_move_on(page)
    expect(page.get_by_test_id("queue-counters")).to_contain_text("0 of 3 done, 2 partly done, 1 not started")
    page.goto(review_server["base"] + "/projects/pairs")
    expect(page.get_by_test_id("count-partly")).to_have_text("2")
    expect(page.get_by_test_id("count-done")).to_have_text("0")
    throughput = page.locator('#throughput tr[data-person="ann"] td')  # two answers: one gap, a pace
    expect(throughput.nth(1)).to_have_text("2")
    assert float(throughput.nth(2).inner_text()) >= 0 and float(throughput.nth(3).inner_text()) > 0


def test_guidelines_keys_history_and_chart_colours_read_well(review_server, login, tmp_path):
    """Smaller defects: guidelines were not Markdown; labels 10 and beyond showed key badges that cannot be
    typed; the history showed Unix times and escaped JSON; a label's colour differed between charts."""
    from tests.conftest import write_jsonl
    from tuneloop.services.review import projects

    labels = [f"l{i}" for i in range(1, 12)]
    with review_server["app"].state.sessions() as session:
        project = projects.create_project(
            session, review_server["settings"], name="polish", task="classification", labels=labels,
            data=str(write_jsonl(tmp_path / "p.jsonl", [{"text": f"text {i}"} for i in range(4)])),
            guidelines="**Bold** rule\n\n- one\n- two\n\n<script>alert(1)</script>")
        for name in ("ann", "rev"):
            projects.add_member(session, project, name)
    page = login("ann")
    page.goto(review_server["base"] + "/projects/polish/queue?order=id")
    expect(page.locator("#answer button")).to_have_count(11)
    expect(page.locator("#answer kbd")).to_have_count(9)
    guidelines = page.get_by_test_id("guidelines")
    expect(guidelines.locator("strong")).to_have_text("Bold")
    expect(guidelines.locator("li")).to_have_count(2)
    expect(guidelines.locator("script")).to_have_count(0)
    expect(guidelines).to_contain_text("<script>alert(1)</script>")  # shown as text
    for key in ("2", "1", "1"):  # l2 once, l1 twice
        answer_and_move_on(page, key)
    from tuneloop.store import review as store

    with review_server["app"].state.sessions() as session:
        first_id = store.all_records(session, project_id=store.find_project(session, ref="polish").id)[0].id
    reviewer = login("rev")
    reviewer.goto(review_server["base"] + f"/projects/polish/records/{first_id}")
    history = reviewer.locator("#history tbody tr").first
    expect(history).to_contain_text("label: l2")
    expect(history).not_to_contain_text("{")
    assert not re.fullmatch(r"\d+(\.\d+)?", history.locator("td.when").inner_text())
    admin = login("admin")
    colours = []
    for _ in range(2):
        admin.goto(review_server["base"] + "/projects/polish")
        bar = admin.locator('#distribution [data-bar="l1"]')
        legend = admin.locator('#timeline [data-series="l1"]')
        expect(bar).to_have_count(1)
        fill = bar.get_attribute("fill")
        assert fill in legend.get_attribute("style")
        colours.append((fill, admin.locator("#distribution [data-bar]").evaluate_all(
            "bars => bars.map(b => b.dataset.bar)")))
    assert colours[0] == colours[1] and colours[0][1] == ["l1", "l2"]  # the label set's order, not the counts'


def test_an_admin_runs_projects_and_people_from_the_ui(review_server, login, browser, tmp_path):
    """Project administration in the UI: guidelines, labels, overlap and members after creation; roles, new
    passwords and disabled accounts on the users page."""
    from tests.conftest import labelled_rows, write_jsonl
    from tuneloop.services.auth import create_user
    from tuneloop.services.review import projects
    from tuneloop.store import review as store

    with review_server["app"].state.sessions() as session:
        projects.create_project(session, review_server["settings"], name="admin-me", task="classification",
                                data=str(write_jsonl(tmp_path / "a.jsonl", labelled_rows(3))))
        create_user(session, username="zoe", password="zoe-password-1", role="annotator")
    page = login("admin")
    page.goto(review_server["base"] + "/projects/admin-me")
    page.click("#admin-box summary")
    settings = page.get_by_test_id("project-settings")
    settings.locator("textarea[name=guidelines]").fill("Pick **one** team.")
    settings.locator("input[name=labels]").fill("billing,shipping,technical,refund")
    settings.locator("input[name=overlap]").fill("2")
    settings.locator("button[type=submit]").click()
    expect(page.get_by_test_id("settings-message")).to_have_text("Saved.")
    page.get_by_test_id("add-member-name").select_option("zoe")
    page.click("#add-member button[type=submit]")
    expect(page.get_by_test_id("members")).to_contain_text("zoe")
    settings.locator("input[name=labels]").fill("billing,shipping")
    settings.locator("button[type=submit]").click()  # nobody used technical yet: this would drop it
    expect(page.get_by_test_id("settings-message")).to_have_text("Saved.")
    with review_server["app"].state.sessions() as session:
        project = store.find_project(session, ref="admin-me")
        assert (project.guidelines, project.labels, project.overlap) == ("Pick **one** team.", ["billing", "shipping"], 2)
    page.reload()
    expect(page.get_by_test_id("guidelines").locator("strong")).to_have_text("one")

    page.goto(review_server["base"] + "/admin/users")
    page.get_by_test_id("role-zoe").select_option("reviewer")
    expect(page.get_by_test_id("users-message")).to_have_text("zoe is now reviewer.")
    page.once("dialog", lambda dialog: dialog.accept("zoe-new-password"))
    page.get_by_test_id("password-zoe").click()
    expect(page.get_by_test_id("users-message")).to_have_text("zoe has a new password.")
    page.get_by_test_id("role-admin").select_option("annotator")  # the only admin
    expect(page.get_by_test_id("users-message")).to_contain_text("'admin' is the only admin")
    expect(page.get_by_test_id("role-admin")).to_have_value("admin")  # put back as it was
    context = browser.new_context()
    zoe = context.new_page()
    zoe.goto(review_server["base"] + "/login")
    zoe.fill("input[name=username]", "zoe")
    zoe.fill("input[name=password]", "zoe-new-password")
    zoe.click("button[type=submit]")
    zoe.wait_for_url(review_server["base"] + "/")
    expect(zoe.locator("#projects")).to_contain_text("admin-me")
    page.goto(review_server["base"] + "/admin/users")
    page.get_by_test_id("disabled-zoe").check()
    expect(page.get_by_test_id("users-message")).to_have_text("zoe is disabled.")
    zoe.goto(review_server["base"] + "/projects/admin-me")
    assert "/login" in zoe.url  # a disabled account's session ends
    context.close()


def test_gold_questions_reach_annotators_unmarked_and_the_lead_sees_their_accuracy(review_server, login, tmp_path):
    from tests.conftest import labelled_rows, write_jsonl
    from tuneloop.services.review import gold, projects
    from tuneloop.store import review as store

    with review_server["app"].state.sessions() as session:
        project = projects.create_project(session, review_server["settings"], name="golden", task="classification",
                                          data=str(write_jsonl(tmp_path / "g.jsonl", labelled_rows(9))), gold=0.34,
                                          gold_rate=0.5)
        for name in ("ann", "rev"):
            projects.add_member(session, project, name)
    page = login("ann")
    page.goto(review_server["base"] + "/projects/golden/queue?order=id")
    for _ in range(6):
        expect(page.locator("#record")).to_have_attribute("data-record-id", re.compile(r"^\d+$"))
        expect(page.locator("#record")).not_to_contain_text("gold")
        answer_and_move_on(page)
    rows = page.evaluate("async () => (await (await fetch('/api/projects/golden/records?limit=500')).json()).data")
    assert {r["split"] for r in rows} == {"pool"} and len(rows) == 6  # an annotator's table leaves gold out
    for query in ("split=gold", "label=billing", "sort=annotations", "disagreement=true", "annotator=rev"):
        status = page.evaluate(f"async () => (await fetch('/api/projects/golden/records?{query}')).status")
        assert status == 403, query  # filters that would tell them others' answers or the gold questions
    shown = page.evaluate("async () => (await (await fetch('/api/projects/golden')).json()).gold_questions")
    assert shown is None  # their own gold score would tell them which answers were gold
    expect(page.get_by_test_id("queue-counters")).to_have_text("You: 6 done, 0 skipped")  # no project counts
    lead = login("rev")
    lead.goto(review_server["base"] + "/projects/golden")
    with review_server["app"].state.sessions() as session:
        [report] = gold.gold_report(session, store.find_project(session, ref="golden"))["people"]
    assert report["answered"] == 3
    row = lead.locator('#gold tr[data-person="ann"]')
    expect(row).to_contain_text(f"{report['answered']}{report['correct']}{report['accuracy']:.2f}")
    expect(lead.get_by_test_id("gold-flag")).to_have_count(1 if report["flagged"] else 0)
    lead.goto(review_server["base"] + "/projects/golden/table?split=gold")
    expect(lead.get_by_test_id("total")).to_have_text("3 records")


def test_span_labelling_by_keyboard_and_mouse_with_the_models_spans_as_a_draft(review_server, login, tmp_path):
    """Span labelling (NER): the model's spans are drawn in the text as a draft; the annotator moves over the
    words with the arrows, stretches the selection with Shift, labels it with 1-9, removes a wrong span with
    X, and submits with Enter; a drag with the mouse selects words too. The export gives the spans as
    character offsets and as BIO tags, and the project page shows agreement on spans."""
    from tests.conftest import write_jsonl
    from tests.services.test_review_spans import RuleModel
    from tuneloop.services.review import prelabel, projects, queue
    from tuneloop.store import review as store

    rows = [{"text": f"order VC-{10000 + i} arrived on 3 May"} for i in range(3)]
    rows[2]["text"] = "😀 " + rows[2]["text"]  # offsets count code points; the browser counts UTF-16 units
    with review_server["app"].state.sessions() as session:
        project = projects.create_project(session, review_server["settings"], name="entities", task="spans",
                                          data=str(write_jsonl(tmp_path / "e.jsonl", rows)), labels=["ORDER", "DATE"],
                                          overlap=2)
        for name in ("ann", "rev"):
            projects.add_member(session, project, name)
        prelabel.prelabel(session, project, RuleModel("orders", dates=False))
        first = store.all_records(session, project_id=project.id)[0]
        queue.submit(session, project, store.user_by_name(session, username="other"), first.id,
                     {"spans": [{"start": 6, "end": 14, "label": "ORDER"}]})
    page = login("ann")
    page.goto(review_server["base"] + "/projects/entities/queue?order=id")
    text = page.get_by_test_id("record-text")
    expect(text).to_contain_text("order VC-10000 arrived on 3 May")
    expect(page.get_by_test_id("legend")).to_contain_text("Shift+← →")
    expect(page.get_by_test_id("span-list").locator("li")).to_have_text(["ORDER VC-10000"])  # the model's draft
    expect(text.locator(".span-start")).to_have_attribute("data-span-label", "ORDER")
    # words: order VC - 10000 arrived on 3 May -> "3" is word 6: move there, stretch to "May", label it DATE (2)
    for _ in range(6):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    expect(text.locator(".w.sel")).to_have_text(["3", "May"])
    page.keyboard.press("2")
    expect(page.get_by_test_id("span-list").locator("li")).to_have_text(["ORDER VC-10000", "DATE 3 May"])
    screenshot(page, "spans-queue")
    page.keyboard.press("Enter")
    expect(text).to_contain_text("VC-10001")
    # the second record: the model's span is wrong for this person's reading; remove it, mark the order by mouse
    page.keyboard.press("ArrowRight")
    page.keyboard.press("x")
    expect(page.get_by_test_id("span-list")).to_contain_text("No spans yet")
    words = text.locator(".w")
    start, end = words.nth(1).bounding_box(), words.nth(3).bounding_box()
    page.mouse.move(start["x"] + 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] - 2, end["y"] + end["height"] / 2, steps=5)
    page.mouse.up()
    expect(text.locator(".w.sel")).to_have_text(["VC", "-", "10001"])
    page.get_by_test_id("span-list").click()  # the mouse can label too: the label's button
    page.locator("#answer button[data-label=ORDER]").click()
    page.keyboard.press("Enter")
    expect(text).to_contain_text("VC-10002")
    for key in ("ArrowRight", "ArrowRight", "Shift+ArrowRight", "Shift+ArrowRight", "1", "Enter"):  # after the emoji
        page.keyboard.press(key)
    expect(page.get_by_test_id("queue-empty")).to_be_visible()
    with review_server["app"].state.sessions() as session:
        project = store.find_project(session, ref="entities")
        ann = store.user_by_name(session, username="ann")
        values = [a.value for a in store.project_annotations(session, project_id=project.id) if a.user_id == ann.id]
        assert values == [{"spans": [{"start": 6, "end": 14, "label": "ORDER"}, {"start": 26, "end": 31, "label": "DATE"}]},
                          {"spans": [{"start": 6, "end": 14, "label": "ORDER"}]},
                          {"spans": [{"start": 8, "end": 16, "label": "ORDER"}]}]  # "VC-10002" after "😀 order "
    lead = login("rev")
    lead.goto(review_server["base"] + "/projects/entities")
    expect(lead.get_by_test_id("span-agreement")).to_contain_text("exact F1 0.667, partial F1 0.667")
    screenshot(lead, "spans-project")
    exported = lead.request.get(review_server["base"] + "/api/projects/entities/export?as=bio&policy=annotations")
    [row] = [json.loads(line) for line in exported.text().splitlines()]  # the one record two people settled
    assert [(a["annotator"], len(a["answer"]["spans"])) for a in row["annotations"]] == [("other", 1), ("ann", 2)]


def test_a_preference_project_offers_dpo_on_its_pairs(review_server, login):
    page = login("admin")
    page.goto(review_server["base"] + "/projects/prefs")
    method = page.get_by_test_id("train-method")
    expect(method.locator("option")).to_have_text(["fine-tune on the sft export", "DPO on the preference pairs",
                                                   "a reward model on the preference pairs"])
    method.select_option("dpo")
    page.locator("#train button[type=submit]").click()
    # the pairs people judged are what DPO trains on: too few here, and the page says how many it needs
    expect(page.get_by_test_id("loop-message")).to_contain_text("preference pair(s) to train on; at least 10 are needed")
    page.goto(review_server["base"] + "/projects/tickets")
    expect(page.get_by_test_id("train-method")).to_have_count(0)  # classification has no pairs
