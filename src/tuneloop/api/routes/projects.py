"""/api/projects: review projects, the queue, annotations, reviews, the table view, quality and export.
Callers are people logged in to the UI (session cookie) or API keys (admin rights; they cannot annotate)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from tuneloop.api.deps import Actor, ActorDep, SessionDep, SettingsDep
from tuneloop.services import ServiceError
from tuneloop.services import files as file_service
from tuneloop.services.auth import (MIN_PASSWORD, USERNAME, check_project_access, create_user, require_admin,
                                    require_reviewer, update_user)
from tuneloop.services.review import adjudication, export, gold, projects, quality, queue, rounds
from tuneloop.services.review.projects import PROJECT_NAME
from tuneloop.services.review.tasks import check_task, project_tasks
from tuneloop.store import review as store
from tuneloop.store.tables import Project

router = APIRouter(tags=["review"])


def _project(session: Any, actor: Actor, ref: str) -> Project:
    project = projects.get_project(session, ref)
    if actor.user is not None:
        check_project_access(session, actor.user, project)
    return project


def _admin(actor: Actor) -> None:
    if actor.user is not None:
        require_admin(actor.user)


class Body(BaseModel):
    """A JSON request body: values must have the type the schema gives (0 is not false, "2" is not 2), as the
    OpenAPI document promises (the fuzzer holds the server to it)."""

    model_config = ConfigDict(strict=True)


class UserCreate(Body):
    username: str = Field(pattern=USERNAME.pattern)
    password: str = Field(min_length=MIN_PASSWORD)
    role: Literal["admin", "reviewer", "annotator"] = "annotator"


ProjectName = Annotated[str, StringConstraints(pattern=PROJECT_NAME.pattern)]
Username = Annotated[str, StringConstraints(pattern=USERNAME.pattern)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=200)]
TaskName = Annotated[str, AfterValidator(check_task), Field(
    description="What people do with each record; the task types registered on this server",
    json_schema_extra=lambda schema: schema.update(enum=project_tasks()))]
"""A project task: checked against the task type registry when a request comes, and listed in the OpenAPI
document from it (a new task type module appears in both with no change here)."""


class ProjectCreate(Body):
    name: ProjectName
    data: str = Field(min_length=1, description="An uploaded file id (file-..., from POST /v1/files), an imported "
                                               "dataset version or name, or a file in a server folder of "
                                               "TUNELOOP_ALLOWED_PATHS (none by default). To send the file itself, "
                                               "use POST /api/projects/upload.")
    task: TaskName = "classification"
    labels: list[Label] | None = Field(None, min_length=2)
    multi_label: bool = False
    guidelines: str = ""
    overlap: int = Field(1, ge=1, le=20)
    holdout: float = Field(0.0, ge=0, lt=1)
    members: list[Username] = Field(default_factory=list)
    unknown_labels: Literal["refuse", "add", "drop"] = Field(
        "refuse", description="Records labelled outside the given labels: refuse the data (a 400 that counts them), "
                              "add their labels to the set, or drop those records")
    gold: float = Field(0.0, ge=0, le=0.5, description="Fraction of the records kept as gold questions (labelled "
                                                       "ones)")
    gold_rate: float = Field(0.1, ge=0, le=0.5, description="Share of each person's records that are gold questions")


class AnnotationIn(Body):
    value: dict[str, Any]


class ReviewIn(Body):
    accept: bool
    comment: str = ""


class BulkAccept(Body):
    record_ids: list[int] = Field(min_length=1, max_length=1000)


class MemberIn(Body):
    username: Username


class TrainIn(Body):
    model: str | None = Field(None, min_length=1, description="A base model: a chat model, or for a "
                              "classification project an encoder (a classifier head on it). Default: minilm-l6 "
                              "for classification, smollm2-135m-instruct otherwise")
    classifier: Literal["auto", "head", "generative"] = Field(
        "auto", description="Classification projects: a head on the model, or the chat model answering with the "
                            "label; auto: head for encoders, generative for chat models")
    epochs: int | None = Field(None, ge=1, le=50, description="Default: the training method's")
    method: Literal["auto", "dpo", "reward", "kto"] = Field(
        "auto", description="dpo: train on the project's preference pairs (preference and response projects); "
                            "reward: a reward model on those pairs, or on a rating project's answers to the same "
                            "prompt; kto: a rating project's answers (4-5 desirable, 1-2 not); auto: the task type's "
                            "own training")


class RepredictIn(Body):
    model: str
    """A registered model, a run folder, or a fine-tuned model id (ft:...)."""


def _job_public(job: Any) -> dict:
    return {"id": job.id, "status": job.status, "model": job.model, "fine_tuned_model": job.fine_tuned_model,
            "examples": int((job.job_metadata or {}).get("examples", 0)), "created_at": job.created_at,
            "error": job.error}


@router.post("/users")
def add_user(session: SessionDep, actor: ActorDep, body: UserCreate) -> dict:
    _admin(actor)
    user = create_user(session, username=body.username, password=body.password, role=body.role)
    return {"id": user.id, "username": user.username, "role": user.role}


@router.get("/users")
def list_users(session: SessionDep, actor: ActorDep) -> dict:
    _admin(actor)
    return {"object": "list", "data": [_user_public(u) for u in store.list_users(session)]}


def _user_public(user: Any) -> dict:
    return {"id": user.id, "username": user.username, "role": user.role, "disabled": user.disabled_at is not None}


class UserUpdate(Body):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["admin", "reviewer", "annotator"] | None = None
    password: str | None = Field(None, min_length=MIN_PASSWORD, description="A new password")
    disabled: bool | None = Field(None, description="A disabled account cannot log in; its work stays")


@router.patch("/users/{username}")
def update_user_route(session: SessionDep, actor: ActorDep, username: str, body: UserUpdate) -> dict:
    """Admins change a person's role, set a new password, or disable the account."""
    _admin(actor)
    user = update_user(session, username, role=body.role, password=body.password, disabled=body.disabled,
                       by=actor.user)
    return _user_public(user)


