"""Span labelling (named entities) through the services, on a real SQLite database: import with spans, the
answers people give and what is wrong with a bad one, agreement on spans, adjudication, export as character
offsets and BIO, pre-labels from a token classifier, model reports, rounds and training on reviewed records."""

from __future__ import annotations

import time

import pytest

from tests.services.test_review import env, make  # noqa: F401  (the fixture)
from tuneloop.evals.spans import Predicted
from tuneloop.services import ServiceError
from tuneloop.services.review import adjudication, export, prelabel, projects, quality, queue, rounds
from tuneloop.services.review.tasks.spans import key_from_label, key_label
from tuneloop.store import review as store

LABELS = ["ORDER", "DATE"]


def ticket(i: int, marked: bool = True) -> dict:
    text = f"order VC-{10000 + i} arrived on 3 May"
    spans = [{"start": 6, "end": 14, "label": "ORDER"}, {"start": 26, "end": 31, "label": "DATE"}]
    return {"text": text, "spans": spans} if marked else {"text": text}


ORDER_ONLY = [{"start": 6, "end": 14, "label": "ORDER"}]
BOTH = [*ORDER_ONLY, {"start": 26, "end": 31, "label": "DATE"}]


class RuleModel:
    """A token classifier stand-in that marks order numbers always and dates only when `dates` (the
    Predictor protocol's `spans`, with answers a test can count on)."""

    def __init__(self, name: str, dates: bool):
        self.name, self.dates = name, dates

    def spans(self, texts, labels):
        return [Predicted([(6, 14, "ORDER"), *([(26, 31, "DATE")] if self.dates else [])],
                          [0.9, *([0.6] if self.dates else [])], 0.3 if self.dates else 0.1) for _ in texts]


def test_a_spans_project_imports_texts_with_and_without_spans(env):
    session = env["session"]
    project = make(env, task="spans", rows=[*(ticket(i) for i in range(6)), *(ticket(i, False) for i in range(6, 10))])
    assert project.labels == ["DATE", "ORDER"]  # from the spans
    assert store.count_records(session, project_id=project.id)["total"] == 10
    with pytest.raises(ServiceError, match=r"2 record\(s\) carry labels outside the label set ORDER: DATE \(2\)"):
        make(env, name="q", task="spans", rows=[ticket(0), ticket(1), ticket(2, False)], labels=["ORDER"])
    dropped = make(env, name="r", task="spans", rows=[ticket(0), ticket(1), ticket(2, False)], labels=["ORDER"],
                   unknown_labels="drop")
    assert store.count_records(session, project_id=dropped.id)["total"] == 1
    bad = [ticket(0), {"text": "x", "spans": [{"start": 0, "end": 9, "label": "ORDER"}]}]
    with pytest.raises(ServiceError, match=r"line 2: spans\[0\] runs from 0 to 9, outside the text"):
        make(env, name="s", task="spans", rows=bad)
    # a span file is no label set for a classification project (its spans' labels are not the texts' labels)
    with pytest.raises(ServiceError, match="has no labels to take the label set from"):
        make(env, name="c", rows=[ticket(i) for i in range(4)])
    one = make(env, name="one", task="spans", rows=[ticket(0, False)], labels=["ORDER"])  # one label is a set
    projects.update_project(session, one, labels=["PRODUCT"])
    assert one.labels == ["PRODUCT"]
    gold = make(env, name="g", task="spans", rows=[ticket(i) for i in range(10)], gold=0.2)
    golden = store.all_records(session, project_id=gold.id, split="gold")
    assert len(golden) == 2 and golden[0].gold == {"spans": BOTH}


