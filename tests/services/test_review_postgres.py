"""The review store on a real PostgreSQL server: the whole flow, trigram search, and concurrent claims
(row locks decide who gets a record)."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import labelled_rows, write_jsonl
from tests.services.test_review import claim_concurrently
from tuneloop.config.settings import Settings
from tuneloop.services.auth import create_user
from tuneloop.services.review import export, projects, quality, queue
from tuneloop.store import review as store
from tuneloop.store.db import make_engine, sessions, upgrade


@pytest.fixture
def pg(postgres_url, home):
    """A fresh database on the session's PostgreSQL server."""
    name = f"review_{secrets.token_hex(4)}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    yield Settings(home=home, offline=True, database_url=url), engine
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE {name}"))
    admin.dispose()


def test_review_flow_on_postgres(pg, tmp_path):
    settings, engine = pg
    with sessions(engine)() as session:
        ann = create_user(session, username="ann", password="ann-password", role="annotator")
        rev = create_user(session, username="rev", password="rev-password", role="reviewer")
        rows = labelled_rows(9) + [{"text": "Refund 50% please", "label": "billing"}]
        project = projects.create_project(session, settings, name="p", task="classification",
                                          data=str(write_jsonl(tmp_path / "p.jsonl", rows)), holdout=0.2)
        done = []
        while (view := queue.next_record(session, project, ann, "uncertainty")) is not None:
            done.append(queue.submit(session, project, ann, view["id"], {"label": "billing"}))
        assert len(done) == 10
        queue.undo(session, project, ann)
        view = queue.next_record(session, project, ann, "id")
        fixed = queue.submit(session, project, ann, view["id"], {"label": "shipping"})
        queue.review(session, project, rev, fixed.id, accept=False, comment="no")
        assert queue.next_record(session, project, ann, "id")["rejected"]["comment"] == "no"
        page = queue.table(session, project, store.TableQuery(search="50%"))
        assert [r["text"] for r in page["data"]] == ["Refund 50% please"]
        assert queue.table(session, project, store.TableQuery(search="REFUND"))["total"] == 1
        assert quality.agreement(session, project)["annotators"] == 1
        assert len(export.export_rows(session, project, "classify", "all")) == 9
        assert engine.dialect.name == "postgresql"
        with engine.connect() as connection:  # the trigram index exists
            assert connection.execute(text("SELECT 1 FROM pg_indexes WHERE indexname = 'ix_records_text_trgm'")).first()


def test_gold_questions_on_postgres(pg, tmp_path):
    """The gold schedule and report run their grouped queries on PostgreSQL too."""
    from tuneloop.services.review import adjudication, gold

    settings, engine = pg
    with sessions(engine)() as session:
        ann = create_user(session, username="ann", password="ann-password", role="annotator")
        project = projects.create_project(session, settings, name="g", task="classification", gold=0.3, gold_rate=0.5,
                                          data=str(write_jsonl(tmp_path / "g.jsonl", labelled_rows(10))))
        handed = []
        for _ in range(4):
            view = queue.next_record(session, project, ann, "id")
            record = store.get_record(session, project_id=project.id, record_id=view["id"])
            handed.append(record.split == "gold")
            queue.submit(session, project, ann, view["id"], {"label": "billing"})
        assert handed == [False, True, False, True]
        assert gold.gold_report(session, project)["people"][0]["answered"] == 2
        # the other grouped counts the project page asks for, on PostgreSQL too
        counters = projects.counters(session, project)
        assert (counters["records"], counters["gold"], counters["partly"]) == (7, 3, 0)
        assert adjudication.counts(session, project) == {"to_adjudicate": 0, "ties": 0, "adjudicated": 0}
        assert quality.throughput(session, project)["people"][0]["records"] == 4


def test_span_answers_on_postgres(pg, tmp_path):
    """A spans project's answers (JSON lists of [start, end, label]), its label filter and its export, on
    PostgreSQL."""
    from tests.services.test_review_spans import BOTH, ORDER_ONLY, ticket

    settings, engine = pg
    with sessions(engine)() as session:
        ann = create_user(session, username="ann", password="ann-password", role="annotator")
        project = projects.create_project(session, settings, name="s", task="spans", labels=["ORDER", "DATE"],
                                          data=str(write_jsonl(tmp_path / "s.jsonl", [ticket(i, False) for i in range(3)])))
        for value in (BOTH, ORDER_ONLY, []):
            view = queue.next_record(session, project, ann, "id")
            queue.submit(session, project, ann, view["id"], {"spans": value})
        by_label = {label: [r["id"] for r in queue.table(session, project, store.TableQuery(label=label))["data"]]
                    for label in ("ORDER", "DATE")}
        first, second, _ = (r.id for r in store.all_records(session, project_id=project.id))
        assert by_label == {"ORDER": [first, second], "DATE": [first]}
        assert [len(r["spans"]) for r in export.export_rows(session, project, "spans")] == [2, 1, 0]


def test_concurrent_claims_on_postgres(pg, tmp_path):
    settings, engine = pg
    factory = sessions(engine)
    with factory() as session:
        project = projects.create_project(session, settings, name="p", task="classification",
                                          data=str(write_jsonl(tmp_path / "p.jsonl", labelled_rows(16))))
        users = [create_user(session, username=f"p{i}", password="password-123", role="annotator") for i in range(8)]
    handed = claim_concurrently(factory, project.id, users, 2)
    assert len(handed) == 16 and len(set(handed)) == 16  # sixteen records, each to one person