@router.get("/projects")
def list_projects(session: SessionDep, actor: ActorDep) -> dict:
    return {"object": "list", "data": [projects.counters(session, p)
                                       for p in projects.visible_projects(session, actor.user)]}


@router.post("/projects")
def create_project(session: SessionDep, settings: SettingsDep, actor: ActorDep, body: ProjectCreate) -> dict:
    _admin(actor)
    project = projects.create_project(session, settings, name=body.name, task=body.task, data=body.data,
                                      labels=body.labels, multi_label=body.multi_label, guidelines=body.guidelines,
                                      unknown_labels=body.unknown_labels, gold=body.gold, gold_rate=body.gold_rate,
                                      overlap=body.overlap, holdout=body.holdout, client=True)
    for username in body.members:
        projects.add_member(session, project, username)
    return projects.summary(session, project)


@router.post("/projects/upload")
def create_project_from_upload(
    session: SessionDep, settings: SettingsDep, actor: ActorDep, file: UploadFile,
    name: str = Form(..., pattern=PROJECT_NAME.pattern),
    task: TaskName = Form("classification"),
    labels: str = Form(""), multi_label: bool = Form(False), guidelines: str = Form(""),
    overlap: int = Form(1, ge=1, le=20), holdout: float = Form(0.0, ge=0, lt=1), members: str = Form(""),
    unknown_labels: Literal["refuse", "add", "drop"] = Form("refuse"), gold: float = Form(0.0, ge=0, le=0.5),
    gold_rate: float = Form(0.1, ge=0, le=0.5),
) -> dict:
    """A project from an uploaded file (the UI's form): kept like POST /v1/files, then read by its file id."""
    _admin(actor)
    stored = file_service.save_upload(session, settings, stream=file.file, filename=file.filename or "upload",
                                      purpose="user_data")
    project = projects.create_project(
        session, settings, name=name, task=task, data=stored.id, client=True,
        labels=[x for x in labels.split(",") if x.strip()] or None, multi_label=multi_label, guidelines=guidelines,
        overlap=overlap, holdout=holdout, unknown_labels=unknown_labels, gold=gold, gold_rate=gold_rate)
    for username in (m.strip() for m in members.split(",")):
        if username:
            projects.add_member(session, project, username)
    return projects.counters(session, project)


