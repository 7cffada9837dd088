"""Two workers share one search on PostgreSQL (the study in the database's `optuna` schema) and no trial runs
twice: each trial number is in one job, both workers take trials, and there is no trial beyond the count."""

from __future__ import annotations

from tests.conftest import chat_rows, write_jsonl
from tests.services.test_searches import make, run_workers, tiny_recipe, view
from tuneloop.config.settings import Settings


def test_two_workers_share_one_search_on_postgres_and_no_trial_runs_twice(postgres_url, home, tmp_path,
                                                                         tiny_chat_model):
    settings = Settings(home=home, offline=True, database_url=postgres_url)
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    search_id = make(settings, tiny_recipe(tiny_chat_model, data, max_steps=2),
                     {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
                     sampler_name="random", trials=4, seed=7)
    ran_on = run_workers(settings, search_id, count=2)
    assert set(ran_on) == {"w0", "w1"}, ran_on  # both workers took trials
    seen = view(settings, search_id)
    rows = seen["trial_rows"]
    assert sorted(r["number"] for r in rows) == [0, 1, 2, 3]  # four trials, no fifth
    assert [r["state"] for r in rows] == ["COMPLETE"] * 4
    assert len({r["job"] for r in rows}) == 4  # each trial in its own job, each job one trial
    rates = [r["params"]["hyperparameters.learning_rate"] for r in rows]
    assert len(set(rates)) == 4  # the trials sampled apart, not the same seeded point four times
