"""Learning from feedback in the review loop, through the services on a real SQLite database: a preference
project trains a reward model on what people chose and each round scores it on the held-out pairs; a rating
project exports KTO's unpaired answers and same-prompt pairs for a reward model."""

from __future__ import annotations

import pytest

from tests.services.test_review import env, make  # noqa: F401  (the fixture)
from tuneloop.services import ServiceError
from tuneloop.services.review import export, queue, rounds
from tuneloop.store import review as store


def judge_everything(env, project, person="ann"):
    session, who = env["session"], env["people"][person]
    while (view := queue.next_record(session, project, who, "id")) is not None:
        polite = next(o["key"] for o in view["options"] if o["text"].startswith("Hello"))
        queue.submit(session, project, who, view["id"], {"preferred": polite})


def test_a_reward_model_trains_on_the_pairs_and_each_round_scores_it_on_held_out_pairs(env, tiny_encoder, tmp_path):
    from tuneloop.config.recipe import parse_recipe
    from tuneloop.config.settings import get_settings
    from tuneloop.engine.loop import train

    session = env["session"]
    rows = [{"prompt": f"Greet person {i}", "chosen": f"Hello, person {i}!", "rejected": "Go away."} for i in range(24)]
    project = make(env, name="prefs", task="preference", rows=rows, holdout=0.25)
    judge_everything(env, project)
    job = rounds.train_on_reviewed(session, env["settings"], project, method="reward", model=str(tiny_encoder),
                                   any_path=True)
    assert (job.recipe["method"], job.model) == ("reward", str(tiny_encoder))
    pairs = export.export_rows(session, project, "dpo")
    assert int(job.job_metadata["examples"]) == len(pairs) == 18  # the pool's pairs; held-out ones stay out
    # the job's recipe, run here (a worker would): then the round that re-predicting records
    recipe = parse_recipe({**job.recipe, "data": {"train": str(tmp_path / "pairs.jsonl")},
                           "hyperparameters": {"epochs": 6, "learning_rate": 5e-3, "head_learning_rate": 1e-2}})
    (tmp_path / "pairs.jsonl").write_text("".join(__import__("json").dumps(p) + "\n" for p in pairs))
    result = train(recipe, get_settings(), tmp_path / "reward-run")
    model = str(result.final_dir.parent)
    row = rounds.repredict(session, env["settings"], project, model)
    assert row.accuracy == 1.0  # the reward model prefers what people preferred on every held-out pair
    view = rounds.rounds_view(session, project)[-1]
    assert view["metric"] == "pairwise accuracy" and view["predicted"] == 6
    prediction = store.latest_predictions(session, project_id=project.id, model=model)[0]
    assert prediction.answer["scored_by"] == "reward model" and len(prediction.answer["scores"]) == 2
    from tuneloop.store.tables import Record

    held = session.get(Record, prediction.record_id)
    shown = queue.record_view(session, project, held, env["people"]["rev"])
    assert shown["prediction"] is None and "scores" not in str(shown)  # never which answer a model prefers


def rating_rows() -> list[dict]:
    """Two answers to each of 8 prompts, one good and one bad."""
    rows = []
    for i in range(8):
        for answer in (f"Your parcel {i} arrives on Monday.", "No idea."):
            rows.append({"messages": [{"role": "user", "content": f"When does parcel {i} arrive?"},
                                      {"role": "assistant", "content": answer}]})
    return rows


def test_ratings_export_kto_answers_and_same_prompt_pairs(env, tiny_chat_model):
    session, ann = env["session"], env["people"]["ann"]
    project = make(env, name="rated", task="rating", rows=rating_rows())
    ratings = {}
    while (view := queue.next_record(session, project, ann, "id")) is not None:
        good = view["answer"].startswith("Your parcel")
        rating = 5 if good else (3 if (len(ratings) // 2) % 4 == 0 else 1)  # some bad answers get a neutral 3
        ratings[view["id"]] = rating
        queue.submit(session, project, ann, view["id"], {"rating": rating})
    kto = export.export_rows(session, project, "kto")
    assert len(kto) == sum(r != 3 for r in ratings.values())  # a 3 teaches neither way
    assert all(row["label"] == row["completion"][0]["content"].startswith("Your parcel") for row in kto)
    pairs = export.export_rows(session, project, "reward_pairs")
    assert len(pairs) == 8 and all(p["preferred_output"][0]["content"].startswith("Your parcel") for p in pairs)
    assert sorted({p["margin"] for p in pairs}) == [2.0, 4.0]
    job = rounds.train_on_reviewed(session, env["settings"], project, method="kto", model=str(tiny_chat_model),
                                   any_path=True)
    assert job.recipe["method"] == "kto" and int(job.job_metadata["examples"]) == len(kto)
    with pytest.raises(ServiceError, match="has 8 pair") as few:
        rounds.train_on_reviewed(session, env["settings"], project, method="reward", any_path=True)
    assert few.value.status == 409
    with pytest.raises(ServiceError, match="not ratings") as wrong:
        rounds.train_on_reviewed(session, env["settings"], make(env, name="c"), method="kto", any_path=True)
    assert wrong.value.param == "method"
