"""The Compare page in Chromium: an admin queues a comparison of a base model, a fine-tune and a 2-shot baseline
from the form; a worker runs it (a job of kind `compare`); the table shows each metric with its interval and paired
test, and a metric row opens the items behind the difference side by side. The run's page shows its lineage
(data, checkpoints, the id it is served as) and links to the comparison; the API answers the same, and refuses what
a client may not name."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import live_server, write_jsonl
from tests.engine.test_classify_head import topic_rows
from tests.web.conftest import log_in, screenshot

PASSWORD = "compare-pass-1"


def chat_form(rows):
    return [{"messages": [{"role": "user", "content": r["text"]}, {"role": "assistant", "content": r["label"]}]}
            for r in rows]


@pytest.fixture(scope="module")
def compare_server(tmp_path_factory, tiny_encoder):
    """A server with a worker, an admin and an annotator, test and training files, and a classifier head on the
    tiny encoder in the server's runs folder (it learns the topics, so it disagrees with the untrained chat model)."""
    from tuneloop.config.recipe import parse_recipe
    from tuneloop.engine.loop import train
    from tuneloop.services.auth import create_user

    home = tmp_path_factory.mktemp("compare-home")
    data = tmp_path_factory.mktemp("compare-data")
    test = write_jsonl(data / "test.jsonl", chat_form(topic_rows(30)[::-1]))
    train_file = write_jsonl(data / "train.jsonl", topic_rows(36))
    for server in live_server(home, with_worker=True):
        with server["app"].state.sessions() as session:
            create_user(session, username="boss", password=PASSWORD, role="admin")
            create_user(session, username="ann", password=PASSWORD, role="annotator")
            session.commit()
        run_dir = server["settings"].runs_dir / "run-tiny-head"
        train(parse_recipe({"model": str(tiny_encoder), "method": "classify", "data": {"train": str(train_file)},
                            "adapter": {"type": "full"}, "hyperparameters": {"epochs": 8, "learning_rate": 3e-3},
                            "checkpoints": {"each_epoch": True, "keep_last": 2}}), server["settings"], run_dir)
        yield {**server, "test": test, "train": train_file, "run": run_dir}


def login(browser, base: str, name: str):
    return log_in(browser, base, name, PASSWORD)


def test_an_admin_compares_from_the_page_and_reads_the_items_behind_a_difference(compare_server, browser,
                                                                               tiny_chat_model):
    """A head on the tiny encoder, the untrained tiny chat model, and a 2-shot baseline of it."""
    base = compare_server["base"]
    page = login(browser, base, "boss")
    page.goto(base + "/comparisons")
    page.fill("textarea[name=candidates]", f"{tiny_chat_model}\nrun-tiny-head\n2-shot")
    page.fill("input[name=data]", str(compare_server["test"]))
    page.fill("input[name=train]", str(compare_server["train"]))  # the 2-shot baseline's examples
    page.click("#new-comparison button[type=submit]")
    page.wait_for_url(f"{base}/comparisons/cmp-*")
    expect(page.locator("#comparison[data-status=succeeded]")).to_be_visible(timeout=180_000)  # reloads when done
    accuracy = page.locator("section.metric[data-metric=accuracy]")
    expect(accuracy.locator("tbody tr")).to_have_count(3)
    expect(accuracy.locator("tr[data-candidate='run-tiny-head'] td").nth(6)).to_have_text("mcnemar")
    link = accuracy.locator("tr[data-candidate='run-tiny-head'] a.disagreements")
    link.click()
    items = accuracy.locator(".items")
    expect(items).to_be_visible()
    expect(items.locator("p").first).to_contain_text("items differ on accuracy")
    screenshot(page, "compare")

    cid = page.url.rsplit("/", 1)[-1]
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {compare_server['key']}"}, timeout=30)
    table = api.get(f"/api/comparisons/{cid}").json()
    assert table["status"] == "succeeded" and table["task"] == "classification" and table["n"] == 30
    assert [r["candidate"] for r in table["rows"]] == [Path(str(tiny_chat_model)).name, "run-tiny-head", "2-shot"]
    assert "folder" not in table  # no server path goes out
    found = api.get(f"/api/comparisons/{cid}/disagreements",
                    params={"metric": "accuracy", "candidate": "run-tiny-head"})
    group = found.json()["groups"][0]
    first, other = table["rows"][0], table["rows"][1]
    assert other["metrics"]["accuracy"]["value"] > first["metrics"]["accuracy"]["value"] + 0.3  # the head learned
    # the discordant items McNemar counts: wins less losses is the accuracy difference over the items
    wins = sum(1 for i in group["items"] if i["favours"] == "run-tiny-head")
    losses = group["count"] - wins
    assert group["count"] == len(group["items"]) > 0
    assert (wins - losses) / table["n"] == pytest.approx(other["metrics"]["accuracy"]["value"]
                                                        - first["metrics"]["accuracy"]["value"])
    rows_shown = items.locator("tbody tr")
    expect(rows_shown).to_have_count(group["count"])
    plot = api.get(f"/api/comparisons/{cid}/plot")
    assert plot.headers["content-type"] == "image/png", (plot.status_code, plot.text[:500])
    assert cid in [c["id"] for c in api.get("/api/comparisons").json()["data"]]

    page.goto(f"{base}/runs/run-tiny-head")
    lineage = page.get_by_test_id("lineage")
    kept = sorted(p.name for p in (compare_server["run"] / "checkpoints").iterdir())
    assert kept
    expect(lineage).to_contain_text(", ".join(kept))
    expect(lineage).to_contain_text("train.jsonl")
    expect(page.get_by_test_id("served-as")).to_have_text("run-tiny-head")
    expect(lineage.locator(f"a[href='/comparisons/{cid}']")).to_be_visible()
    screenshot(page, "run-lineage")
    page.context.close()


