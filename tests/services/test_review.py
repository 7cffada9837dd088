"""Review projects through the services, on a real SQLite database: import, the queue and its hand-outs,
annotations and their history, review, agreement, export, and pre-labels (local model and endpoint)."""

from __future__ import annotations


import time

import pytest

from tests.conftest import chat_rows, labelled_rows, live_server, write_jsonl
from tuneloop.config.settings import Settings
from tuneloop.services import ServiceError
from tuneloop.services.auth import authenticate, create_user
from tuneloop.services.review import export, prelabel, projects, quality, queue
from tuneloop.store import review as store
from tuneloop.store.db import make_engine, sessions, upgrade


@pytest.fixture
def env(home, tmp_path):
    settings = Settings(home=home, offline=True)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    with sessions(engine)() as session:
        people = {name: create_user(session, username=name, password=f"{name}-password", role=role)
                  for name, role in (("ann", "annotator"), ("bob", "annotator"), ("cat", "annotator"),
                                     ("rev", "reviewer"))}
        yield {"settings": settings, "session": session, "people": people, "data": tmp_path}


def make(env, name="p", task="classification", rows=None, **options):
    path = write_jsonl(env["data"] / f"{name}.jsonl", rows if rows is not None else labelled_rows(12))
    return projects.create_project(env["session"], env["settings"], name=name, task=task, data=str(path), **options)


def test_passwords_are_hashed_and_checked(env):
    session = env["session"]
    ann = env["people"]["ann"]
    assert ann.password_hash.startswith("$argon2id$") and "ann-password" not in ann.password_hash
    assert authenticate(session, username="ann", password="ann-password").id == ann.id
    assert authenticate(session, username="ann", password="wrong") is None
    assert authenticate(session, username="nobody", password="x") is None
    with pytest.raises(ServiceError, match="at least 8"):
        create_user(session, username="dan", password="short", role="annotator")
    with pytest.raises(ServiceError, match="role 'boss'"):
        create_user(session, username="dan", password="long enough", role="boss")
    with pytest.raises(ServiceError, match="already a user 'ann'") as e:
        create_user(session, username="ann", password="long enough", role="annotator")
    assert e.value.status == 409


def test_bad_projects_say_what_and_where_and_store_nothing(env):
    session = env["session"]
    with pytest.raises(ServiceError, match="task 'ranking' is not one of"):
        make(env, task="ranking")
    with pytest.raises(ServiceError, match=r"p\.jsonl@[0-9a-f]{12} line 1: a response project needs prompts"):
        make(env, task="response")
    with pytest.raises(ServiceError, match="no labels to take the label set from"):
        make(env, rows=[{"text": f"unlabelled {i}"} for i in range(3)])
    with pytest.raises(ServiceError, match=r"line 2: cannot tell what to review: keys \['body'\]"):
        make(env, rows=[{"text": "fine"}, {"body": "no"}], labels=["a", "b"])
    bad = [*labelled_rows(3), "{not json"]
    with pytest.raises(ServiceError, match="line 4") as e:
        make(env, rows=bad)
    assert e.value.param == "data"
    assert store.list_projects(session) == []
    make(env)
    with pytest.raises(ServiceError, match="already a project 'p'"):
        make(env)
    [project] = store.list_projects(session)
    assert store.count_records(session, project_id=project.id)["total"] == 12


def test_unlabelled_texts_and_open_prompts_can_be_reviewed(env):
    session = env["session"]
    texts = make(env, name="texts", rows=[{"text": f"please help {i}"} for i in range(4)], labels=["a", "b"])
    assert store.count_records(session, project_id=texts.id)["total"] == 4
    prompts = [{"prompt": "Write a haiku"}, {"messages": [{"role": "user", "content": "Say hi"}]}]
    answers = make(env, name="drafts", task="response", rows=prompts)
    views = [queue.record_view(session, answers, r) for r in store.all_records(session, project_id=answers.id)]
    assert [v["prompt"][-1]["content"] for v in views] == ["Write a haiku", "Say hi"]
    assert [v["draft"] for v in views] == ["", ""]  # nothing drafted yet: pre-label with a model
    with pytest.raises(ServiceError, match="line 1: a rating project needs an answer to rate"):
        make(env, name="rate", task="rating", rows=prompts)


def test_records_keep_their_source_and_version(env):
    from tuneloop.data.dataset import Source, load_records
    from tuneloop.data.versions import store_version

    session = env["session"]
    from_file = make(env)
    [first, *_] = store.all_records(session, project_id=from_file.id)
    assert first.source.startswith("p.jsonl@") and len(first.source) == len("p.jsonl@") + 12
    assert first.source_index == 1 and first.data["original"] == labelled_rows(12)[0]

    path = write_jsonl(env["data"] / "v.jsonl", labelled_rows(5))
    fmt, numbered = load_records(Source(path))
    version = store_version(env["settings"].datasets_dir, "tickets", fmt, path, numbered, {})
    from_version = projects.create_project(session, env["settings"], name="v", task="classification",
                                           data=version.id)
    sources = {r.source for r in store.all_records(session, project_id=from_version.id)}
    assert sources == {version.id}


def test_labels_come_from_the_data_or_the_option(env):
    project = make(env)
    assert project.labels == ["billing", "shipping", "technical"]
    other = make(env, name="q", labels=["a", "b"], rows=[{"text": f"text {i}"} for i in range(3)])
    assert other.labels == ["a", "b"]
    with pytest.raises(ServiceError, match="labels repeat"):
        make(env, name="r", labels=["a", "a"])