@router.get("/projects/{ref}")
def get_project(session: SessionDep, actor: ActorDep, ref: str) -> dict:
    project = _project(session, actor, ref)
    return {**projects.summary(session, project), "agreement": quality.agreement(session, project),
            "models": quality.model_vs_human(session, project),
            "disagreements": quality.disagreement_counts(session, project),
            "adjudication": adjudication.counts(session, project),
            "gold_questions": None if actor.user is not None and actor.user.role == "annotator" else
            gold.gold_report(session, project),  # an annotator would see which of their answers were gold
            "throughput": quality.throughput(session, project),
            "members": [u.username for u in store.members(session, project_id=project.id)],
            "jobs": [_job_public(j) for j in rounds.project_jobs(session, project)],
            "rounds": rounds.rounds_view(session, project),
            "prediction_models": store.prediction_models(session, project_id=project.id)}


class ProjectUpdate(Body):
    model_config = ConfigDict(extra="forbid", strict=True)
    prefill_model: str | None = Field(None, min_length=1, description="The model whose predictions pre-fill the "
                                      "queue: one of the project's prediction_models")
    hide_predictions: bool | None = Field(None, description="People never see a model's answer")
    guidelines: str | None = Field(None, max_length=100_000, description="Markdown")
    labels: list[Label] | None = Field(None, min_length=2, description="Add or reorder; a label in use stays")
    overlap: int | None = Field(None, ge=1, le=20)
    gold_rate: float | None = Field(None, ge=0, le=0.5, description="Share of each person's records that are gold "
                                    "questions")
    gold_threshold: float | None = Field(None, ge=0, le=1, description="Accuracy on gold questions below which a "
                                         "person is flagged")


@router.patch("/projects/{ref}")
def update_project(session: SessionDep, actor: ActorDep, ref: str, body: ProjectUpdate) -> dict:
    """Admins change a project's settings."""
    _admin(actor)
    project = projects.update_project(session, _project(session, actor, ref), prefill_model=body.prefill_model,
                                      hide_predictions=body.hide_predictions, guidelines=body.guidelines,
                                      labels=body.labels, overlap=body.overlap, gold_rate=body.gold_rate,
                                      gold_threshold=body.gold_threshold)
    return projects.counters(session, project)


@router.delete("/projects/{ref}/members/{username}")
def remove_member(session: SessionDep, actor: ActorDep, ref: str, username: str) -> dict:
    """Admins take a person off a project; their answers stay."""
    _admin(actor)
    projects.remove_member(session, _project(session, actor, ref), username)
    return {"username": username, "removed": True}


@router.post("/projects/{ref}/members")
def add_member(session: SessionDep, actor: ActorDep, ref: str, body: MemberIn) -> dict:
    _admin(actor)
    user = projects.add_member(session, _project(session, actor, ref), body.username)
    return {"username": user.username, "role": user.role}


@router.get("/projects/{ref}/next")
def next_record(session: SessionDep, actor: ActorDep, ref: str,
                order: str = Query("uncertainty", description="uncertainty, models, random or id")) -> dict:
    project = _project(session, actor, ref)
    record = queue.next_record(session, project, actor.person(), order)
    return {"record": record, "counts": _counts(session, project, actor)}


def _counts(session: Any, project: Project, actor: Actor) -> dict[str, int | None]:
    """The queue's counters. With gold questions, an annotator gets only their own: the project's would stay
    still after a gold answer and tell them it was one."""
    summary = projects.counters(session, project)
    mine = summary["people"].get(actor.user.username, {}) if actor.user else {}
    own = {"mine": mine.get("submitted", 0) + mine.get("accepted", 0), "skipped": mine.get("skipped", 0)}
    if project.gold_rate > 0 and actor.user is not None and actor.user.role == "annotator":
        return {"open": None, "partly": None, "done": None, "records": None, **own}
    return {"open": summary["open"], "partly": summary["partly"], "done": summary["annotated"] + summary["accepted"],
            "records": summary["records"], **own}


@router.post("/projects/{ref}/records/{record_id}/annotations")
def annotate(session: SessionDep, actor: ActorDep, ref: str, record_id: int, body: AnnotationIn) -> dict:
    project = _project(session, actor, ref)
    annotation = queue.submit(session, project, actor.person(), record_id, body.value)
    return {"id": annotation.id, "record_id": record_id, "value": annotation.value, "status": annotation.status,
            "counts": _counts(session, project, actor)}


@router.post("/projects/{ref}/records/{record_id}/skip")
def skip(session: SessionDep, actor: ActorDep, ref: str, record_id: int) -> dict:
    project = _project(session, actor, ref)
    annotation = queue.skip(session, project, actor.person(), record_id)
    return {"id": annotation.id, "record_id": record_id, "status": annotation.status,
            "counts": _counts(session, project, actor)}


