"""The playground: one prompt (typed, or a row of a dataset) sent to 2-4 models side by side. The models stand
behind shuffled slots (A, B, ...) that the browser streams by letter, so the person judging never knows which
model wrote which answer until they have judged. A judgement (the best answer, or a tie) is stored as records of
the `playground` arena project with the person's annotation, one record per pair it decides (the best against each
other answer; every pair for a tie), so it counts in that arena's results beside any other arena's, and exports as
DPO pairs."""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.services import ServiceError
from tuneloop.services.models import api_model_ref
from tuneloop.services.review import projects
from tuneloop.services.review.projects import record_row
from tuneloop.services.review.queue import refresh_record
from tuneloop.services.review.tasks import for_task
from tuneloop.services.review.tasks.arena import TIE
from tuneloop.services.review.tasks.preference import KEYS
from tuneloop.store import repo
from tuneloop.store import review as store
from tuneloop.store.tables import PlaygroundSession, User

SLOTS = "ABCD"
PROJECT = "playground"
MAX_PROMPT = 20_000


def start(session: Session, settings: Settings, user: User | None, models: list[str], prompt: str | None = None,
          system: str | None = None, data: str | None = None, row: int | None = None) -> dict[str, Any]:
    """A session: the models behind shuffled slots, and the prompt (typed, or row `row` of `data`)."""
    if not 2 <= len(models) <= len(SLOTS) or len(set(models)) != len(models):
        raise ServiceError(400, f"models: 2 to {len(SLOTS)} different models", "models")
    refs = {}
    for i, model in enumerate(models):
        try:
            refs[model] = api_model_ref(session, settings, model)
        except ServiceError as e:
            raise ServiceError(e.status, f"models[{i}]: {e.message}", f"models[{i}]", e.code) from None
    if data is not None:
        messages = _row_prompt(session, settings, data, row)
    else:
        if not prompt or not prompt.strip() or len(prompt) > MAX_PROMPT:
            raise ServiceError(400, f"prompt: 1 to {MAX_PROMPT} characters (or give data and row)", "prompt")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    order = list(models)
    random.SystemRandom().shuffle(order)
    row_ = PlaygroundSession(id=repo.new_id("play"), user_id=user.id if user else None, models=order,
                             refs=[refs[m] for m in order], prompt=messages, created_at=time.time())
    session.add(row_)
    session.commit()
    return {"id": row_.id, "slots": list(SLOTS[:len(order)]), "prompt": messages}


def _row_prompt(session: Session, settings: Settings, data: str, row: int | None) -> list[dict[str, Any]]:
    from tuneloop.services.comparison_jobs import client_data

    if row is None or row < 0:
        raise ServiceError(400, "row: the row of the data to send (0 for the first)", "row")
    _, items = projects.read_source(settings, client_data(session, settings, data, "data"))
    prompts = [item["prompt"] for _, item in items if item.get("prompt")]
    if row >= len(prompts):
        raise ServiceError(400, f"row: {row} is past the data's {len(prompts)} prompts", "row")
    return prompts[row]


def require(session: Session, play_id: str, user: User | None) -> PlaygroundSession:
    found = session.get(PlaygroundSession, play_id)
    if found is None or (user is not None and found.user_id not in (None, user.id)):
        raise ServiceError(404, f"no playground session '{play_id}'", "play_id", "playground_not_found")
    return found


def slot(session: Session, play_id: str, letter: str, user: User | None) -> tuple[str, list[dict[str, Any]]]:
    """(what the cache loads, the prompt) behind one slot."""
    found = require(session, play_id, user)
    if letter not in SLOTS[:len(found.models)]:
        raise ServiceError(404, f"no slot '{letter}' (slots: {', '.join(SLOTS[:len(found.models)])})", "slot")
    return found.refs[SLOTS.index(letter)], found.prompt


def judge(session: Session, settings: Settings, user: User | None, play_id: str, winner: str,
          answers: dict[str, str]) -> dict[str, Any]:
    """Store the person's judgement (`winner` a slot, or tie) of the answers they were shown, and reveal the
    models. A judgement is a person's: an API key cannot give one."""
    if user is None:
        raise ServiceError(400, "a judgement is a person's: log in to the UI to judge", "winner")
    found = require(session, play_id, user)
    if found.judged_at is not None:
        raise ServiceError(409, "this prompt was judged already; send a new one", "play_id", "judged")
    letters = SLOTS[:len(found.models)]
    if winner != TIE and winner not in letters:
        raise ServiceError(400, f"winner: one of {', '.join(letters)} or tie", "winner")
    missing = [s for s in letters if not isinstance(answers.get(s), str)]
    if missing:
        raise ServiceError(400, f"answers.{missing[0]}: the answer shown in slot {missing[0]}", f"answers.{missing[0]}")
    project = _project(session, settings, user)
    task = for_task("arena")
    pairs = [(a, b) for a, b in itertools.combinations(range(len(letters)), 2)
             if winner == TIE or letters.index(winner) in (a, b)]
    start_line = len(store.all_records(session, project_id=project.id)) + 1
    rows = []
    for n, (a, b) in enumerate(pairs):
        line = {"prompt": found.prompt, "answers": [answers[letters[a]], answers[letters[b]]],
                "models": [found.models[a], found.models[b]], "session": found.id}
        rows.append({**record_row(task, start_line + n, {"original": line, "prompt": line["prompt"],
                                                         "answers": line["answers"]}, PROJECT), "split": "pool"})
    store.add_records(session, project_id=project.id, rows=rows)
    session.flush()
    added = store.all_records(session, project_id=project.id)[-len(rows):]
    for record, (a, b) in zip(added, pairs):
        label = TIE if winner == TIE else KEYS[0] if letters.index(winner) == a else KEYS[1]
        value = {"preferred": None if label == TIE else KEYS.index(label), "label": label, "rewrite": None}
        store.add_annotation(session, record=record, user_id=user.id, value=value, status="submitted")
        refresh_record(session, project, record)
    found.judged_at = time.time()
    session.commit()
    return {"id": found.id, "winner": winner, "models": dict(zip(letters, found.models)), "project": PROJECT,
            "records": len(rows)}


def _project(session: Session, settings: Settings, user: User) -> Any:
    project = store.find_project(session, ref=PROJECT)
    if project is None:
        project = projects.create_project(session, settings, name=PROJECT, task="arena", data=PROJECT, items=[])
    if project.task != "arena":
        raise ServiceError(409, f"a project named '{PROJECT}' exists and is not an arena; rename it", "project")
    try:
        projects.add_member(session, project, user.username)
    except ServiceError:
        pass  # a member already
    return project