def test_one_record_is_never_handed_to_two_people_at_once(env):
    session, people = env["session"], env["people"]
    project = make(env)
    seen = {}
    for name in ("ann", "bob", "cat"):
        seen[name] = queue.next_record(session, project, people[name], "id")["id"]
    assert len(set(seen.values())) == 3
    # asking again gives the same record back (it is held), not a new one
    assert queue.next_record(session, project, people["ann"], "id")["id"] == seen["ann"]


def test_overlap_hands_a_record_to_n_different_people(env):
    session, people = env["session"], env["people"]
    project = make(env, overlap=2, rows=labelled_rows(1), labels=["billing", "shipping"])
    first = queue.next_record(session, project, people["ann"], "id")
    second = queue.next_record(session, project, people["bob"], "id")
    assert first["id"] == second["id"]
    assert queue.next_record(session, project, people["cat"], "id") is None  # two people hold it already
    queue.submit(session, project, people["ann"], first["id"], {"label": "billing"})
    assert queue.next_record(session, project, people["ann"], "id") is None  # never twice to one person
    queue.submit(session, project, people["bob"], first["id"], {"label": "shipping"})
    record = store.get_record(session, project_id=project.id, record_id=first["id"])
    assert (record.status, record.annotations, record.disagreement) == ("annotated", 2, True)


def test_wrong_values_name_the_field(env):
    session, ann = env["session"], env["people"]["ann"]
    project = make(env)
    record = queue.next_record(session, project, ann)
    with pytest.raises(ServiceError, match="value.label: 'refund' is not one of billing") as e:
        queue.submit(session, project, ann, record["id"], {"label": "refund"})
    assert e.value.param == "value.label"
    with pytest.raises(ServiceError, match="no record 999"):
        queue.submit(session, project, ann, 999, {"label": "billing"})
    queue.submit(session, project, ann, record["id"], {"label": "billing"})
    with pytest.raises(ServiceError, match="already annotated") as e:
        queue.submit(session, project, ann, record["id"], {"label": "shipping"})
    assert e.value.status == 409
    rating = make(env, name="r", task="rating", rows=chat_rows(2))
    with pytest.raises(ServiceError, match="value.rating: '6' is not a whole number from 1 to 5"):
        queue.submit(session, rating, ann, 1 + max(r.id for r in store.all_records(session, project_id=project.id)),
                     {"rating": 6})


def test_undo_withdraws_and_keeps_the_history(env):
    session, ann = env["session"], env["people"]["ann"]
    project = make(env)
    record = queue.next_record(session, project, ann, "id")
    queue.submit(session, project, ann, record["id"], {"label": "billing"})
    back = queue.undo(session, project, ann)
    assert back["id"] == record["id"] and back["previous"] == {"label": "billing"}
    assert queue.next_record(session, project, ann, "id")["id"] == record["id"]
    queue.submit(session, project, ann, record["id"], {"label": "shipping"})
    changes = store.history(session, record_id=record["id"])
    assert [c.action for c in changes] == ["create", "undo", "create"]
    assert changes[1].before["status"] == "submitted" and changes[1].after["status"] == "withdrawn"
    assert changes[0].after["value"] == {"label": "billing"}  # the first answer is still there
    stored = store.get_record(session, project_id=project.id, record_id=record["id"])
    assert stored.human_label == "shipping"
    with pytest.raises(ServiceError, match="nothing to undo"):
        queue.undo(session, project, env["people"]["bob"])


def test_a_rejected_record_goes_back_to_the_queue_first(env):
    session, ann, rev = env["session"], env["people"]["ann"], env["people"]["rev"]
    project = make(env)
    first = queue.next_record(session, project, ann, "id")
    annotation = queue.submit(session, project, ann, first["id"], {"label": "billing"})
    queue.submit(session, project, ann, queue.next_record(session, project, ann, "id")["id"], {"label": "billing"})
    queue.next_record(session, project, ann, "id")  # ann holds a third record now
    with pytest.raises(ServiceError, match="is an annotator") as e:
        queue.review(session, project, env["people"]["bob"], annotation.id, accept=False, comment="no")
    assert e.value.status == 403
    with pytest.raises(ServiceError, match="say why"):
        queue.review(session, project, rev, annotation.id, accept=False)
    queue.review(session, project, rev, annotation.id, accept=False, comment="it is shipping")
    assert store.get_record(session, project_id=project.id, record_id=first["id"]).status == "open"
    again = queue.next_record(session, project, ann, "id")
    assert again["id"] == first["id"]
    assert again["rejected"]["comment"] == "it is shipping"
    fixed = queue.submit(session, project, ann, first["id"], {"label": "shipping"})
    queue.review(session, project, rev, fixed.id, accept=True)
    assert store.get_record(session, project_id=project.id, record_id=first["id"]).status == "accepted"