@router.post("/projects/{ref}/undo")
def undo(session: SessionDep, actor: ActorDep, ref: str) -> dict:
    project = _project(session, actor, ref)
    record = queue.undo(session, project, actor.person())
    return {"record": record, "counts": _counts(session, project, actor)}


@router.get("/projects/{ref}/adjudication/next")
def next_to_adjudicate(session: SessionDep, actor: ActorDep, ref: str,
                       after: int = Query(0, ge=0, description="Pass over records up to this id (skipped ones)")) -> dict:
    """Reviewers and admins: the next settled record whose people disagree, with each person's answer."""
    project = _project(session, actor, ref)
    return {"record": adjudication.next_disputed(session, project, actor.person(), after),
            "counts": adjudication.counts(session, project)}


@router.post("/projects/{ref}/records/{record_id}/adjudicate")
def adjudicate(session: SessionDep, actor: ActorDep, ref: str, record_id: int, body: AnnotationIn) -> dict:
    """Reviewers and admins set the final answer of a record people disagree on; their answers stay."""
    project = _project(session, actor, ref)
    annotation = adjudication.adjudicate(session, project, actor.person(), record_id, body.value)
    return {"id": annotation.id, "record_id": record_id, "value": annotation.value,
            "counts": adjudication.counts(session, project)}


@router.get("/projects/{ref}/records")
def table(session: SessionDep, actor: ActorDep, ref: str, status: str | None = None, label: str | None = None,
          prediction: str | None = None, annotator: str | None = None, disagreement: bool | None = None,
          min_confidence: float | None = None, max_confidence: float | None = None, search: str | None = None,
          split: str | None = None, sort: str = "id", descending: bool = False,
          offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)) -> dict:
    project = _project(session, actor, ref)
    reader_is_annotator = actor.user is not None and actor.user.role == "annotator"
    if reader_is_annotator:  # filters and sorts that would tell them other people's answers, or the gold questions
        given = {"split=gold": split == "gold", "label": bool(label), "prediction": bool(prediction),
                 "disagreement": disagreement is not None, "min_confidence": min_confidence is not None,
                 "max_confidence": max_confidence is not None,
                 "annotator": bool(annotator) and annotator != actor.user.username,  # type: ignore[union-attr]
                 f"sort={sort}": sort in ("label", "prediction", "annotations", "confidence", "uncertainty")}
        refused = [name for name, used in given.items() if used]
        if refused:
            raise ServiceError(403, f"annotators filter and sort by their own work only; {refused[0]} is for "
                                    "reviewers and admins", refused[0].split("=")[0], "forbidden")
    annotator_id = None
    if annotator:
        user = store.user_by_name(session, username=annotator)
        if user is None:
            raise ServiceError(404, f"no user '{annotator}'", "annotator", "user_not_found")
        annotator_id = user.id
    query = store.TableQuery(status=status or None, label=label or None, prediction=prediction or None,
                             annotator=annotator_id, disagreement=disagreement, min_confidence=min_confidence,
                             max_confidence=max_confidence, search=search or None, split=split or None, sort=sort,
                             descending=descending, offset=offset, limit=limit, without_gold=reader_is_annotator)
    page = queue.table(session, project, query)
    if reader_is_annotator:  # others' answers would bias theirs; predictions only where the queue shows them
        for row in page["data"]:
            if row["split"] == "holdout" or project.hide_predictions:
                row["pred_label"] = row["pred_model"] = row["confidence"] = row["prediction_text"] = None
            row["uncertainty"] = None
            row["work"] = [w for w in row["work"] if w["user"] == actor.user.username]
            row["human_label"] = row["human_labels"] = row["answer_source"] = row["answer_text"] = None
            row["disagreement"] = False
    return page


@router.get("/projects/{ref}/records/{record_id}")
def record(session: SessionDep, actor: ActorDep, ref: str, record_id: int) -> dict:
    if actor.user is not None:
        require_reviewer(actor.user)  # every annotation and the history: for reviewers and admins
    return queue.record_detail(session, _project(session, actor, ref), record_id)