def test_the_compare_pages_and_api_refuse_what_a_person_or_client_may_not_do(compare_server, browser):
    base = compare_server["base"]
    page = login(browser, base, "ann")
    assert page.goto(base + "/comparisons").status == 403
    page.context.close()
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {compare_server['key']}"}, timeout=30)
    refused = api.post("/api/comparisons", json={"candidates": ["zero-shot"], "data": "/etc/passwd"})
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "data"
    refused = api.post("/api/comparisons", json={"candidates": ["/etc"], "data": str(compare_server["test"])})
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "candidates[0]"
    assert api.get("/api/comparisons/cmp-..%2F..").status_code == 404
    assert api.get("/api/comparisons/cmp-none/disagreements", params={"metric": "accuracy"}).status_code == 404


def test_a_person_calls_a_tie_in_an_arena_with_the_keyboard(compare_server, browser, tiny_chat_model, tmp_path):
    """An arena's queue offers A, B and a tie (key 3); the names of the models never reach the page."""
    from tuneloop.services import arena
    from tuneloop.services.review import projects
    from tuneloop.store import review as store

    other = tmp_path / "tiny-copy"
    import shutil

    shutil.copytree(tiny_chat_model, other)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say something about {i}."} for i in range(2)])
    settings = compare_server["settings"]
    with compare_server["app"].state.sessions() as session:
        job = arena.create_arena(session, settings, name="duel", models=["left-model", "right-model"],
                                 refs=[str(tiny_chat_model), str(other)], data=str(prompts), rows=2, max_tokens=3)
        job_id = job.id
    deadline = time.time() + 120  # the server's worker runs it
    while True:
        with compare_server["app"].state.sessions() as session:
            project = store.find_project(session, ref="duel")
            if project is not None and store.all_records(session, project_id=project.id):
                projects.add_member(session, project, "boss")
                session.commit()
                break
        assert time.time() < deadline, job_id
        time.sleep(1)
    page = login(browser, compare_server["base"], "boss")
    page.goto(compare_server["base"] + "/projects/duel/queue?order=id")
    expect(page.get_by_test_id("option-tie")).to_be_visible()
    assert "left-model" not in page.content() and "right-model" not in page.content()
    record_id = int(page.locator("#record").get_attribute("data-record-id"))
    page.keyboard.press("3")
    expect(page.get_by_test_id("option-tie")).to_have_class(re.compile("selected"))
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("queue-counters")).to_have_attribute("data-mine", "1")
    screenshot(page, "arena-queue")
    page.context.close()
    with compare_server["app"].state.sessions() as session:
        project = store.find_project(session, ref="duel")
        people, _ = arena.judgements(session, project)
    assert [(j.item, j.winner) for j in people] == [(str(record_id), "tie")]


def test_the_playground_streams_hidden_models_and_keeps_a_blind_judgement(compare_server, browser, tiny_chat_model,
                                                                          tmp_path):
    """Two models behind A and B: both answers stream with their latency, the page never names the models until the
    person has judged, and the judgement lands in the playground arena."""
    import shutil

    from tuneloop.services import arena
    from tuneloop.store import review as store

    other = tmp_path / "tiny-twin"
    shutil.copytree(tiny_chat_model, other)
    base = compare_server["base"]
    page = login(browser, base, "boss")
    page.goto(base + "/playground")
    page.fill("textarea[name=more_models]", f"{tiny_chat_model}\n{other}")
    page.get_by_test_id("prompt").fill("Say hello.")
    page.fill("input[name=max_tokens]", "4")
    page.click("#play-form button[type=submit]")
    for slot in ("A", "B"):
        expect(page.locator(f"[data-slot={slot}][data-done=true]")).to_be_visible(timeout=60_000)
        expect(page.locator(f"[data-slot={slot}] .latency")).to_contain_text("ms in all")
    slots = page.get_by_test_id("slots")
    assert str(other) not in slots.inner_text() and str(tiny_chat_model) not in slots.inner_text()
    expect(page.get_by_test_id("judge")).to_be_visible()
    page.keyboard.press("1")  # A is better
    expect(page.get_by_test_id("reveal")).to_contain_text("A:")
    revealed = page.get_by_test_id("reveal").inner_text()
    assert str(other) in revealed and str(tiny_chat_model) in revealed
    screenshot(page, "playground")
    page.context.close()
    with compare_server["app"].state.sessions() as session:
        project = store.find_project(session, ref="playground")
        people, _ = arena.judgements(session, project)
        found = arena.results(session, project, resamples=100)
    assert len(people) == 1 and people[0].winner in ("a", "b") and people[0].by == "boss"
    winner = people[0].a if people[0].winner == "a" else people[0].b
    assert f"A: {winner}" in revealed.replace("\n", " ")  # the model behind A won
    assert found["people"]["judgements"] == 1
