"""Migrations 0005 and 0006. 0005: a database whose multi-label answers were stored "|"-joined (as the code
before it wrote them) upgrades to lists, measures and exports as before, and downgrades back; single labels,
and the `label` of other tasks, are left as they were. 0006: every answer gets its source; a bulk-accepted
model label stops passing for a person's, and a 1-1 tie stops passing for an answer. On SQLite, and on
PostgreSQL where it runs."""

from __future__ import annotations

import json
import secrets

import pytest
import sqlalchemy as sa
from sqlalchemy import create_engine, text

from tuneloop.evals.agreement import alpha_per_label, cohen_kappa, krippendorff_alpha
from tuneloop.services.review import export, quality, queue
from tuneloop.store import review as store
from tuneloop.store.db import MIGRATIONS, make_engine, sessions, upgrade

LABELS = ["a", "b", "c"]
MULTI = {1: (["a", "b"], ["a", "b"]), 2: (["c"], ["b"]), 3: (["b"], ["a", "b"])}
"""record id -> (ann's labels, bob's labels) in the multi-label project."""


def downgrade(engine: sa.Engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
        yield engine
        engine.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    name = f"migrate_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine = make_engine(url.rsplit("/", 1)[0] + f"/{name}")
    yield engine
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE {name}"))
    admin.dispose()


def rows_as_0004_wrote_them(connection: sa.Connection) -> None:
    """Three projects as the code before 0005 stored them: multi-label (values {"labels", "label": "a|b"},
    records' human_label "a|b"), single-label, and a rating project whose multi_label flag was ignored."""
    pg = connection.dialect.name == "postgresql"

    def insert(table: str, **values) -> None:
        """JSON goes in as its text, as SQLAlchemy's JSON type writes it (PostgreSQL casts it to json)."""
        columns = ", ".join(values)
        params = ", ".join(f"CAST(:{k} AS JSON)" if isinstance(v, (dict, list)) and pg else f":{k}"
                           for k, v in values.items())
        connection.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({params})"),
                           {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in values.items()})

    for user in ("ann", "bob"):
        insert("users", id=user, username=user, password_hash="x", role="annotator", created_at=1.0)
    for project, task, multi, labels in (("multi", "classification", True, LABELS),
                                         ("single", "classification", False, ["x", "y"]),
                                         ("rated", "rating", True, [])):
        insert("projects", id=project, name=project, task=task, labels=labels, multi_label=multi, guidelines="",
               overlap=2, created_at=1.0)
    annotation_id = 0

    def record(record_id: int, project: str, answers: list[dict], human_label: str, disagreement: bool) -> None:
        nonlocal annotation_id
        insert("records", id=record_id, project_id=project, source="s", source_index=record_id, data={"original": {}},
               text=f"text {record_id}", split="pool", status="annotated", annotations=2, human_label=human_label,
               disagreement=disagreement, uncertainty=0.0, models_disagree=False, random_key=0.5, updated_at=1.0)
        for user, value in zip(("ann", "bob"), answers):
            annotation_id += 1
            insert("annotations", id=annotation_id, record_id=record_id, project_id=project, user_id=user, value=value,
                   status="submitted", created_at=1.0, updated_at=1.0)
            insert("annotation_changes", annotation_id=annotation_id, record_id=record_id, user_id=user,
                   action="create", after={"value": value, "status": "submitted", "review_comment": None}, at=1.0)

    for record_id, (ann, bob) in MULTI.items():
        joined = ["|".join(ann), "|".join(bob)]
        record(record_id, "multi", [{"labels": ann, "label": joined[0]}, {"labels": bob, "label": joined[1]}],
               joined[0], joined[0] != joined[1])
    record(4, "single", [{"label": "x"}, {"label": "x"}], "x", False)
    record(5, "rated", [{"rating": 4, "label": "4", "comment": ""}, {"rating": 4, "label": "4", "comment": ""}],
           "4", False)


def old_agreement() -> dict:
    """What quality.agreement said before 0005: the joined strings compared as categories."""
    units = [{"ann": "|".join(ann), "bob": "|".join(bob)} for ann, bob in MULTI.values()]
    kappa = cohen_kappa([u["ann"] for u in units], [u["bob"] for u in units])
    as_dict = lambda a: {"value": None if a.value is None else round(a.value, 4), "records": a.units}  # noqa: E731
    return {"alpha": as_dict(krippendorff_alpha(units)),
            "alpha_per_label": {label: as_dict(a) for label, a in alpha_per_label(units, LABELS).items()},
            "kappa_pairs": [{"people": ["ann", "bob"], **as_dict(kappa)}], "annotators": 2}


