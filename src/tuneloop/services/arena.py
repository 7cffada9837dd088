"""Arenas: 2-4 models answer N prompts of a dataset, and every pair of answers to a prompt is judged, by people in
the review queue (an `arena` project: names hidden, sides random per person, ties allowed) and, when asked, by an
LLM judge (any model the server serves, or TUNELOOP_JUDGE_BASE_URL's) that judges each pair in both orders: a
verdict that changes with the order is a tie. The judge's verdicts are the records' predictions, so they never count
as people's. Results: win rates with bootstrap intervals, a Bradley–Terry ranking with intervals (evals/arena.py),
for people and for the judge apart, and their agreement (Cohen's kappa) on the pairs both judged.

Answering and judging run as jobs of kind `arena` on the worker queue."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.evals import arena as scoring
from tuneloop.evals.graders import read_label
from tuneloop.services import ServiceError
from tuneloop.services.review import projects
from tuneloop.services.review.projects import PROJECT_NAME
from tuneloop.services.review.tasks.arena import TIE, verdict_label
from tuneloop.services.review.tasks.preference import KEYS
from tuneloop.store import repo
from tuneloop.store import review as store
from tuneloop.store.tables import Job, Project
from tuneloop.worker.kinds import job_session, register

MAX_MODELS = 4
JUDGE_SYSTEM = ("You compare two answers to the same request. Judge which answer serves the request better: correct, "
                "helpful, clear. Reply with one word: A, B, or tie.")
COUNTED = ("submitted", "accepted")


def judge_messages(prompt: list[dict[str, str]], first: str, second: str) -> list[dict[str, str]]:
    request = "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": f"Request:\n{request}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}\n\n"
                                        "Which answer is better? Reply A, B or tie."}]


def combine(forward: str | None, backward: str | None) -> str | None:
    """The verdict from both orders, on the data's order: `forward` judged (first, second) as (A, B), `backward`
    (second, first). The same winner both ways wins; anything else with both read is a tie; None when neither was
    read, and the one read when only one was."""
    as_data = {"A": "first", "B": "second", "tie": "tie", None: None}
    one = as_data[forward]
    two = {"A": "second", "B": "first", "tie": "tie", None: None}[backward]
    if one is None or two is None:
        return one or two
    return one if one == two else "tie"


# ---------------------------------------------------------------------- creating and judging
def create_arena(session: Session, settings: Settings, *, name: str, models: list[str], refs: list[str],
                 data: str, rows: int = 50, max_tokens: int = 256, judge: str | None = None,
                 judge_ref: str | None = None) -> Job:
    """Queue the job that has each model answer the first `rows` prompts of `data` and makes the arena project
    `name` (one record per prompt and pair of models), then, with `judge`, has the judge judge every pair. `refs`:
    what the worker loads for each model (the caller resolved them by its rules)."""
    if not PROJECT_NAME.match(name):
        raise ServiceError(400, f"name '{name}': letters, digits, '.', '_' or '-', starting with a letter or digit",
                           "name")
    if store.find_project(session, ref=name) is not None:
        raise ServiceError(409, f"a project named '{name}' exists already", "name", "name_taken")
    if not 2 <= len(models) <= MAX_MODELS or len(set(models)) != len(models):
        raise ServiceError(400, f"models: 2 to {MAX_MODELS} different models", "models")
    if not 1 <= rows <= 1000:
        raise ServiceError(400, f"rows: from 1 to 1000, got {rows}", "rows")
    if not 1 <= max_tokens <= 2048:
        raise ServiceError(400, f"max_tokens: from 1 to 2048, got {max_tokens}", "max_tokens")
    pairs = len(list(itertools.combinations(models, 2)))
    job = Job(id=repo.new_id("job"), kind="arena", model=", ".join(models), params={
        "step": "answer", "name": name, "models": models, "refs": refs, "data": data, "rows": rows,
        "max_tokens": max_tokens, "judge": judge, "judge_ref": judge_ref or judge}, method={}, hyperparameters={},
        extra={}, status="queued", result_files=[], created_at=time.time(), cancel_requested=False,
        progress={"done": 0, "total": rows * len(models) + (rows * pairs * 2 if judge else 0), "unit": "answers"})
    session.add(job)
    repo.add_event(session, job_id=job.id, message=f"Arena {name}: {len(models)} models on {rows} prompts queued")
    session.commit()
    return job


def judge_arena(session: Session, settings: Settings, project: Project, judge: str, judge_ref: str) -> Job:
    """Queue a job that has `judge` judge every pair of the arena, in both orders."""
    _require_arena(project)
    records = store.all_records(session, project_id=project.id)
    job = Job(id=repo.new_id("job"), kind="arena", model=judge, params={
        "step": "judge", "name": project.name, "judge": judge, "judge_ref": judge_ref}, method={},
        hyperparameters={}, extra={}, job_metadata={"project": project.id}, status="queued", result_files=[],
        created_at=time.time(), cancel_requested=False,
        progress={"done": 0, "total": 2 * len(records), "unit": "judgements"})
    session.add(job)
    repo.add_event(session, job_id=job.id, message=f"Judging arena {project.name} with {judge} queued")
    session.commit()
    return job


def _require_arena(project: Project) -> None:
    if project.task != "arena":
        raise ServiceError(400, f"project '{project.name}' is a {project.task} project, not an arena", "project")


@register("arena")
def run_arena_job(job_id: str, settings: Settings) -> None:
    with job_session(job_id, settings) as (session, job):
        from tuneloop.serve.cache import ModelCache

        cache = ModelCache(settings)
        progress = _Progress(session, job)
        if job.params["step"] == "answer":
            project = store.find_project(session, ref=job.params["name"])
            if project is None:  # a restarted job that made its project already goes on to judge it
                project = _answer(session, settings, job, cache, progress)
            job.job_metadata = {"project": project.id}
            job.result = {"project": project.name,
                          "records": len(store.all_records(session, project_id=project.id))}
            session.commit()
        project = store.find_project(session, ref=job.params["name"])
        assert project is not None
        if job.params.get("judge"):
            judged = _judge(session, settings, job, project, cache, progress)
            job.result = {**(job.result or {}), "project": project.name, "judge": job.params["judge"], **judged}
        session.commit()


class _Progress:
    def __init__(self, session: Session, job: Job):
        self.session, self.job, self.last = session, job, 0.0

    def add(self, n: int) -> None:
        progress = dict(self.job.progress or {})
        progress["done"] = progress.get("done", 0) + n
        self.job.progress = progress
        if time.time() - self.last > 1.0:
            self.last = time.time()
            self.session.commit()


def _answer(session: Session, settings: Settings, job: Job, cache: Any, progress: _Progress) -> Project:
    from tuneloop.models.generation import GenerationOptions, complete_batch

    p = job.params
    _, items = projects.read_source(settings, p["data"])
    prompts = [item["prompt"] for _, item in items if item.get("prompt")][:p["rows"]]
    if not prompts:
        raise ServiceError(400, f"data: no prompts in {p['data']} (chats that end with the user's turn, or 'prompt')",
                           "data")
    answers: dict[str, list[str]] = {}
    options = GenerationOptions(max_tokens=p["max_tokens"], temperature=0.0)
    for name, ref in zip(p["models"], p["refs"]):
        with cache.using(ref) as (model, tokenizer):
            answers[name] = []
            for start in range(0, len(prompts), 8):
                batch = complete_batch(model, tokenizer, prompts[start:start + 8], options)
                answers[name] += [a.text for a in batch]
                progress.add(len(batch))
    folder = settings.home / "arenas"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{p['name']}.jsonl"
    lines = [{"prompt": prompt, "answers": [answers[a][row], answers[b][row]], "models": [a, b], "row": row}
             for row, prompt in enumerate(prompts) for a, b in itertools.combinations(p["models"], 2)]
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    items = [(number, {"original": line, "prompt": line["prompt"], "answers": line["answers"]})
             for number, line in enumerate(lines, 1)]  # answers may be empty or the same: still a pair to judge
    project = projects.create_project(session, settings, name=p["name"], task="arena", data=path.name,
                                      items=items)
    session.commit()
    return project


def _judge(session: Session, settings: Settings, job: Job, project: Project, cache: Any,
           progress: _Progress) -> dict[str, Any]:
    """Judge every record not yet judged by this judge (a restarted job goes on where it stopped)."""
    from tuneloop.evals.rl import is_local
    from tuneloop.models.generation import GenerationOptions, complete
    from tuneloop.services.graders import Judges

    judge, ref = job.params["judge"], job.params.get("judge_ref") or job.params["judge"]
    options = GenerationOptions(max_tokens=8, temperature=0.0)

    def ask(messages: list[dict[str, str]]) -> str:
        if is_local(ref):  # a model this machine has (the caller resolved a client's id to it)
            with cache.using(ref) as (model, tokenizer):
                return complete(model, tokenizer, messages, options).text
        return Judges(settings, session, cache)(ref, messages, {"max_completions_tokens": 8, "temperature": 0.0})[0]

    done = store.predicted_ids(session, project_id=project.id, model=judge)
    unread = 0
    for record in store.all_records(session, project_id=project.id):
        if record.id in done:
            continue
        prompt, (first, second) = record.data["prompt"], record.data["answers"][:2]
        said = []
        for a, b in ((first, second), (second, first)):
            said.append(read_label(ask(judge_messages(prompt, a, b)), ["A", "B", "tie"]))
            progress.add(1)
        verdict = combine(*said)
        if verdict is None:
            unread += 1
            continue
        consistent = None not in said and {"A": "B", "B": "A", "tie": "tie"}[said[0]] == said[1]
        store.add_predictions(session, project_id=project.id, rows=[{  # not on the record: people never see it
            "record_id": record.id, "model": judge, "answer": {"verdict": verdict, "orders": said},
            "label": verdict_label(verdict), "confidence": 1.0 if consistent else 0.5, "probabilities": None,
            "uncertainty": 0.0}])
        session.commit()
    return {"judged": len(store.predicted_ids(session, project_id=project.id, model=judge)), "unreadable": unread}


# ---------------------------------------------------------------------- results
def judgements(session: Session, project: Project) -> tuple[list[scoring.Judgement], dict[str, list[scoring.Judgement]]]:
    """(people's judgements, {judge: its judgements}) on the arena's records, each on the data's order."""
    from tuneloop.store.tables import User

    records = {r.id: r for r in store.all_records(session, project_id=project.id)}
    people = []
    for a in store.annotations_of(session, record_ids=list(records), statuses=COUNTED):
        if getattr(a, "source", "person") != "person":
            continue
        record, label = records[a.record_id], a.value.get("label")
        if label not in (*KEYS, TIE):
            continue
        user = session.get(User, a.user_id)
        people.append(_judgement(record, label, user.username if user else a.user_id))
    judges: dict[str, list[scoring.Judgement]] = {}
    for p in store.latest_predictions(session, project_id=project.id):
        if p.record_id in records and p.label in (*KEYS, TIE):
            judges.setdefault(p.model, []).append(_judgement(records[p.record_id], p.label, p.model))
    return people, judges


def _judgement(record: Any, label: str, by: str) -> scoring.Judgement:
    a, b = record.data["models"]
    winner = "tie" if label == TIE else ("a" if label == KEYS[0] else "b")
    return scoring.Judgement(a, b, winner, item=str(record.id), by=by)


def results(session: Session, project: Project, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    _require_arena(project)
    records = store.all_records(session, project_id=project.id)
    models = sorted({m for r in records for m in r.data["models"]})
    people, judges = judgements(session, project)

    def summary(found: list[scoring.Judgement]) -> dict[str, Any]:
        return {"judgements": len(found), "ties": sum(1 for j in found if j.winner == "tie"),
                "win_rates": scoring.win_rates(models, found, resamples=resamples, seed=seed),
                "ranking": scoring.ranking(models, found, resamples=resamples, seed=seed)}

    return {"project": project.name, "models": models, "records": len(records),
            "prompts": len({r.data.get("row") for r in records}), "people": summary(people),
            "judges": {name: {**summary(found), "agreement_with_people": scoring.judge_agreement(people, found)}
                       for name, found in judges.items()}}