def test_agreement_of_two_people(env):
    session, people = env["session"], env["people"]
    project = make(env, overlap=2, rows=labelled_rows(6))
    ann_says = ["billing", "shipping", "technical", "billing", "shipping", "technical"]
    bob_says = ["billing", "shipping", "technical", "shipping", "shipping", "billing"]
    for name, answers in (("ann", ann_says), ("bob", bob_says)):
        for label in answers:
            record = queue.next_record(session, project, people[name], "id")
            queue.submit(session, project, people[name], record["id"], {"label": label})
    result = quality.agreement(session, project)
    from tuneloop.evals.agreement import cohen_kappa, krippendorff_alpha

    [pair] = result["kappa_pairs"]
    assert pair["records"] == 6 and pair["value"] == pytest.approx(cohen_kappa(ann_says, bob_says).value, abs=1e-4)
    units = [{"a": a, "b": b} for a, b in zip(ann_says, bob_says)]
    assert result["alpha"]["value"] == pytest.approx(krippendorff_alpha(units).value, abs=1e-4)
    assert quality.disagreement_counts(session, project)["people_or_model"] == 2


def test_export_each_task(env):
    session, ann = env["session"], env["people"]["ann"]
    project = make(env, rows=labelled_rows(3))
    for label in ("billing", "technical"):
        queue.submit(session, project, ann, queue.next_record(session, project, ann, "id")["id"], {"label": label})
    rows = export.export_rows(session, project, "classify")
    assert rows == [{"text": labelled_rows(3)[0]["text"], "label": "billing"},
                    {"text": labelled_rows(3)[1]["text"], "label": "technical"}]
    assert export.export_rows(session, project, "chat")[1]["messages"][-1] == {"role": "assistant",
                                                                               "content": "technical"}
    with pytest.raises(ServiceError, match="exports as classify, chat, sft, not 'dpo'"):
        export.export_rows(session, project, "dpo")

    answers = make(env, name="a", task="response", rows=chat_rows(2))
    first = queue.next_record(session, answers, ann, "id")
    assert first["draft"] == "0" and first["draft_model"] == "dataset"
    queue.submit(session, answers, ann, first["id"], {"text": "Zero."})
    second = queue.next_record(session, answers, ann, "id")
    queue.submit(session, answers, ann, second["id"], {"text": "2"})  # kept the draft
    assert [r["messages"][-1]["content"] for r in export.export_rows(session, answers, "sft")] == ["Zero.", "2"]
    [pair] = export.export_rows(session, answers, "dpo")
    assert pair["preferred_output"][0]["content"] == "Zero." and pair["non_preferred_output"][0]["content"] == "0"

    preference_rows = [{"prompt": "Say hi", "chosen": "Hi!", "rejected": "Go away."}]
    pref = make(env, name="pref", task="preference", rows=preference_rows)
    view = queue.next_record(session, pref, ann, "id")
    assert sorted(o["text"] for o in view["options"]) == ["Go away.", "Hi!"] and view["prediction"] is None
    key = next(o["key"] for o in view["options"] if o["text"] == "Go away.")
    queue.submit(session, pref, ann, view["id"], {"preferred": key})
    [dpo] = export.export_rows(session, pref, "dpo")
    assert dpo["preferred_output"][0]["content"] == "Go away."  # what the person chose, not the dataset's pick

    rated = make(env, name="rated", task="rating", rows=chat_rows(1))
    view = queue.next_record(session, rated, ann, "id")
    queue.submit(session, rated, ann, view["id"], {"rating": 4, "comment": "fine"})
    [reward] = export.export_rows(session, rated, "reward")
    assert reward["rating"] == 4 and reward["comments"] == ["fine"]


def test_prelabels_are_resumable_and_order_the_queue(env, tiny_chat_model):
    session, ann = env["session"], env["people"]["ann"]
    project = make(env)
    model = prelabel.LocalModel(str(tiny_chat_model), env["settings"], name="tiny")

    class Interrupted(Exception):
        pass

    def stop_after_first_batch(done, total):
        assert total == 12  # known from the start
        if done:
            raise Interrupted

    with pytest.raises(Interrupted):
        prelabel.prelabel(session, project, model, batch_size=4, on_progress=stop_after_first_batch)
    assert len(store.predicted_ids(session, project_id=project.id, model="tiny")) == 4
    result = prelabel.prelabel(session, project, model, batch_size=4)
    assert (result.predicted, result.skipped) == (8, 4)
    predictions = store.latest_predictions(session, project_id=project.id, model="tiny")
    assert len(predictions) == 12 and len({p.record_id for p in predictions}) == 12
    for p in predictions:
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert p.label == max(p.probabilities, key=p.probabilities.get)
    records = store.all_records(session, project_id=project.id)
    most_uncertain = max(records, key=lambda r: (r.uncertainty, -r.random_key))
    assert queue.next_record(session, project, ann, "uncertainty")["id"] == most_uncertain.id


def test_prelabel_from_an_openai_compatible_endpoint(env, tiny_chat_model, tmp_path_factory):
    session = env["session"]
    project = make(env, rows=labelled_rows(3))
    answers = make(env, name="a", task="response", rows=chat_rows(2))
    untouched = make(env, name="u", rows=labelled_rows(3))
    for server in live_server(tmp_path_factory.mktemp("teacher"), with_worker=False):
        teacher = prelabel.Endpoint(server["url"], server["key"], str(tiny_chat_model), max_tokens=5)
        assert prelabel.prelabel(session, project, teacher).predicted == 3
        assert prelabel.prelabel(session, answers, teacher).predicted == 2
        wrong_key = prelabel.Endpoint(server["url"], "tl-wrong", str(tiny_chat_model))
        with pytest.raises(ServiceError, match="answered 401"):
            prelabel.prelabel(session, untouched, wrong_key)
    for p in store.latest_predictions(session, project_id=project.id):
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
    drafts = store.latest_predictions(session, project_id=answers.id)
    assert all(p.mean_logprob is not None and p.mean_logprob <= 0 for p in drafts)
    with pytest.raises(ServiceError, match="did not answer"):
        prelabel.prelabel(session, untouched, prelabel.Endpoint("http://127.0.0.1:9", "k", "m"))
    assert store.latest_predictions(session, project_id=untouched.id) == []