def test_multi_label_answers_become_lists_and_measure_as_before(engine):
    upgrade(engine, "0004")
    with engine.begin() as connection:
        rows_as_0004_wrote_them(connection)
    upgrade(engine)
    with sessions(engine)() as session:
        multi, single, rated = (store.find_project(session, ref=name) for name in ("multi", "single", "rated"))
        records = {r.id: r for p in (multi, single, rated) for r in store.all_records(session, project_id=p.id)}
        # 0005: a label with no "|" becomes a list of one; 0006: records 2 and 3 are 1-1 ties, with no answer
        assert [(records[i].human_label, records[i].human_labels, records[i].answer_source) for i in (1, 2, 3)] == \
            [(None, ["a", "b"], "people"), (None, None, "tie"), (None, None, "tie")]
        values = {(a.record_id, a.user_id): a.value for p in (multi, single, rated)
                  for a in store.project_annotations(session, project_id=p.id)}
        assert [values[1, "ann"], values[2, "ann"], values[2, "bob"]] == \
            [{"labels": ["a", "b"]}, {"labels": ["c"]}, {"labels": ["b"]}]
        # a single-label project, and a rating project with the (ignored) multi_label flag, are untouched
        assert (records[4].human_label, records[4].human_labels, values[4, "ann"]) == ("x", None, {"label": "x"})
        assert (records[5].human_label, values[5, "ann"]) == ("4", {"rating": 4, "label": "4", "comment": ""})
        assert store.history(session, record_id=1)[0].after["value"] == {"labels": ["a", "b"]}

        assert quality.agreement(session, multi) == old_agreement()
        assert export.export_rows(session, multi, "classify") == [{"text": "text 1", "labels": ["a", "b"]}]
        assert export.export_report(session, multi, "classify").left_out == {"people tied (not adjudicated)": 2}
        assert export.export_rows(session, multi, "chat")[0]["messages"][-1]["content"] == "a, b"
        assert export.export_rows(session, single, "classify") == [{"text": "text 4", "label": "x"}]
        found = queue.table(session, multi, store.TableQuery(label="b"))
        assert [r["id"] for r in found["data"]] == [1]

    downgrade(engine, "0004")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, human_label FROM records ORDER BY id")).all()
        value = connection.execute(text("SELECT value FROM annotations WHERE id = 1")).scalar()
    assert [tuple(r) for r in rows] == [(1, "a|b"), (2, None), (3, None), (4, "x"), (5, "4")]  # ties: none
    assert (json.loads(value) if isinstance(value, str) else value) == {"labels": ["a", "b"], "label": "a|b"}
    if engine.dialect.name == "sqlite":  # the column was dropped in place: the text search triggers are still there
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' "
                                           "AND name LIKE 'records_search_%'")).scalar() == 3
    upgrade(engine)
    with sessions(engine)() as session:
        assert store.human_labels(session, project_id="multi") == {1: ["a", "b"]}


def test_accepted_model_labels_and_ties_get_their_source(engine):
    """The previous release stored a bulk-accepted model label as the accepting person's own answer
    (`from_model` in its value), on a record left open; and a 1-1 tie as one of the two labels."""
    upgrade(engine, "0005")
    pg = engine.dialect.name == "postgresql"
    cast = (lambda k: f"CAST(:{k} AS JSON)") if pg else (lambda k: f":{k}")
    with engine.begin() as connection:
        def insert(table: str, **values) -> None:
            params = ", ".join(cast(k) if isinstance(v, (dict, list)) else f":{k}" for k, v in values.items())
            connection.execute(text(f"INSERT INTO {table} ({', '.join(values)}) VALUES ({params})"),
                               {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in values.items()})

        for user in ("ann", "bob", "lead"):
            insert("users", id=user, username=user, password_hash="x", role="annotator", created_at=1.0)
        insert("projects", id="p", name="p", task="classification", labels=["x", "y"], multi_label=False,
               guidelines="", overlap=2, created_at=1.0)
        insert("projects", id="r", name="r", task="rating", labels=[], multi_label=False, guidelines="", overlap=2,
               created_at=1.0)
        insert("records", id=9, project_id="r", source="s", source_index=9, data={"original": {}}, text="rated",
               split="pool", status="annotated", annotations=2, human_label="4", disagreement=True,
               uncertainty=0.0, models_disagree=False, random_key=0.5, updated_at=1.0)
        for user, rating in (("ann", 4), ("bob", 5)):  # raters who differ: averaged, not a tie to settle
            insert("annotations", record_id=9, project_id="r", user_id=user, status="submitted", created_at=1.0,
                   updated_at=1.0, value={"rating": rating, "label": str(rating), "comment": ""})
        answers = {1: [("lead", {"label": "x", "from_model": "m"})], 2: [("ann", {"label": "x"}), ("bob", {"label": "y"})],
                   3: [("ann", {"label": "y"}), ("bob", {"label": "y"})]}
        for record_id, given in answers.items():
            insert("records", id=record_id, project_id="p", source="s", source_index=record_id, data={"original": {}},
                   text=f"text {record_id}", split="pool", status="open" if record_id == 1 else "annotated",
                   annotations=len(given), human_label=given[0][1]["label"], disagreement=record_id == 2,
                   uncertainty=0.0, models_disagree=False, random_key=0.5, updated_at=float(record_id),
                   pred_model="m", pred_label="x")
            for user, value in given:
                insert("annotations", record_id=record_id, project_id="p", user_id=user, value=value,
                       status="submitted", created_at=1.0, updated_at=1.0)
    upgrade(engine)
    with sessions(engine)() as session:
        project = store.find_project(session, ref="p")
        records = {r.id: r for r in store.all_records(session, project_id="p")}
        assert [(records[i].status, records[i].answer_source, records[i].human_label) for i in (1, 2, 3)] == [
            ("accepted", "model", "x"), ("annotated", "tie", None), ("annotated", "people", "y")]
        [accepted] = store.annotations_of(session, record_ids=[1])
        assert (accepted.source, accepted.model, accepted.user_id, accepted.status) == ("model", "m", "lead", "accepted")
        assert {a.source for a in store.annotations_of(session, record_ids=[2, 3])} == {"person"}
        assert store.human_labels(session, project_id="p") == {3: ["y"]}
        assert project.prefill_model == "m" and project.hide_predictions is False
        assert store.get_record(session, project_id="r", record_id=9).answer_source == "people"
        assert export.export_rows(session, project, "classify") == [{"text": "text 1", "label": "x"},
                                                                    {"text": "text 3", "label": "y"}]