def test_answers_are_checked_span_by_span(env):
    session, ann = env["session"], env["people"]["ann"]
    project = make(env, task="spans", rows=[ticket(i, False) for i in range(4)], labels=LABELS)
    view = queue.next_record(session, project, ann, "id")
    assert view["draft_spans"] == [] and view["text"] == "order VC-10000 arrived on 3 May"
    cases = [({"spans": "ORDER"}, "value.spans: give a list of spans"),
             ({"spans": [{"start": 6, "end": 99, "label": "ORDER"}]}, r"value.spans\[0\]: 6 to 99 is not a stretch"),
             ({"spans": [{"start": 6, "end": 14, "label": "PRODUCT"}]}, r"value.spans\[0\].label: 'PRODUCT' is not one"),
             ({"spans": [{"start": "6", "end": 14, "label": "ORDER"}]}, r"value.spans\[0\]: start and end are"),
             ({"spans": [{"start": 6, "end": 14, "label": "ORDER"}, {"start": 10, "end": 20, "label": "DATE"}]},
              "the spans 6-14 and 10-20 overlap"),
             ({"spans": [{"start": 5, "end": 14, "label": "ORDER"}]}, r"' VC-10000' starts or ends with whitespace"),
             ({"spans": [{"start": 0, "end": 1, "label": "ORDER"}] * 40}, "40 spans in a text of 31 characters"),
             ({"spans": [{"start": True, "end": 14, "label": "ORDER"}]}, r"value.spans\[0\]: start and end are")]
    for value, message in cases:
        with pytest.raises(ServiceError, match=message) as e:
            queue.submit(session, project, ann, view["id"], value)
        assert e.value.status == 400 and e.value.param.startswith("value.spans")
    assert store.annotations_of(session, record_ids=[view["id"]], statuses=store.HOLDS) == []  # nothing stored
    queue.submit(session, project, ann, view["id"], {"spans": list(reversed(BOTH))})
    record = store.get_record(session, project_id=project.id, record_id=view["id"])
    assert record.human_labels == [[6, 14, "ORDER"], [26, 31, "DATE"]] and record.answer_source == "people"
    empty = queue.next_record(session, project, ann, "id")
    queue.submit(session, project, ann, empty["id"], {"spans": []})  # "nothing to mark" is an answer too
    assert store.get_record(session, project_id=project.id, record_id=empty["id"]).human_labels == []


def test_agreement_adjudication_and_export(env):
    session, people = env["session"], env["people"]
    project = make(env, task="spans", rows=[ticket(i, False) for i in range(4)], labels=LABELS, overlap=2)
    answers = {"ann": [BOTH, BOTH, BOTH, ORDER_ONLY], "bob": [BOTH, ORDER_ONLY, BOTH, ORDER_ONLY]}
    for name, values in answers.items():
        for value in values:
            view = queue.next_record(session, project, people[name], "id")
            queue.submit(session, project, people[name], view["id"], {"spans": value})
    report = quality.agreement(session, project)["spans"]
    # ann marked 7 spans, bob 6, and 6 are the same: precision 6/7 (ann's found by bob), recall 6/6 -> 12/13
    assert report["records"] == 4 and report["exact_f1"] == pytest.approx(12 / 13, abs=1e-4)
    assert report["partial_f1"] == report["exact_f1"] and 0 < report["token_alpha"] < 1
    assert report["pairs"][0]["people"] == ["ann", "bob"]
    [tie] = adjudication.disputed(session, project)
    assert tie.answer_source == "tie" and tie.human_labels is None
    assert {len(r["spans"]) for r in export.export_rows(session, project, "spans")} == {1, 2}
    left = export.export_report(session, project, "spans").left_out
    assert left == {"people tied (not adjudicated)": 1}
    adjudication.adjudicate(session, project, people["rev"], tie.id, {"spans": ORDER_ONLY})
    rows = export.export_rows(session, project, "spans")
    assert len(rows) == 4 and rows[1] == {"text": "order VC-10001 arrived on 3 May", "spans": ORDER_ONLY}
    bio = export.export_rows(session, project, "bio")
    assert bio[0] == {"tokens": ["order", "VC", "-", "10000", "arrived", "on", "3", "May"],
                      "tags": ["O", "B-ORDER", "I-ORDER", "I-ORDER", "O", "O", "B-DATE", "I-DATE"]}
    with pytest.raises(ServiceError, match="exports as spans, bio, not 'chat'"):
        export.export_rows(session, project, "chat")