def test_table_search_filters_and_sorts(env):
    session = env["session"]
    rows = [{"text": "Refund 50% of order A_1", "label": "billing"}, {"text": "my refund never came", "label": "billing"},
            {"text": "Parcel lost", "label": "shipping"}, {"text": "router 100% broken", "label": "technical"}]
    project = make(env, rows=rows)

    def texts(**filters):
        page = queue.table(session, project, store.TableQuery(**filters))
        return [row["text"] for row in page["data"]], page["total"]

    assert texts(search="REFUND") == (["Refund 50% of order A_1", "my refund never came"], 2)
    assert texts(search="50%") == (["Refund 50% of order A_1"], 1)  # % is a character here, not a wildcard
    assert texts(search="A_1") == (["Refund 50% of order A_1"], 1)
    assert texts(search="0% ") == (["Refund 50% of order A_1", "router 100% broken"], 2)
    assert texts(search="zz") == ([], 0)
    assert texts(sort="id", descending=True, limit=2) == (["router 100% broken", "Parcel lost"], 4)
    assert texts(offset=3) == (["router 100% broken"], 4)
    with pytest.raises(ServiceError, match="sort 'length' is not one of"):
        queue.table(session, project, store.TableQuery(sort="length"))


def test_a_late_claim_never_doubles_a_hold(env):
    """Whatever order two people's claims land in, the second one finds no room (overlap 1)."""
    import time as clock

    session, people = env["session"], env["people"]
    project = make(env, rows=labelled_rows(1), labels=["billing", "shipping"])
    [record] = store.all_records(session, project_id=project.id)
    first, second = sorted([people["ann"], people["bob"]], key=lambda u: u.id, reverse=True)  # larger id first
    now = clock.time()
    assert store.take(session, project=project, record_id=record.id, user_id=first.id, now=now)
    assert not store.take(session, project=project, record_id=record.id, user_id=second.id, now=now)
    assert queue.next_record(session, project, second, "id") is None
    with pytest.raises(ServiceError, match="being annotated by other people") as e:
        queue.submit(session, project, second, record.id, {"label": "billing"})
    assert e.value.status == 409
    queue.submit(session, project, first, record.id, {"label": "billing"})
    with pytest.raises(ServiceError, match="has all the annotations it needs"):
        queue.submit(session, project, people["cat"], record.id, {"label": "billing"})


def claim_concurrently(factory, project_id: str, users: list, per_person: int) -> list[int]:
    """Every user, in their own thread and session, asks for the next record and answers it, `per_person`
    times, all at once. Returns the record ids handed out; any error fails the test."""
    import threading

    got, errors = [], []

    def claim(user):
        try:
            with factory() as own:
                project = store.find_project(own, ref=project_id)
                for _ in range(per_person):
                    view = queue.next_record(own, project, user, "uncertainty")
                    got.append(view["id"])
                    queue.submit(own, project, user, view["id"], {"label": "billing"})
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=claim, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    return got


def test_concurrent_claims_hand_each_record_to_one_person(env):
    """Six people asking at once, from six threads with their own sessions, on a shared SQLite file."""
    from tuneloop.services.auth import create_user as add_user

    session = env["session"]
    project = make(env, rows=labelled_rows(12))
    users = [add_user(session, username=f"p{i}", password="password-123", role="annotator") for i in range(6)]
    handed = claim_concurrently(sessions(session.get_bind()), project.id, users, 2)
    assert len(handed) == 12 and len(set(handed)) == 12  # twelve records, each to one person
    assert store.count_records(session, project_id=project.id)["annotated"] == 12


def test_undo_never_takes_back_a_record_someone_else_now_holds(env):
    session, ann, bob = env["session"], env["people"]["ann"], env["people"]["bob"]
    project = make(env, rows=labelled_rows(1), labels=["billing", "shipping"])
    view = queue.next_record(session, project, ann, "id")
    queue.skip(session, project, ann, view["id"])
    assert queue.next_record(session, project, bob, "id")["id"] == view["id"]
    with pytest.raises(ServiceError, match="went to someone else"):
        queue.undo(session, project, ann)
    [skipped] = [a for a in store.annotations_of(session, record_ids=[view["id"]]) if a.user_id == ann.id]
    assert skipped.status == "skipped"  # nothing changed
    assert store.holds(session, record_id=view["id"], user_id=bob.id, now=__import__("time").time())


