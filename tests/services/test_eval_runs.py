"""The `eval` job kind: a job that stops part-way (a worker killed after its first batch) continues after the items
it wrote when it runs again, and counts each item once; the migration makes the tables the code maps."""

from __future__ import annotations

from tuneloop.config.settings import Settings
from tuneloop.services import evals as service
from tuneloop.services.eval_runs import BATCH, EvalJob, run_eval_job
from tuneloop.store import evals as store
from tuneloop.store import repo
from tuneloop.store.db import make_engine, sessions, upgrade

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
EXACT = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
         "reference": "{{ item.answer }}", "operation": "eq"}


def test_a_restarted_eval_job_continues_after_the_items_it_wrote(home):
    settings = Settings(home=home, offline=True)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    n = 2 * BATCH + 5
    content = [{"item": {"answer": f"a{i}"}, "sample": {"output_text": f"a{i}" if i % 3 else "wrong"}}
               for i in range(n)]
    with sessions(engine)() as session:
        ev = service.create_eval(session, settings, service.EvalCreate(
            data_source_config={"type": "custom", "item_schema": SCHEMA}, testing_criteria=[EXACT]))
        run = service.create_run(session, settings, ev.id, service.RunCreate(data_source={
            "type": "jsonl", "source": {"type": "file_content", "content": content}}))
        job = repo.get_job(session, job_id=run.job_id)
        first = EvalJob(session, settings, job, run)
        first._batch(0, first.rows[:BATCH])  # one batch written, then the worker dies
        run_id, job_id = run.id, job.id
    run_eval_job(job_id, settings)  # a worker takes the job up again
    with sessions(engine)() as session:
        items, _ = store.list_items(session, run_id=run_id, status=None, after=None, limit=1000, newest_first=False)
        assert [i.datasource_item_id for i in items] == list(range(n))
        wrong = sum(1 for i in range(n) if i % 3 == 0)
        assert [i.status for i in items] == ["fail" if i % 3 == 0 else "pass" for i in range(n)]
        job = repo.get_job(session, job_id=job_id)
        assert job.result["result_counts"] == {"total": n, "passed": n - wrong, "failed": wrong, "errored": 0}
        assert job.result["per_testing_criteria_results"] == [{"testing_criteria": "exact", "passed": n - wrong,
                                                              "failed": wrong}]
        assert job.progress == {"done": n, "total": n, "unit": "items"}
        events, _ = repo.list_events(session, job_id=job_id, after=None, limit=100)
        assert any(f"Continuing after the {BATCH} items written" in e.message for e in events)


def test_the_migration_makes_the_eval_tables_the_code_maps(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tuneloop.store.tables import Base

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    ours = {"evals", "eval_runs", "eval_output_items", "searches", "playground_sessions"}
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    touching = [d for d in diff if any(name in repr(d) for name in ours)]
    assert touching == []