def test_pre_labels_model_reports_and_rounds_score_entities(env):
    session, ann = env["session"], env["people"]["ann"]
    project = make(env, task="spans", rows=[ticket(i, False) for i in range(10)], labels=LABELS, holdout=0.4)
    result = prelabel.prelabel(session, project, RuleModel("orders-only", dates=False))
    assert result.predicted == 10
    view = queue.next_record(session, project, ann, "id")
    shown = view["draft_spans"] if view["split"] == "pool" else None
    while view is not None:
        if view["split"] == "holdout":
            assert view["draft_spans"] == [] and view["prediction"] is None  # held-out records show no spans
        else:
            shown = view["draft_spans"]
        queue.submit(session, project, ann, view["id"], {"spans": BOTH})
        view = queue.next_record(session, project, ann, "id")
    assert shown == ORDER_ONLY
    [report] = quality.model_vs_human(session, project)
    # the model finds every order number and no date: precision 1, recall 1/2, no record exactly right
    assert report["entity"]["precision"] == 1.0 and report["entity"]["recall"] == 0.5
    assert report["accuracy"] == 0.0 and report["per_label"]["DATE"]["recall"] == 0.0
    first = rounds.record_round(session, project, "orders-only", labels_used=6, seconds=0.0, predicted=10)
    assert first.accuracy == pytest.approx(2 / 3, abs=1e-4)  # entity F1 on the 4 held-out records
    started = time.time()
    prelabel.prelabel(session, project, RuleModel("both", dates=True), since=started, use=False)
    second = rounds.record_round(session, project, "both", labels_used=6, seconds=0.0, predicted=10)
    assert second.accuracy == 1.0 and project.prefill_model == "both"
    view = rounds.rounds_view(session, project)[-1]
    assert view["metric"] == "entity F1" and view["in_use"]
    held_out = store.all_records(session, project_id=project.id, split="holdout")  # the open ones: none left
    assert [(r.pred_label, r.disagreement) for r in held_out] == [("6:14 ORDER|26:31 DATE", False)] * 4


def test_train_on_reviewed_trains_a_token_classifier(env):
    session, ann = env["session"], env["people"]["ann"]
    project = make(env, task="spans", rows=[ticket(i) for i in range(12)], labels=LABELS)
    for _ in range(12):
        view = queue.next_record(session, project, ann, "id")
        queue.submit(session, project, ann, view["id"], {"spans": BOTH})
    job = rounds.train_on_reviewed(session, env["settings"], project, any_path=True)
    assert (job.model, job.recipe["model"], job.recipe["method"]) == ("minilm-l6", "minilm-l6", "token_classify")
    assert job.job_metadata == {"project": project.id, "examples": "12"}
    with pytest.raises(ServiceError, match="no generative classifier"):
        rounds.train_on_reviewed(session, env["settings"], project, classifier="generative", any_path=True)


def test_the_table_filters_span_records_by_label_and_gold_comes_from_settled_spans(env):
    session, ann, rev = env["session"], env["people"]["ann"], env["people"]["rev"]
    project = make(env, task="spans", rows=[ticket(i, False) for i in range(3)], labels=LABELS)
    for value in (BOTH, ORDER_ONLY, []):
        view = queue.next_record(session, project, ann, "id")
        queue.submit(session, project, ann, view["id"], {"spans": value})
    dated = store.table_page(session, project_id=project.id, query=store.TableQuery(label="DATE"), label_lists=True)[0]
    ordered = store.table_page(session, project_id=project.id, query=store.TableQuery(label="ORDER"), label_lists=True)[0]
    assert ([r.source_index for r in dated], [r.source_index for r in ordered]) == ([1], [1, 2])
    rows = queue.table(session, project, store.TableQuery())["data"]
    assert [r["answer_text"] for r in rows] == ["ORDER “VC-10000”, DATE “3 May”", "ORDER “VC-10001”", "no spans"]
    prelabel.prelabel(session, project, RuleModel("dates", dates=True), records="all")
    predicted = queue.table(session, project, store.TableQuery(prediction="DATE"))["data"]
    assert len(predicted) == 3 and predicted[0]["prediction_text"] == "ORDER “VC-10000”, DATE “3 May”"
    assert queue.table(session, project, store.TableQuery(prediction="ORD"))["total"] == 0  # whole labels only
    from tuneloop.services.review import gold

    first, second, third = store.all_records(session, project_id=project.id)
    made = gold.mark_gold(session, project, rev, [first.id, second.id, third.id])
    assert made["gold"] == 3 and first.gold["spans"] == BOTH and second.gold["spans"] == ORDER_ONLY
    assert third.gold["spans"] == []  # people agreed it has nothing to mark: a gold question too


