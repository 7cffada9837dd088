"""Keys (CLI), file limits and purposes, and the migrated schema."""

from __future__ import annotations

import io

import pytest
from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.config.settings import Settings
from tuneloop.services import ServiceError
from tuneloop.services.files import save_upload
from tuneloop.store import repo
from tuneloop.store.db import make_engine, schema_status, sessions, upgrade

runner = CliRunner()


def test_keys_create_list_revoke(home):
    created = runner.invoke(app, ["keys", "create", "--name", "ci"])
    assert created.exit_code == 0, created.output
    secret, key_id = created.stdout.split()[0], created.stdout.split()[1]
    assert secret.startswith("tl-") and key_id.startswith("key-")
    listed = runner.invoke(app, ["keys", "list"], env={"COLUMNS": "200"})
    assert key_id in listed.stdout and secret[:10] in listed.stdout and secret not in listed.stdout
    settings = Settings.from_env()
    with sessions(make_engine(settings.db_url))() as session:
        assert repo.find_active_key(session, secret=secret) is not None
        assert all(k.hash != secret for k in repo.list_keys(session))  # stored hashed
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    with sessions(make_engine(settings.db_url))() as session:
        assert repo.find_active_key(session, secret=secret) is None
    again = runner.invoke(app, ["keys", "revoke", key_id])
    assert again.exit_code == 2 and "no active key" in again.output


def test_upload_limit_and_purpose_store_nothing(tmp_path):
    settings = Settings(home=tmp_path, max_upload_bytes=100)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    with sessions(engine)() as session:
        with pytest.raises(ServiceError) as big:
            save_upload(session, settings, stream=io.BytesIO(b"x" * 101), filename="a.jsonl", purpose="fine-tune")
        assert big.value.status == 400 and big.value.param == "file" and "limit of 100 bytes" in big.value.message
        with pytest.raises(ServiceError) as purpose:
            save_upload(session, settings, stream=io.BytesIO(b"{}"), filename="a.jsonl", purpose="training")
        assert purpose.value.param == "purpose"
        assert repo.list_files(session, purpose=None, after=None, limit=10, newest_first=True)[0] == []
    assert [p.name for p in settings.files_dir.iterdir()] == []  # no partial upload left behind
    with sessions(engine)() as session:  # identical bytes are stored once
        a = save_upload(session, settings, stream=io.BytesIO(b"{}\n"), filename="a.jsonl", purpose="fine-tune")
        b = save_upload(session, settings, stream=io.BytesIO(b"{}\n"), filename="b.jsonl", purpose="fine-tune")
        assert a.id != b.id and a.sha256 == b.sha256 and len(list(settings.files_dir.iterdir())) == 1


def test_migrations_upgrade_an_existing_database(tmp_path):
    """A database made by the first release (revision 0001, with a job in it) upgrades on start."""
    from sqlalchemy import inspect, text

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text("insert into files values ('file-1', 'a.jsonl', 'fine-tune', 3, 'abc', 1, 'processed')"))
        connection.execute(text(
            "insert into jobs (id, model, training_file, seed, method, hyperparameters, extra, status, result_files, "
            "created_at, cancel_requested) values ('ftjob-1', 'm', 'file-1', 0, '{}', '{}', '{}', 'queued', '[]', 1, 0)"))
    assert "pause_requested" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
    upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("select version_num from alembic_version")).scalar() == schema_status(engine)[1]
        row = connection.execute(text("select status, pause_requested, events_offset from jobs")).one()
    assert tuple(row) == ("queued", 0, 0)  # the old job is kept, with the new columns' defaults
    upgrade(engine)  # starting again on a current database changes nothing
    assert {"api_keys", "files", "jobs", "job_events", "checkpoints", "users", "projects", "records",
            "annotations", "annotation_changes"} <= set(inspect(engine).get_table_names())