@router.post("/projects/{ref}/annotations/{annotation_id}/review")
def review(session: SessionDep, actor: ActorDep, ref: str, annotation_id: int, body: ReviewIn) -> dict:
    project = _project(session, actor, ref)
    reviewer = actor.person()
    require_reviewer(reviewer)
    annotation = queue.review(session, project, reviewer, annotation_id, body.accept, body.comment)
    return {"id": annotation.id, "status": annotation.status, "review_comment": annotation.review_comment}


@router.post("/projects/{ref}/bulk-accept")
def bulk_accept(session: SessionDep, actor: ActorDep, ref: str, body: BulkAccept) -> dict:
    """Reviewers and admins settle the chosen open records with the model's label (kept as the model's, never
    counted as a person's answer); `left` counts the records left as they were, per reason."""
    project = _project(session, actor, ref)
    return queue.bulk_accept(session, project, actor.person(), body.record_ids)


@router.post("/projects/{ref}/gold")
def mark_gold(session: SessionDep, actor: ActorDep, ref: str, body: BulkAccept) -> dict:
    """Reviewers and admins turn settled records whose people agreed into gold questions (their answer is the
    known one); `left` counts the records left as they were, per reason."""
    return gold.mark_gold(session, _project(session, actor, ref), actor.person(), body.record_ids)


def _export(session: SessionDep, actor: Actor, ref: str, as_: str, split: str, policy: str) -> export.Export:
    if actor.user is not None:
        require_reviewer(actor.user)  # everyone's answers: for reviewers and admins
    return export.export_report(session, _project(session, actor, ref), as_, split, policy)


@router.get("/projects/{ref}/export/summary")
def export_summary(session: SessionDep, actor: ActorDep, ref: str, as_: str = Query(..., alias="as"),
                   split: str = "pool", policy: str = "final") -> dict:
    """What an export would hold: its examples, and the records it leaves out per reason."""
    report = _export(session, actor, ref, as_, split, policy)
    return {"examples": len(report.rows), "left_out": report.left_out, "split": split, "policy": policy,
            "summary": report.summary()}


@router.get("/projects/{ref}/export")
def export_jsonl(session: SessionDep, actor: ActorDep, ref: str, as_: str = Query(..., alias="as"),
                 split: str = "pool", policy: str = "final") -> Response:
    """Settled records as JSONL; `policy`: final (ties and unadjudicated disagreements left out), majority
    (ties left out) or annotations (every answer with its annotator). The X-Tuneloop-Left-Out header holds the
    records left out per reason, as JSON."""
    report = _export(session, actor, ref, as_, split, policy)
    project = _project(session, actor, ref)
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in report.rows)
    filename = f"{project.name}-{as_}.jsonl"
    return Response(body, media_type="application/jsonl", headers={
        "x-tuneloop-examples": str(len(report.rows)), "x-tuneloop-left-out": json.dumps(report.left_out),
        "content-disposition": f"attachment; filename=\"{filename.encode('ascii', 'replace').decode()}\"; "
                               f"filename*=UTF-8''{quote(filename)}"})


@router.post("/projects/{ref}/train")
def train(session: SessionDep, settings: SettingsDep, actor: ActorDep, ref: str, body: TrainIn) -> dict:
    """A fine-tuning job on the reviewed records (any worker runs it)."""
    _admin(actor)
    project = _project(session, actor, ref)
    return _job_public(rounds.train_on_reviewed(session, settings, project, model=body.model, epochs=body.epochs,
                                                classifier=body.classifier, method=body.method))


@router.post("/projects/{ref}/repredict")
def repredict(session: SessionDep, settings: SettingsDep, actor: ActorDep, ref: str, body: RepredictIn) -> dict:
    """Queue a re-predict job: a worker pre-labels the remaining and held-out records with the model, then
    records the round. Its progress is the job's (GET .../tasks, GET /api/jobs/{id})."""
    _admin(actor)
    project = _project(session, actor, ref)
    from tuneloop.services.models import api_model_ref

    ref = api_model_ref(session, settings, body.model)  # a wrong model id is a 404 now, not a failed job later
    return rounds.task_view(rounds.start_repredict(session, project, body.model, ref))


@router.get("/projects/{ref}/tasks")
def tasks(session: SessionDep, actor: ActorDep, ref: str) -> dict:
    """The project's re-predict jobs, newest first, with their progress."""
    project = _project(session, actor, ref)
    return {"object": "list", "data": [rounds.task_view(job) for job in rounds.repredict_jobs(session, project)]}