def test_a_reviewer_bulk_accepts_the_models_spans(env):
    session, ann, rev = env["session"], env["people"]["ann"], env["people"]["rev"]
    project = make(env, task="spans", rows=[ticket(i, False) for i in range(4)], labels=LABELS)
    records = store.all_records(session, project_id=project.id)
    prelabel.prelabel(session, project, RuleModel("orders", dates=False))
    view = queue.next_record(session, project, ann, "id")
    queue.submit(session, project, ann, view["id"], {"spans": BOTH})
    with pytest.raises(ServiceError) as e:
        queue.bulk_accept(session, project, ann, [r.id for r in records])
    assert e.value.status == 403
    result = queue.bulk_accept(session, project, rev, [r.id for r in records])
    assert result == {"accepted": 3, "left": {"settled already": 1}}
    accepted = store.get_record(session, project_id=project.id, record_id=records[1].id)
    assert (accepted.answer_source, accepted.human_labels) == ("model", [[6, 14, "ORDER"]])
    assert len(export.export_rows(session, project, "spans")) == 4  # model spans train...
    assert quality.model_vs_human(session, project)[0]["records"] == 1  # ...but never measure the model
    from tests.conftest import chat_rows

    drafts = make(env, name="drafts", task="response", rows=chat_rows(2))
    with pytest.raises(ServiceError, match="a response project's predictions are drafts for people") as e:
        queue.bulk_accept(session, drafts, rev, [r.id for r in store.all_records(session, project_id=drafts.id)])
    assert e.value.status == 400


def test_a_long_prediction_key_stays_within_its_column_and_comparable():
    many = tuple((i * 10, i * 10 + 5, "PRODUCT") for i in range(30))
    other = (*many[:-1], (290, 296, "PRODUCT"))  # differs only in the last span, past the cut
    first, second = key_label(many), key_label(other)
    assert len(first) <= 200 and len(second) <= 200 and first != second
    assert "|…" in first and key_from_label(first) == many[: len(key_from_label(first))]
    assert key_label(()) == "(none)" and key_from_label("(none)") == ()
    assert key_from_label("0:5 COMPANY NAME|7:9 X") == ((0, 5, "COMPANY NAME"), (7, 9, "X"))


def test_a_model_answer_that_does_not_fit_is_not_bulk_accepted(env):
    session, rev = env["session"], env["people"]["rev"]
    project = make(env, task="spans", rows=[ticket(i, False) for i in range(2)], labels=LABELS)
    prelabel.prelabel(session, project, RuleModel("dates", dates=True))
    project.labels = ["ORDER"]  # as if DATE had been dropped from the set since the model predicted
    result = queue.bulk_accept(session, project, rev, [r.id for r in store.all_records(session, project_id=project.id)])
    assert result == {"accepted": 0, "left": {"the model's answer does not fit the project": 2}}


def test_a_preference_project_trains_dpo_on_what_people_chose(env):
    """'Train with DPO': the pairs people judged become a dpo job (what they preferred as chosen)."""
    session, ann = env["session"], env["people"]["ann"]
    rows = [{"prompt": f"Greet person {i}", "chosen": f"Hello, person {i}!", "rejected": "Go away."} for i in range(12)]
    project = make(env, name="prefs", task="preference", rows=rows)
    for _ in range(12):
        view = queue.next_record(session, project, ann, "id")
        polite = next(o["key"] for o in view["options"] if o["text"].startswith("Hello"))
        queue.submit(session, project, ann, view["id"], {"preferred": polite})
    job = rounds.train_on_reviewed(session, env["settings"], project, method="dpo", any_path=True)
    assert (job.recipe["method"], job.model, job.method["type"]) == ("dpo", "smollm2-135m-instruct", "dpo")
    assert job.job_metadata["examples"] == "12"
    from tuneloop.services.review import export as review_export

    pairs_out = review_export.export_rows(session, project, "dpo")
    assert all(p["preferred_output"][0]["content"].startswith("Hello") for p in pairs_out)  # what people chose
    with pytest.raises(ServiceError, match="method 'ppo' is not one of auto, dpo"):
        rounds.train_on_reviewed(session, env["settings"], project, method="ppo", any_path=True)
    spans = make(env, name="s", task="spans", rows=[ticket(i) for i in range(12)], labels=LABELS)
    with pytest.raises(ServiceError, match="a spans project's reviewed records are not preference pairs") as e:
        rounds.train_on_reviewed(session, env["settings"], spans, method="dpo", any_path=True)
    assert e.value.param == "method"
