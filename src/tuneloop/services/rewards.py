"""Reward models over the native API: score a prompt's candidate answers with a trained reward model and rank them.
Loaded reward models are kept (the two most recent) so that repeated calls do not load again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.evals.rewards import RewardScorer
from tuneloop.services import ServiceError
from tuneloop.services.models import api_model_ref

KEEP = 2
_loaded: OrderedDict[str, RewardScorer] = OrderedDict()
_lock = threading.Lock()


def scorer(session: Session, settings: Settings, model: str) -> RewardScorer:
    """The reward model a client names (the rules of every model id over the API); a 400 naming `model` when it is
    not one."""
    ref = api_model_ref(session, settings, model)
    with _lock:
        if ref not in _loaded:
            try:
                _loaded[ref] = RewardScorer.load(ref, settings)
            except ValueError as e:
                raise ServiceError(400, str(e), "model", "not_a_reward_model") from None
            while len(_loaded) > KEEP:
                _loaded.popitem(last=False)
        _loaded.move_to_end(ref)
        return _loaded[ref]


def rank(session: Session, settings: Settings, model: str, prompt: list[dict[str, Any]],
         candidates: list[str]) -> dict[str, Any]:
    chosen = scorer(session, settings, model)
    with _lock:  # one forward at a time on a shared model
        ranked = chosen.rank(prompt, candidates)
    return {"object": "list", "model": model, "data": ranked}
