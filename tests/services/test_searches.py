"""Hyperparameter search on Optuna, with trials as jobs on the worker queue: a grid is covered exactly once, the
median pruner stops a trial whose metric is bad (keeping a checkpoint), a failed trial is recorded with its reason
while the search carries on, and two workers share one search on PostgreSQL without running any trial twice."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import chat_rows, write_jsonl
from tuneloop.config.recipe import RecipeError, parse_recipe
from tuneloop.config.search import parse_space
from tuneloop.config.settings import Settings
from tuneloop.services import ServiceError
from tuneloop.services import searches as service
from tuneloop.services.job_kinds import kinds
from tuneloop.store.db import make_engine, sessions, upgrade
from tuneloop.worker.runner import Worker


def tiny_recipe(model, data, **hyperparameters):
    return parse_recipe({"model": str(model), "data": {"train": str(data), "validation": str(data)},
                         "hyperparameters": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-2, "warmup_ratio": 0,
                                             **hyperparameters},
                         "evaluation": {"every_steps": 1, "each_epoch": False},
                         "checkpoints": {"each_epoch": False, "keep_last": 1}})


def run_workers(settings, search_id, count: int = 1, timeout: float = 240) -> list[str]:
    """Workers (threads, each running its trials in child processes) until every trial job of the search is
    finished; the worker ids that ran them."""
    stop = threading.Event()
    workers = [Worker(settings, f"w{i}", kinds=kinds(), only={"search-trial"}) for i in range(count)]
    threads = [threading.Thread(target=w.run, kwargs={"stop": stop}, daemon=True) for w in workers]
    for t in threads:
        t.start()
    engine = make_engine(settings.db_url)
    deadline = time.time() + timeout
    try:
        while True:
            with sessions(engine)() as session:
                jobs = service.trial_jobs(session, service.require_search(session, search_id))
                if all(j.status in service.FINAL for j in jobs):
                    return [j.worker_id for j in jobs]
            assert time.time() < deadline, [(j.id, j.status) for j in jobs]
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        engine.dispose()


def make(settings, recipe, space, **kw):
    engine = make_engine(settings.db_url)
    upgrade(engine)
    with sessions(engine)() as session:
        return service.create_search(session, settings, recipe, space, **kw).id


def view(settings, search_id):
    with sessions(make_engine(settings.db_url))() as session:
        return service.search_view(session, settings, service.require_search(session, search_id))


def test_a_grid_is_covered_exactly_once_and_a_failed_trial_is_recorded_while_the_search_carries_on(
        home, tmp_path, tiny_chat_model):
    settings = Settings(home=home, offline=True)
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    missing = str(tmp_path / "no-such-model")
    space = {"learning_rate": [1e-3, 1e-2], "model": [str(tiny_chat_model), missing]}
    search_id = make(settings, tiny_recipe(tiny_chat_model, data, max_steps=2), space, sampler_name="grid",
                     pruner_name="none", trials=10)
    assert view(settings, search_id)["trials"] == 4  # capped at the grid's size
    run_workers(settings, search_id)
    seen = view(settings, search_id)
    rows = seen["trial_rows"]
    points = sorted((r["params"]["hyperparameters.learning_rate"], r["params"]["model"]) for r in rows)
    assert points == sorted((lr, m) for lr in (1e-3, 1e-2) for m in (str(tiny_chat_model), missing))
    for row in rows:
        if row["params"]["model"] == missing:  # recorded with its reason; the others ran all the same
            assert row["state"] == "FAIL" and "no-such-model" in row["error"] and row["job_status"] == "failed"
        else:
            assert row["state"] == "COMPLETE" and row["job_status"] == "succeeded"
            assert row["evaluations"] and row["value"] == list(row["evaluations"].values())[-1]
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert seen["status"] == "finished" and seen["best"]["value"] == min(r["value"] for r in complete)
    assert "learning_rate" in seen["best"]["recipe"]
    with sessions(make_engine(settings.db_url))() as session:
        study = service.load_study(settings, service.require_search(session, search_id))
    out = service.write_results(settings, seen, study)
    assert (home / "searches" / search_id / "best.yaml").read_text() == seen["best"]["recipe"]
    assert set(out["plots"]) == {"history", "parallel", "importances"}, out["skipped"]
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in out["plots"].values())


def test_the_median_pruner_stops_a_trial_whose_metric_is_bad(home, tmp_path, tiny_chat_model):
    """Two trials at a useful learning rate finish; the third, at 1e-9, does not learn, is worse than their median
    at its first evaluation and is pruned there, with a checkpoint of where it stopped."""
    from tuneloop.models.run_folder import Done, RunFolder

    settings = Settings(home=home, offline=True)
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    points = [{"hyperparameters.learning_rate": 1e-2}, {"hyperparameters.learning_rate": 2e-2},
              {"hyperparameters.learning_rate": 1e-9}]
    search_id = make(settings, tiny_recipe(tiny_chat_model, data, max_steps=4),
                     {"learning_rate": {"type": "float", "low": 1e-9, "high": 1e-1, "log": True}},
                     sampler_name="random", pruner_name="median", trials=3, points=points)
    run_workers(settings, search_id)
    rows = view(settings, search_id)["trial_rows"]
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED"], rows
    pruned = rows[2]
    assert len(pruned["evaluations"]) < 4  # it stopped before its last step
    folder = RunFolder(settings.runs_dir / pruned["run"])
    done = [e for e in folder.read_events() if isinstance(e, Done)]
    assert done and done[-1].stopped == "pruned" and done[-1].step < 4
    assert folder.checkpoint(done[-1].step).is_dir()  # the checkpoint of the step where it stopped


def test_bad_searches_are_refused_with_the_reason(home, tmp_path, tiny_chat_model):
    settings = Settings(home=home, offline=True)
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    recipe = tiny_recipe(tiny_chat_model, data)
    with pytest.raises(RecipeError) as e:
        parse_space({"lr": [1e-3]}, recipe)
    assert "'lr' is not a recipe field" in str(e.value) and "hyperparameters.learning_rate" in str(e.value)
    cases = [({"batch_size": [0, 4]}, {}, "batch_size = 0 does not make a valid recipe"),
             ({"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}, {}, "log scale needs low"),
             ({"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}, {"sampler_name": "grid"},
              "a grid needs choices, or a range with a step"),
             ({"adapter.type": {"type": "float", "low": 1, "high": 2}}, {}, "give it as choices"),
             ({"learning_rate": [1e-3]}, {"sampler_name": "cmaes"}, "not one of grid, random, tpe, gp"),
             ({"learning_rate": [1e-3]}, {"metric": "loss"}, "a validation metric"),
             ({"seed": {"type": "int", "low": 0, "high": 10**12, "step": 1}}, {"sampler_name": "grid"},
              "the grid has 1000000000001 points; at most 1000"),  # counted, never made
             ({"learning_rate": [1e-3, 1e-2]}, {"points": [{"hyperparameters.learning_rate": 0.5}]},
              "points[0]: hyperparameters.learning_rate = 0.5 is outside the space"),
             ({"learning_rate": [1e-3]}, {"points": [{"adapter.r": 4}]}, "points[0]: adapter.r is not a field")]
    for space, kw, words in cases:
        with pytest.raises(ServiceError) as e:
            make(settings, recipe, space, **kw)
        assert words in e.value.message, e.value.message
    no_validation = parse_recipe({**recipe.model_dump(mode="json"), "data": {"train": str(data)}})
    with pytest.raises(ServiceError) as e:
        make(settings, no_validation, {"learning_rate": [1e-3]})
    assert "data.validation" in e.value.message


def test_a_grid_with_points_given_first_still_covers_the_grid(home, tmp_path, tiny_chat_model):
    settings = Settings(home=home, offline=True)
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    space = {"learning_rate": {"type": "float", "low": 1e-3, "high": 3e-3, "step": 1e-3}}
    search_id = make(settings, tiny_recipe(tiny_chat_model, data), space, sampler_name="grid",
                     points=[{"hyperparameters.learning_rate": 2e-3}, {"hyperparameters.learning_rate": 2.5e-3}])
    assert view(settings, search_id)["trials"] == 4  # 2.5e-3 given, then the grid's 1e-3, 3e-3 (2e-3 only once)


def test_a_trial_whose_job_ended_is_failed_not_left_running(home, tmp_path, tiny_chat_model):
    settings = Settings(home=home, offline=True)
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    search_id = make(settings, tiny_recipe(tiny_chat_model, data), {"learning_rate": [1e-3, 1e-2]},
                     sampler_name="random", trials=2)
    engine = make_engine(settings.db_url)
    with sessions(engine)() as session:
        search = service.require_search(session, search_id)
        first, second = service.trial_jobs(session, search)
        study = service.load_study(settings, search)
        owned = study.ask()  # a worker took this trial, then its job was cancelled
        first.result, first.status = {"trial": owned.number, "trial_id": owned._trial_id}, "cancelled"
        study.ask()  # a trial no job recorded (its worker died between asking and writing it down)
        session.commit()
        rows = service.search_view(session, settings, search)["trial_rows"]
        assert rows[0]["state"] == "FAIL" and f"its job {first.id} was cancelled" in rows[0]["error"]
        assert rows[1]["state"] == "RUNNING"  # the second job is still queued: it may yet be this trial's
        second.status = "failed"
        session.commit()
        rows = service.search_view(session, settings, search)["trial_rows"]
        assert rows[1]["state"] == "FAIL" and "no job ran it to the end" in rows[1]["error"]


def test_a_trial_taken_up_again_after_its_worker_died_keeps_its_number_and_finishes(home, tmp_path,
                                                                                    tiny_chat_model):
    """A worker asked the study for a trial and recorded it, then died: the job goes back to the queue, and the
    worker that takes it trains that same trial (no second trial is asked for) to the end."""
    settings = Settings(home=home, offline=True)
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    search_id = make(settings, tiny_recipe(tiny_chat_model, data, max_steps=2), {"learning_rate": [1e-3, 1e-2]},
                     sampler_name="random", trials=1)
    engine = make_engine(settings.db_url)
    with sessions(engine)() as session:
        (job,) = service.trial_jobs(session, service.require_search(session, search_id))
        trial, params, _ = service.Trial(session, settings, job)._start()  # asked and written down, then the crash
        job.status = "queued"  # what requeue_stale_jobs does for a worker that stopped beating
        session.commit()
    run_workers(settings, search_id)
    rows = view(settings, search_id)["trial_rows"]
    assert [(r["number"], r["state"]) for r in rows] == [(trial.number, "COMPLETE")]
    assert rows[0]["params"] == params