def test_bulk_accept_settles_records_with_the_models_label_kept_as_the_models(env):
    """Only reviewers bulk-accept. An accepted model label settles the record (status accepted, the counters
    agree), frees it from whoever held it, and is kept as the model's: it exports for training, but agreement,
    models-against-people and the held-out score never count it."""
    session, ann, bob, rev = (env["session"], env["people"]["ann"], env["people"]["bob"], env["people"]["rev"])
    project = make(env, overlap=2)
    records = store.all_records(session, project_id=project.id)
    store.add_predictions(session, project_id=project.id, rows=[
        {"record_id": r.id, "model": "m", "answer": {"label": "billing"}, "label": "billing"} for r in records])
    for r in records:
        r.pred_label, r.pred_model = "billing", "m"
    session.commit()
    held = queue.next_record(session, project, ann, "id")
    with pytest.raises(ServiceError, match="'ann' is an annotator") as e:
        queue.bulk_accept(session, project, ann, [held["id"]])
    assert e.value.status == 403
    answered = {"id": next(r.id for r in records if r.id != held["id"])}
    queue.submit(session, project, bob, answered["id"], {"label": "shipping"})  # 1 of the 2 answers it needs
    free = [r for r in records if r.id not in (held["id"], answered["id"])]
    free[1].pred_label = None
    session.commit()
    chosen = [held["id"], answered["id"], free[0].id, free[1].id, 999_999]
    result = queue.bulk_accept(session, project, rev, chosen)
    assert result == {
        "accepted": 2, "left": {"not in this project": 1, "people answered it": 1, "no prediction": 1}}
    with pytest.raises(ServiceError, match="has all the annotations it needs"):  # ann moves on: 409, not stuck
        queue.submit(session, project, ann, held["id"], {"label": "billing"})
    assert queue.next_record(session, project, ann, "id")["id"] not in (held["id"], free[0].id)
    [accepted] = store.annotations_of(session, record_ids=[held["id"]])
    assert (accepted.source, accepted.model, accepted.user_id, accepted.status) == ("model", "m", rev.id, "accepted")
    record = store.get_record(session, project_id=project.id, record_id=held["id"])
    assert (record.status, record.answer_source, record.human_label, record.annotations) == (
        "accepted", "model", "billing", 0)
    assert projects.counters(session, project)["accepted"] == 2
    assert {row["text"] for row in export.export_rows(session, project, "classify")} == {
        record.text, free[0].text}  # it trains
    # but it is nobody's answer: only bob's counts
    assert store.human_labels(session, project_id=project.id) == {answered["id"]: ["shipping"]}
    [report] = quality.model_vs_human(session, project)
    assert (report["records"], report["accuracy"]) == (1, 0.0)
    assert quality.agreement(session, project)["annotators"] == 1
    queue.review(session, project, env["people"]["rev"], accepted.id, accept=False, comment="not billing")
    record = store.get_record(session, project_id=project.id, record_id=held["id"])
    assert (record.status, record.answer_source, record.human_label) == ("open", None, None)  # back in the queue


def test_reviews_follow_rules(env):
    session, ann, rev = env["session"], env["people"]["ann"], env["people"]["rev"]
    project = make(env, overlap=2)
    mine = queue.submit(session, project, ann, queue.next_record(session, project, ann, "id")["id"],
                        {"label": "billing"})
    own = queue.submit(session, project, rev, queue.next_record(session, project, rev, "id")["id"],
                       {"label": "billing"})
    with pytest.raises(ServiceError, match="not their own"):
        queue.review(session, project, rev, own.id, accept=True)
    queue.review(session, project, rev, mine.id, accept=False, comment="check it")
    with pytest.raises(ServiceError, match="only submitted"):
        queue.review(session, project, rev, mine.id, accept=True)


def test_project_names_must_fit_in_an_address(env):
    data = write_jsonl(env["data"] / "data.jsonl", labelled_rows(3))
    for name in ("a/b", "票据", "", "-x"):
        with pytest.raises(ServiceError, match="use 1-100 letters"):
            projects.create_project(env["session"], env["settings"], name=name, task="classification", data=str(data))


