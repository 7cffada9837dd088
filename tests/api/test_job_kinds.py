"""Jobs carry a kind and a recipe: a database written by the previous release (revision 0003) with a queued
and a finished job upgrades; the queued one then runs its converted recipe, and the finished one still lists
its events, checkpoints and model. New jobs store the recipe the OpenAI request became."""

from __future__ import annotations

import io
import json
import time

from sqlalchemy import text

from tests.conftest import chat_rows, live_server
from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import Settings
from tuneloop.engine.loop import train
from tuneloop.services.files import save_upload
from tuneloop.store import repo
from tuneloop.store.blobs import content_path
from tuneloop.store.db import make_engine, sessions, upgrade


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_a_database_from_the_previous_release_upgrades_and_its_jobs_carry_on(tiny_chat_model, tmp_path):
    from openai import OpenAI

    home = tmp_path / "home"
    settings = Settings(home=home, offline=True)
    engine = make_engine(settings.db_url)
    upgrade(engine, "0003")
    with sessions(engine)() as session:
        file = save_upload(session, settings, stream=io.BytesIO(jsonl(chat_rows(12))), filename="train.jsonl",
                           purpose="fine-tune")
        session.commit()
        file_id = file.id
    # the finished job's run, trained as that release's worker would have
    with sessions(engine)() as session:
        stored = content_path(settings, repo.get_file(session, file_id=file_id))
    run_dir = settings.runs_dir / "ftjob-done"
    train(parse_recipe({"model": str(tiny_chat_model), "data": {"train": str(stored)}, "adapter": {"r": 4, "alpha": 8},
                        "hyperparameters": {"max_steps": 2, "batch_size": 4, "precision": "fp32"},
                        "checkpoints": {"every_steps": 1, "each_epoch": False}}), settings, run_dir)
    model = str(tiny_chat_model)
    done_name = "ft:tiny-chat0:tuneloop:old:ftjob-done"
    with engine.begin() as connection:  # rows exactly as revision 0003's code wrote them
        insert = ("insert into jobs (id, model, training_file, validation_file, suffix, seed, method, hyperparameters, "
                  "extra, metadata, status, fine_tuned_model, result_files, trained_tokens, run_dir, created_at, "
                  "finished_at, cancel_requested, pause_requested, events_offset) values (:id, :model, :file, null, "
                  ":suffix, 1, :method, :hp, '{}', null, :status, :ft, '[]', :tokens, :run_dir, :t, :fin, 0, 0, 0)")
        hp = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10, "lora_rank": 4}
        method = json.dumps({"type": "supervised", "supervised": {"hyperparameters": hp}})
        connection.execute(text(insert), {"id": "ftjob-queued", "model": model, "file": file_id, "suffix": "new",
                                          "method": method, "hp": json.dumps(hp), "status": "queued", "ft": None,
                                          "tokens": None, "run_dir": None, "t": time.time(), "fin": None})
        connection.execute(text(insert), {"id": "ftjob-done", "model": model, "file": file_id, "suffix": "old",
                                          "method": method, "hp": json.dumps(hp), "status": "succeeded",
                                          "ft": done_name, "tokens": 99, "run_dir": str(run_dir),
                                          "t": time.time() - 60, "fin": time.time() - 30})
        for seq, message in enumerate(["Created fine-tuning job: ftjob-done", "The job has successfully completed"]):
            connection.execute(text("insert into job_events (job_id, created_at, level, message, type) values "
                                    "('ftjob-done', :t, 'info', :m, 'message')"), {"t": time.time() - 50 + seq, "m": message})
        connection.execute(text("insert into checkpoints (id, job_id, step, path, created_at, metrics) values "
                                "('ftckpt-1', 'ftjob-done', 2, :path, :t, '{}')"),
                           {"path": str(run_dir / "checkpoints" / "step-0000002" / "model"), "t": time.time() - 40})
    engine.dispose()

    server = live_server(home, with_worker=True)
    info = next(server)
    try:
        client = OpenAI(base_url=info["url"], api_key=info["key"], max_retries=0)
        deadline = time.time() + 240
        while client.fine_tuning.jobs.retrieve("ftjob-queued").status not in {"succeeded", "failed"}:
            assert time.time() < deadline, "the upgraded queued job did not finish"
            time.sleep(0.5)
        queued = client.fine_tuning.jobs.retrieve("ftjob-queued")
        assert queued.status == "succeeded", queued.error
        assert queued.fine_tuned_model.endswith(":new:ftjob-queued")
        recipe = parse_recipe(yaml_of(home / "runs" / "ftjob-queued" / "recipe.yaml"))
        # what the previous release's worker would have built: 2 epochs at 10 x 2e-4, rank 4
        assert recipe.hyperparameters.epochs == 2 and recipe.hyperparameters.learning_rate == 2e-3
        assert recipe.adapter.r == 4 and recipe.seed == 1

        done = client.fine_tuning.jobs.retrieve("ftjob-done")
        assert done.status == "succeeded" and done.fine_tuned_model == done_name
        messages = [e.message for e in client.fine_tuning.jobs.list_events("ftjob-done")]
        assert "The job has successfully completed" in messages
        checkpoints = client.fine_tuning.jobs.checkpoints.list("ftjob-done").data
        assert [c.step_number for c in checkpoints] == [2]
        answer = client.chat.completions.create(model=done_name, max_tokens=2,
                                                messages=[{"role": "user", "content": "What is 1 plus 1?"}])
        assert answer.choices[0].message.content is not None
        with make_engine(info["settings"].db_url).connect() as connection:
            kinds = dict(connection.execute(text("select id, kind from jobs")).all())
        assert kinds == {"ftjob-queued": "train", "ftjob-done": "train"}
    finally:
        next(server, None)


