"""`POST /api/rewards`: a trained reward model ranks a prompt's candidates; a model that is not a reward model, or
a bad request, is a 400 naming the field."""

from __future__ import annotations

import httpx

from tests.conftest import write_jsonl
from tests.engine.test_dpo import pairs
from tests.engine.test_reward import recipe
from tuneloop.config.settings import get_settings
from tuneloop.engine.loop import train


def test_a_reward_model_ranks_candidates_over_the_native_api(server, tiny_encoder, tmp_path):
    result = train(recipe(tiny_encoder, write_jsonl(tmp_path / "pairs.jsonl", pairs(12))), get_settings(),
                   tmp_path / "reward-run")
    headers = {"Authorization": f"Bearer {server['key']}"}
    body = {"model": str(result.final_dir.parent), "messages": [{"role": "user", "content": "where is the order 9"}],
            "candidates": ["please reset my password", "the package will arrive at the address", "code code"]}
    answer = httpx.post(f"{server['base']}/api/rewards", json=body, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    ranked = answer.json()["data"]
    assert ranked[0]["index"] == 1 and [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    not_reward = httpx.post(f"{server['base']}/api/rewards", json={**body, "model": str(tiny_encoder)},
                            headers=headers, timeout=60)
    assert not_reward.status_code == 400 and not_reward.json()["error"]["param"] == "model"
    assert "no trained head" in not_reward.json()["error"]["message"]
    empty = httpx.post(f"{server['base']}/api/rewards", json={**body, "candidates": []}, headers=headers, timeout=60)
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "candidates"
