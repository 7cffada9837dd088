"""`tuneloop jobs` on jobs written straight into the database: list (both kinds, their progress, --kind),
show, cancel, and follow while another thread moves a job along."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
from typer.testing import CliRunner

from tuneloop.cli.main import app

runner = CliRunner()


def invoke(*args, ok=True, **kwargs):
    kwargs.setdefault("env", {"COLUMNS": "250"})  # a wide terminal: ids and links stay on one line
    result = runner.invoke(app, [str(a) for a in args], **kwargs)
    if ok:
        assert result.exit_code == 0, result.output
    result.text = " ".join(result.output.split())
    return result


@pytest.fixture
def sessions(home):
    from tuneloop.config.settings import get_settings
    from tuneloop.store.db import make_engine, sessions, upgrade

    engine = make_engine(get_settings().db_url)
    upgrade(engine)
    yield sessions(engine)
    engine.dispose()


def table_rows(output: str) -> dict[str, list[str]]:
    """The rows of the table (cells apart by two spaces or more), by their first cell."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in output.splitlines() if line.strip()]
    return {row[0]: row for row in rows if row[0].startswith(("job-", "ftjob-"))}


def add_job(sessions, kind: str, status: str, progress: dict | None = None, events: tuple[str, ...] = (),
            **fields) -> str:
    from tuneloop.store import repo
    from tuneloop.store.tables import Job

    with sessions() as session:
        job = Job(id=repo.new_id("ftjob" if kind == "train" else "job"), kind=kind,
                  model=fields.pop("model", "smollm2-135m-instruct"), method={}, hyperparameters={}, extra={},
                  status=status, result_files=[], created_at=time.time(), cancel_requested=False,
                  progress=progress, **fields)
        session.add(job)
        for message in events:
            repo.add_event(session, job_id=job.id, message=message)
        session.commit()
        return job.id


def test_list_shows_every_kind_with_its_progress_and_filters_by_kind(sessions, tmp_path):
    train = add_job(sessions, "train", "running", {"done": 30, "total": 120, "unit": "steps"},
                    run_dir=str(tmp_path / "runs" / "run-abc"), job_metadata={"project": "tickets"})
    again = add_job(sessions, "repredict", "queued", {"done": 0, "total": 24, "unit": "records"},
                    params={"project": "tickets", "model": "ft:x"})
    rows = table_rows(invoke("jobs", "list").output)
    assert rows[train] == [train, "train", "running", "30/120 steps", "smollm2-135m-instruct",
                           "run run-abc, project tickets"]
    assert rows[again][1:4] == ["repredict", "queued", "0/24 records"]
    assert rows[again][5] == "project tickets"

    assert list(table_rows(invoke("jobs", "list", "--kind", "repredict").output)) == [again]
    shown = json.loads(invoke("jobs", "list", "--json").stdout)
    assert [j["id"] for j in shown["data"]] == [again, train] and shown["has_more"] is False
    assert shown["data"][1]["links"]["run"] == "run-abc"

    bad = invoke("jobs", "list", "--kind", "eval-ish", ok=False)
    assert bad.exit_code == 2 and "kind 'eval-ish' is not one of train, repredict, eval" in bad.text


def test_show_prints_why_a_job_failed_and_cancel_cancels_a_queued_one(sessions):
    failed = add_job(sessions, "repredict", "failed", {"done": 3, "total": 24, "unit": "records"},
                     error={"code": "error", "message": "project p no longer exists"}, finished_at=time.time())
    out = invoke("jobs", "show", failed).text
    assert f"{failed} (repredict): failed" in out and "3/24 records" in out
    assert "error: project p no longer exists" in out
    assert json.loads(invoke("jobs", "show", failed, "--json").stdout)["error"]["message"] == \
        "project p no longer exists"
    missing = invoke("jobs", "show", "job-none", ok=False)
    assert missing.exit_code == 2 and "no job with id 'job-none'" in missing.text

    queued = add_job(sessions, "train", "queued")
    assert f"cancelled {queued}" in invoke("jobs", "cancel", queued).text
    assert "(train): cancelled" in invoke("jobs", "show", queued).text
    again = invoke("jobs", "cancel", queued, ok=False)
    assert again.exit_code == 2 and "already cancelled" in again.text


def test_follow_prints_events_until_the_job_succeeds(sessions):
    from tuneloop.store import repo
    from tuneloop.store.tables import Job

    job_id = add_job(sessions, "repredict", "queued", {"done": 0, "total": 10, "unit": "records"},
                     events=("Re-predict queued",))

    def work() -> None:  # what a worker would do, a little later
        time.sleep(0.3)
        with sessions() as session:
            job = session.get(Job, job_id)
            job.status, job.started_at, job.progress = "running", time.time(), {"done": 5, "total": 10,
                                                                                "unit": "records"}
            repo.add_event(session, job_id=job_id, message="halfway through the records")
            session.commit()
            time.sleep(0.3)
            job.status, job.finished_at = "succeeded", time.time()
            job.progress = {"done": 10, "total": 10, "unit": "records"}
            repo.add_event(session, job_id=job_id, message="round 1 recorded")
            session.commit()

    worker = threading.Thread(target=work)
    worker.start()
    result = invoke("jobs", "follow", job_id, "--interval", "0.05")
    worker.join()
    out = result.text
    assert out.index("Re-predict queued") < out.index("halfway through the records") < out.index("round 1 recorded")
    assert out.count("halfway through the records") == 1  # each event once
    assert f"{job_id} succeeded" in out


def test_follow_on_a_failed_job_exits_1_with_its_message(sessions):
    job_id = add_job(sessions, "train", "failed", events=("Training failed",), finished_at=time.time(),
                     error={"code": "invalid_training_file", "message": "training_file t.jsonl has 2 error(s)"})
    result = invoke("jobs", "follow", job_id, ok=False)
    assert result.exit_code == 1, result.output
    assert "Training failed" in result.text
    assert f"error: {job_id} failed: training_file t.jsonl has 2 error(s)" in result.text