def yaml_of(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_a_new_job_stores_the_recipe_its_request_became(tiny_chat_model, tmp_path):
    from tuneloop.services import jobs as job_service
    from tuneloop.store.tables import Job

    settings = Settings(home=tmp_path / "home", offline=True)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    with sessions(engine)() as session:
        file = save_upload(session, settings, stream=io.BytesIO(jsonl(chat_rows(4))), filename="t.jsonl",
                           purpose="fine-tune")
        job = job_service.create_job(session, settings, {
            "model": str(tiny_chat_model), "training_file": file.id, "seed": 7,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "learning_rate_multiplier": 2, "adapter": "full", "n_epochs": "auto"}}}}, any_path=True)
        stored = session.get(Job, job.id)
        recipe = parse_recipe(stored.recipe)
        assert stored.kind == "train" and recipe.data.train[0].path == file.id and recipe.seed == 7
        assert recipe.adapter.type == "full" and recipe.hyperparameters.learning_rate == 2 * 2e-5
        assert recipe.hyperparameters.epochs is None  # 'auto': the method's default, scaled to the data
    engine.dispose()


def test_files_are_checked_by_a_worker_and_a_check_whose_worker_died_is_taken_over(tiny_chat_model, tmp_path):
    """The API process checks no file (a job starts as validating_files); a worker claims the check, and
    when that worker stops beating, another takes it over. A job cancelled meanwhile stays cancelled."""
    from tuneloop.services import jobs as job_service
    from tuneloop.store.tables import Job
    from tuneloop.worker.runner import Worker

    settings = Settings(home=tmp_path / "home", offline=True, stale_seconds=5)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    with sessions(engine)() as session:
        good = save_upload(session, settings, stream=io.BytesIO(jsonl(chat_rows(12))), filename="good.jsonl",
                           purpose="fine-tune")
        bad = save_upload(session, settings, stream=io.BytesIO(b'{"messages": []}\nnot json\n'),
                          filename="bad.jsonl", purpose="fine-tune")
        ids = [job_service.create_job(session, settings, {"model": str(tiny_chat_model), "training_file": f.id},
                                      any_path=True).id for f in (good, bad, good)]
        assert {session.get(Job, i).status for i in ids} == {"validating_files"}
        dead = repo.claim_validation(session, worker_id="dead-worker")  # claimed, then the worker died
        assert dead.id == ids[0]
        job_service.request_cancel(session, ids[2])
    worker = Worker(settings, "live-worker", kinds={})
    assert worker.validate_next() and not worker.validate_next()  # the bad file's job; the dead one's is held
    with sessions(engine)() as session:
        session.execute(text("UPDATE jobs SET heartbeat_at = :t WHERE id = :id"), {"t": time.time() - 60, "id": ids[0]})
        session.commit()
        repo.requeue_stale_jobs(session, older_than=time.time() - settings.stale_seconds)
    assert worker.validate_next() and not worker.validate_next()
    with sessions(engine)() as session:
        jobs = [session.get(Job, i) for i in ids]
        assert [j.status for j in jobs] == ["queued", "failed", "cancelled"]
        assert jobs[1].error["code"] == "invalid_training_file" and "bad.jsonl" in jobs[1].error["message"]
        assert "line 2" in jobs[1].error["message"] and jobs[0].worker_id is None
        events = [e.message for e in repo.events_since(session, job_id=ids[2], since=0, limit=100)]
        assert not any("validated" in m for m in events)
    engine.dispose()