def test_multi_label_model_against_people(env):
    session, ann = env["session"], env["people"]["ann"]
    project = make(env, rows=[{"text": f"t{i}"} for i in range(3)], labels=["a", "b", "c"], multi_label=True)
    answers = [["a", "b"], ["c"], ["b"]]
    for labels in answers:
        view = queue.next_record(session, project, ann, "id")
        annotation = queue.submit(session, project, ann, view["id"], {"labels": labels})
    assert annotation.value == {"labels": ["b"]}
    records = store.all_records(session, project_id=project.id)
    for record, predicted in zip(records, ["b", "a", "b"]):  # hit, miss, hit
        store.add_predictions(session, project_id=project.id, rows=[{"record_id": record.id, "model": "m",
                                                                     "answer": {"label": predicted},
                                                                     "label": predicted}])
    session.commit()
    [report] = quality.model_vs_human(session, project)
    assert report["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["per_label"]["b"]["precision"] == 1.0 and report["per_label"]["b"]["recall"] == 1.0
    assert report["per_label"]["c"]["recall"] == 0.0 and report["kappa"]["value"] is None
    with pytest.raises(ServiceError, match="value.labels"):
        queue.submit(session, project, env["people"]["bob"], records[0].id, {"labels": ["zzz"]})


class KeywordModel:
    """A model that labels by a fixed rule (right or wrong on purpose): the Predictor protocol, with
    answers a test can count on."""

    def __init__(self, name: str, right: bool):
        self.name, self.right = name, right

    def classify(self, texts, labels):
        out = []
        for text in texts:
            gold = next(label for label in labels if f"topic {label} " in text)
            chosen = gold if self.right else next(label for label in labels if label != gold)
            out.append([0.9 if label == chosen else 0.1 / (len(labels) - 1) for label in labels])
        return out


def test_a_round_below_the_model_in_use_keeps_the_queue_and_the_lead_chooses(env):
    """Defect: re-predicting with a model the project had used recorded a round without predicting, and the
    newest model always took the queue. Now a model scores every remaining record again, a round below the
    model in use does not take the queue over (and says so), and the lead picks the model."""
    from tuneloop.services.review import rounds

    session, ann = env["session"], env["people"]["ann"]
    project = make(env, rows=labelled_rows(12), holdout=0.5)
    gold = {row["text"]: row["label"] for row in labelled_rows(12)}
    while (view := queue.next_record(session, project, ann, "id")) is not None and view["split"] == "holdout":
        assert view["prediction"] is None
        queue.submit(session, project, ann, view["id"], {"label": gold[view["text"]]})
    good, bad = KeywordModel("good", right=True), KeywordModel("bad", right=False)

    def round_with(model):
        started = time.time()
        result = prelabel.prelabel(session, project, model, since=started, use=False)
        return rounds.record_round(session, project, model.name, labels_used=6, seconds=0.0,
                                   predicted=result.predicted)

    first = round_with(good)
    assert (first.accuracy, first.predicted, project.prefill_model) == (1.0, 12, "good")
    second = round_with(bad)
    assert (second.accuracy, second.replaced, project.prefill_model) == (0.0, None, "good")
    pool = [r for r in store.all_records(session, project_id=project.id) if r.split == "pool"]
    assert all(r.pred_label == gold[r.text] and r.pred_model == "good" for r in pool)  # still good's labels
    [*_, shown] = rounds.rounds_view(session, project)
    assert shown["below"] == {"model": "good", "accuracy": 1.0} and not shown["in_use"]
    third = round_with(good)  # good again: scores everything again, not "0 records"
    assert (third.predicted, third.accuracy) == (12, 1.0)
    assert len(store.predictions_of(session, record_id=pool[0].id)) == 3
    view = queue.record_view(session, project, pool[0], ann)
    assert view["prediction"]["model"] == "good" and view["prediction"]["label"] == gold[pool[0].text]
    with pytest.raises(ServiceError, match="prefill_model 'nobody' has not predicted in project 'p'; models that "
                                           "have: good, bad"):
        projects.update_project(session, project, prefill_model="nobody")
    projects.update_project(session, project, prefill_model="bad")  # the lead's choice
    assert all(r.pred_model == "bad" and r.pred_label != gold[r.text] for r in pool)
    assert queue.record_view(session, project, pool[0], ann)["prediction"]["model"] == "bad"
    projects.update_project(session, project, hide_predictions=True)
    assert queue.record_view(session, project, pool[0], ann)["prediction"] is None


def test_a_repredict_with_nothing_to_predict_records_no_round(env, tiny_chat_model):
    from tuneloop.services.review import rounds

    session, ann = env["session"], env["people"]["ann"]
    project = make(env, rows=labelled_rows(3))
    while (view := queue.next_record(session, project, ann, "id")) is not None:
        queue.submit(session, project, ann, view["id"], {"label": "billing"})
    with pytest.raises(ServiceError, match="no open or held-out records to re-predict; no round was recorded"):
        rounds.repredict(session, env["settings"], project, str(tiny_chat_model))
    assert store.list_rounds(session, project_id=project.id) == []


def test_a_tie_goes_to_adjudication_and_exports_only_when_settled(env):
    """Defect: a 1-1 tie was exported as one of the two labels, with no flag. Now it has no answer, export
    leaves it out and says so (unless the lead asks for every annotation), and a reviewer adjudicates it; the
    people's labels stay, and agreement still counts them."""
    from tuneloop.services.review import adjudication

    session, ann, bob, cat, rev = (env["session"], *(env["people"][n] for n in ("ann", "bob", "cat", "rev")))
    project = make(env, rows=labelled_rows(3), overlap=2)
    tie, majority, agreed = store.all_records(session, project_id=project.id)
    for record, labels in ((tie, ("billing", "shipping")), (agreed, ("technical", "technical"))):
        for person, label in zip((ann, bob), labels):
            queue.submit(session, project, person, record.id, {"label": label})
    project.overlap = 3
    for person, label in zip((ann, bob, cat), ("billing", "billing", "shipping")):
        queue.submit(session, project, person, majority.id, {"label": label})
    project.overlap = 2
    session.commit()
    assert [(r.answer_source, r.human_label) for r in (tie, majority, agreed)] == [
        ("tie", None), ("majority", "billing"), ("people", "technical")]
    report = export.export_report(session, project, "classify")
    assert report.rows == [{"text": agreed.text, "label": "technical"}]
    assert report.left_out == {"people tied (not adjudicated)": 1, "people disagree (not adjudicated)": 1}
    majority_rows = export.export_rows(session, project, "classify", policy="majority")
    assert sorted(r["label"] for r in majority_rows) == ["billing", "technical"]  # the tie is still left out
    everything = export.export_rows(session, project, "classify", policy="annotations")
    assert [(a["annotator"], a["answer"]["label"]) for a in everything[0]["annotations"]] == [
        ("ann", "billing"), ("bob", "shipping")]
    with pytest.raises(ServiceError, match="'ann' is an annotator"):
        adjudication.next_disputed(session, project, ann)
    first = adjudication.next_disputed(session, project, rev)
    assert first["id"] == tie.id and [(a["user"], a["labels"]) for a in first["answers"]] == [
        ("ann", ["billing"]), ("bob", ["shipping"])]
    assert adjudication.next_disputed(session, project, rev, after=tie.id)["id"] == majority.id
    with pytest.raises(ServiceError, match="has no disagreement to adjudicate"):
        adjudication.adjudicate(session, project, rev, agreed.id, {"label": "billing"})
    with pytest.raises(ServiceError, match="value.label: 'refund' is not one of"):
        adjudication.adjudicate(session, project, rev, tie.id, {"label": "refund"})
    adjudication.adjudicate(session, project, rev, tie.id, {"label": "shipping"})
    adjudication.adjudicate(session, project, rev, tie.id, {"label": "billing"})  # changed their mind
    session.refresh(tie)
    assert (tie.answer_source, tie.human_label, tie.status) == ("adjudicated", "billing", "accepted")
    assert adjudication.counts(session, project) == {"to_adjudicate": 1, "ties": 0, "adjudicated": 1}
    assert [a.status for a in store.annotations_of(session, record_ids=[tie.id]) if a.source == "adjudication"] == [
        "withdrawn", "submitted"]
    assert {"ann", "bob"} <= {u for pair in quality.agreement(session, project)["kappa_pairs"] for u in pair["people"]}
    rows = export.export_rows(session, project, "classify")
    assert {r["text"]: r["label"] for r in rows} == {tie.text: "billing", agreed.text: "technical"}
    assert store.human_labels(session, project_id=project.id)[tie.id] == ["billing"]  # it measures models too


def test_records_labelled_outside_the_given_labels_are_counted_and_the_lead_decides(env):
    """Defect: `--labels billing,shipping` took a file whose records carried other labels, silently."""
    rows = labelled_rows(6) + [{"text": "a refund please", "label": "refund"}, {"text": "another", "label": "refund"}]
    path = write_jsonl(env["data"] / "outside.jsonl", rows)
    with pytest.raises(ServiceError, match=r"outside\.jsonl@[0-9a-f]{12}: 4 record\(s\) carry labels outside the "
                                           r"label set billing, shipping: technical \(2\), refund \(2\)\. Add those "
                                           r"labels to the set, or leave those records out") as e:
        projects.create_project(env["session"], env["settings"], name="x", task="classification", data=str(path),
                                labels=["billing", "shipping"])
    assert (e.value.param, e.value.code) == ("labels", "unknown_labels")
    assert store.find_project(env["session"], ref="x") is None  # nothing stored
    added = projects.create_project(env["session"], env["settings"], name="added", task="classification",
                                    data=str(path), labels=["billing", "shipping"], unknown_labels="add")
    assert added.labels == ["billing", "shipping", "refund", "technical"]
    assert len(store.all_records(env["session"], project_id=added.id)) == 8
    dropped = projects.create_project(env["session"], env["settings"], name="dropped", task="classification",
                                      data=str(path), labels=["billing", "shipping"], unknown_labels="drop")
    assert dropped.labels == ["billing", "shipping"]
    assert len(store.all_records(env["session"], project_id=dropped.id)) == 4


def test_a_lead_edits_a_project_and_its_people_after_creation(env):
    from tuneloop.services.auth import update_user

    session, ann, bob, rev = (env["session"], *(env["people"][n] for n in ("ann", "bob", "rev")))
    project = make(env, rows=labelled_rows(3), overlap=1)
    first = queue.next_record(session, project, ann, "id")
    queue.submit(session, project, ann, first["id"], {"label": "billing"})
    with pytest.raises(ServiceError, match=r"labels: people used billing \(1 answers\); a label in use cannot be "
                                           "removed"):
        projects.update_project(session, project, labels=["shipping", "technical"], guidelines="changed")
    assert project.guidelines == "" and project.labels == ["billing", "shipping", "technical"]  # nothing changed
    projects.update_project(session, project, labels=["technical", "billing", "shipping", "refund"],
                            guidelines="# New", overlap=2)
    record = store.get_record(session, project_id=project.id, record_id=first["id"])
    assert (project.labels[-1], project.guidelines, record.status) == ("refund", "# New", "open")  # needs one more
    with pytest.raises(ServiceError, match="overlap 0"):
        projects.update_project(session, project, overlap=0)
    projects.add_member(session, project, "bob")
    held = queue.next_record(session, project, bob, "id")
    projects.remove_member(session, project, "bob")
    assert not store.is_member(session, project_id=project.id, user_id=bob.id)
    assert not store.holds(session, record_id=held["id"], user_id=bob.id, now=time.time())
    with pytest.raises(ServiceError, match="'bob' is not a member"):
        projects.remove_member(session, project, "bob")

    admin = store.create_user(session, username="boss", password_hash="x", role="admin")
    session.commit()
    with pytest.raises(ServiceError, match="'boss' is the only admin"):
        update_user(session, "boss", role="annotator")
    with pytest.raises(ServiceError, match="you cannot disable your own account"):
        update_user(session, "ann", disabled=True, by=ann)
    update_user(session, "rev", role="admin")
    update_user(session, "boss", role="reviewer", by=rev)
    assert admin.role == "reviewer"
    update_user(session, "ann", password="a-new-password", disabled=True, by=rev)
    assert authenticate(session, username="ann", password="a-new-password") is None  # disabled
    update_user(session, "ann", disabled=False, by=rev)
    assert authenticate(session, username="ann", password="a-new-password").id == ann.id
    with pytest.raises(ServiceError, match="at least 8"):
        update_user(session, "ann", password="short")


def test_gold_questions_are_mixed_in_at_the_rate_and_flag_a_careless_person(env):
    from tuneloop.services.review import gold

    session, ann, bob, rev = (env["session"], *(env["people"][n] for n in ("ann", "bob", "rev")))
    rows = labelled_rows(10)
    truth = {row["text"]: row["label"] for row in rows}
    project = make(env, rows=rows, gold=0.3, gold_rate=0.5)
    golden = {r.id for r in store.all_records(session, project_id=project.id, split="gold")}
    assert len(golden) == 3 and all(r.gold == {"label": truth[r.text]}
                                    for r in store.all_records(session, project_id=project.id, split="gold"))
    counters = projects.counters(session, project)
    assert (counters["records"], counters["gold"], counters["open"]) == (7, 3, 7)
    handed = []
    for _ in range(6):  # ann answers the work right and every gold question wrong
        view = queue.next_record(session, project, ann, "id")
        assert view["split"] == "pool" and view["prediction"] is None or view["id"] not in golden
        handed.append(view["id"] in golden)
        wrong = next(label for label in project.labels if label != truth[view["text"]])
        queue.submit(session, project, ann, view["id"], {"label": wrong if view["id"] in golden else truth[view["text"]]})
    assert handed == [False, True, False, True, False, True]  # every second record, at a rate of 0.5
    for record_id in golden:  # bob answers them all right: a gold question never fills up
        record = store.get_record(session, project_id=project.id, record_id=record_id)
        queue.submit(session, project, bob, record_id, {"label": truth[record.text]})
        assert record.status == "open" and record.answer_source is None
    report = gold.gold_report(session, project)
    assert [(p["user"], p["answered"], p["correct"], p["flagged"]) for p in report["people"]] == [
        ("ann", 3, 0, True), ("bob", 3, 3, False)]
    # undoing a wrong answer to a gold question and answering again does not change the score: the first counts
    last = store.last_annotation(session, project_id=project.id, user_id=ann.id)
    assert last.record_id in golden
    again = queue.undo(session, project, ann)
    queue.submit(session, project, ann, again["id"], {"label": truth[again["text"]]})
    assert gold.gold_report(session, project)["people"][0]["correct"] == 0
    assert export.export_report(session, project, "classify").left_out["gold questions"] == 3
    assert quality.agreement(session, project)["kappa_pairs"] == []  # gold answers are not agreement
    settled = next(r for r in store.all_records(session, project_id=project.id)
                   if r.split == "pool" and r.status == "annotated")
    result = gold.mark_gold(session, project, rev, [settled.id, next(iter(golden))])
    assert result == {"gold": 1, "left": {"gold already": 1}, "rate": 0.5}
    assert [p["answered"] for p in gold.gold_report(session, project)["people"]] == [3, 3]  # ann's earlier
    with pytest.raises(ServiceError, match="'ann' is an annotator"):                 # answer measures nobody
        gold.mark_gold(session, project, ann, [settled.id])
    with pytest.raises(ServiceError, match="gold 0.5: 5 gold questions need labelled records"):
        make(env, name="nogold", rows=[{"text": f"t{i}"} for i in range(10)], labels=["a", "b"], gold=0.5)
    with pytest.raises(ServiceError, match="gold 0.9: keep from 0 to 0.5 of the records as gold questions"):
        make(env, name="mostlygold", rows=labelled_rows(10), gold=0.9)


def test_throughput_per_person_and_time_to_agreement(env):
    session, ann, bob = env["session"], env["people"]["ann"], env["people"]["bob"]
    project = make(env, rows=labelled_rows(4), overlap=2)
    records = store.all_records(session, project_id=project.id)
    # ann answers every 20 s, with a long break before the last; bob answers two records 60 s after ann
    for at, person, record in ((0, ann, 0), (20, ann, 1), (40, ann, 2), (2000, ann, 3), (60, bob, 0), (100, bob, 1)):
        annotation = queue.submit(session, project, person, records[record].id, {"label": "billing"})
        annotation.created_at = 1000.0 + at
    session.commit()
    report = quality.throughput(session, project)
    assert report["people"] == [
        {"user": "ann", "records": 4, "seconds_per_record": 20.0, "records_per_hour": 180.0},  # the break is left out
        {"user": "bob", "records": 2, "seconds_per_record": 40.0, "records_per_hour": 90.0}]
    assert (report["time_to_agreement"], report["settled_by_several"]) == (70.0, 2)  # 60 s and 80 s


def test_a_rounds_held_out_score_never_counts_a_model_sourced_label(env):
    """However a model's label got onto a held-out record (a bulk accept refuses it; the previous release's did
    not, and migration 0006 keeps those as the model's), the round's score rests on people's labels only."""
    from tuneloop.services.review import rounds

    session, ann, rev = env["session"], env["people"]["ann"], env["people"]["rev"]
    project = make(env, rows=labelled_rows(6), holdout=0.5)
    held = store.all_records(session, project_id=project.id, split="holdout")
    assert queue.bulk_accept(session, project, rev, [held[0].id])["left"] == {"held out (people label those)": 1}
    store.add_annotation(session, record=held[0], user_id=rev.id, value={"label": "billing"}, status="accepted",
                         source="model", model="m")  # as the previous release left it
    queue.refresh_record(session, project, held[0])
    for record in held[1:]:
        queue.submit(session, project, ann, record.id, {"label": "shipping"})
    store.add_predictions(session, project_id=project.id, rows=[
        {"record_id": r.id, "model": "m", "answer": {"label": "billing"}, "label": "billing"} for r in held])
    session.commit()
    accuracy, _, records = rounds.holdout_accuracy(session, project, "m")
    assert (accuracy, records) == (0.0, 2)  # the model agrees only with its own label, which is not counted
