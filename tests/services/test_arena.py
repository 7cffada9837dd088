"""Arenas: a job has two models answer a dataset's prompts and makes the arena project (one record per prompt and
pair, names hidden), a judge's two orders combine into one verdict (a changed verdict is a tie), people judge in the
queue (ties allowed; a tie exports no DPO pair), and the results rank the models for people and the judge apart,
with their agreement."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import chat_rows, write_jsonl
from tuneloop.config.settings import Settings
from tuneloop.services import ServiceError
from tuneloop.services import arena as service
from tuneloop.services.auth import create_user
from tuneloop.services.review import export, projects, queue
from tuneloop.store import repo
from tuneloop.store import review as store
from tuneloop.store.db import make_engine, sessions, upgrade


@pytest.mark.parametrize("forward, backward, verdict", [
    ("A", "B", "first"), ("B", "A", "second"), ("A", "A", "tie"), ("tie", "tie", "tie"), ("A", "tie", "tie"),
    ("B", None, "second"), (None, "B", "first"), (None, None, None)])
def test_the_two_orders_combine_into_one_verdict(forward, backward, verdict):
    assert service.combine(forward, backward) == verdict


def test_an_arena_answers_makes_its_project_and_ranks_people_and_judge_apart(home, tmp_path, tiny_chat_model):
    settings = Settings(home=home, offline=True)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    other = tmp_path / "tiny-copy"
    shutil.copytree(tiny_chat_model, other)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say something about {i}."} for i in range(4)])
    with sessions(engine)() as session:
        ann = create_user(session, username="ann", password="ann-password-1", role="annotator")
        job = service.create_arena(session, settings, name="duel", models=["tiny", "copy"],
                                   refs=[str(tiny_chat_model), str(other)], data=str(prompts), rows=3, max_tokens=4,
                                   judge="tiny-judge", judge_ref=str(tiny_chat_model))
        with pytest.raises(ServiceError) as e:
            service.create_arena(session, settings, name="x", models=["a"], refs=["a"], data=str(prompts))
        assert e.value.param == "models"
        job_id = job.id
    service.run_arena_job(job_id, settings)
    with sessions(engine)() as session:
        job = repo.get_job(session, job_id=job_id)
        assert job.result["project"] == "duel" and job.result["records"] == 3  # 3 prompts x 1 pair
        assert job.result["judged"] + job.result["unreadable"] == 3  # a random-weight judge reads as it reads
        project = store.find_project(session, ref="duel")
        assert project.task == "arena"
        record = store.all_records(session, project_id=project.id)[0]
        assert record.data["models"] == ["tiny", "copy"] and len(record.data["answers"]) == 2
        projects.add_member(session, project, "ann")
        seen = queue.next_record(session, project, ann)
        assert seen["ties"] is True and "models" not in str(seen["options"])  # the names stay hidden
        assert record.pred_label is None  # the judge's verdict is not shown to people
        queue.submit(session, project, ann, seen["id"], {"preferred": "tie"})
        for _ in range(2):
            seen = queue.next_record(session, project, ann)
            queue.submit(session, project, ann, seen["id"], {"preferred": "A"})
        session.commit()
        found = service.results(session, project, resamples=200)
        assert found["models"] == ["copy", "tiny"] and found["records"] == 3 and found["prompts"] == 3
        assert found["people"]["judgements"] == 3 and found["people"]["ties"] == 1
        assert {r["model"] for r in found["people"]["ranking"]} == {"copy", "tiny"}
        rates = {r["model"]: r for r in found["people"]["win_rates"]}
        assert rates["tiny"]["win_rate"] + rates["copy"]["win_rate"] == pytest.approx(1.0)  # every game has a side
        pairs = export.export_rows(session, project, "dpo")
        assert len(pairs) == 2  # the tie is nothing to prefer
        # a judge whose verdicts are known: its agreement with the person is computed on the pairs both judged
        records = store.all_records(session, project_id=project.id)
        people = {j.item: j for j in service.judgements(session, project)[0]}
        store.add_predictions(session, project_id=project.id, rows=[
            {"record_id": r.id, "model": "judge-x", "answer": {}, "label": "tie", "confidence": 1.0,
             "probabilities": None, "uncertainty": 0.0} for r in records])
        session.commit()
        found = service.results(session, project, resamples=200)
        agreement = found["judges"]["judge-x"]["agreement_with_people"]
        assert agreement["pairs"] == 3 and agreement["agreement"] == pytest.approx(
            sum(1 for j in people.values() if j.winner == "tie") / 3)
