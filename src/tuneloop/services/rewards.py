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
"""Guards `_loaded` and `_locks` only: loading and scoring hold their model's own lock."""
_locks: dict[str, threading.Lock] = {}


def scorer(session: Session, settings: Settings, model: str) -> tuple[RewardScorer, threading.Lock]:
    """The reward model a client names (the rules of every model id over the API) and its lock; a 400 naming
    `model` when it is not one. A model loading blocks only the requests for it."""
    ref = api_model_ref(session, settings, model)
    with _lock:
        own = _locks.setdefault(ref, threading.Lock())
    with own:
        with _lock:
            if ref in _loaded:
                _loaded.move_to_end(ref)
                return _loaded[ref], own
        try:
            loaded = RewardScorer.load(ref, settings)
        except (ValueError, OSError) as e:
            raise ServiceError(400, f"{model}: {e}", "model", "not_a_reward_model") from None
        with _lock:
            _loaded[ref] = loaded
            while len(_loaded) > KEEP:
                _loaded.popitem(last=False)
        return loaded, own


def rank(session: Session, settings: Settings, model: str, prompt: list[dict[str, Any]],
         candidates: list[str]) -> dict[str, Any]:
    chosen, own = scorer(session, settings, model)
    with own:  # one forward at a time on a shared model
        ranked = chosen.rank(prompt, candidates)
    return {"object": "list", "model": model, "data": ranked}
