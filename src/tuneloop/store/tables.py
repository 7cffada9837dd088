"""Tables. Ids are strings with the OpenAI prefixes (file-, ftjob-, ...); times are unix seconds."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the key, shown in listings to tell keys apart."""
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 of the key (keys are 256-bit random, so a fast hash is safe); the key itself is never stored."""
    created_at: Mapped[float] = mapped_column(Float, default=now)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class File(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(40))
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    """Content address: the bytes live at files/<sha256>; identical uploads share them."""
    created_at: Mapped[float] = mapped_column(Float, default=now, index=True)
    status: Mapped[str] = mapped_column(String(20), default="processed")


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(500))
    training_file: Mapped[str | None] = mapped_column(ForeignKey("files.id"), nullable=True)
    """A train job's training file (none for other kinds)."""
    validation_file: Mapped[str | None] = mapped_column(ForeignKey("files.id"), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(30), default="train", index=True)
    """What the worker does with it: 'train' (runs `recipe`), 'repredict' (runs `params`); more kinds follow."""
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """A train job's whole Recipe, its data named by uploaded file ids."""
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The typed parameters of a job of another kind."""
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """{"done", "total", "unit"}: how far along the job is, for any kind."""
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """What a job of another kind produced (a re-predict: its round); written with its last piece of work."""
    method: Mapped[dict[str, Any]] = mapped_column(JSON)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Our knobs beyond OpenAI's (adapter, lora_rank, max_length...), validated at creation."""
    job_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(500), nullable=True, index=True)
    result_files: Mapped[list[str]] = mapped_column(JSON, default=list)
    trained_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now, index=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    events_offset: Mapped[int] = mapped_column(Integer, default=0)
    """How far into the run's events.jsonl the store has read (a worker taking over continues there)."""


class JobEvent(Base):
    __tablename__ = "job_events"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    level: Mapped[str] = mapped_column(String(10), default="info")
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(10), default="message")
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# ---------------------------------------------------------------- review (people in the loop)
class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    """argon2id, from argon2-cffi; the password itself is never stored."""
    role: Mapped[str] = mapped_column(String(20))
    """admin (everything), reviewer (annotates, accepts or rejects others' work), annotator (annotates)."""
    created_at: Mapped[float] = mapped_column(Float, default=now)
    disabled_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(20))
    """classification, response (people correct the model's draft), preference (A or B), rating (1-5)."""
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    multi_label: Mapped[bool] = mapped_column(Boolean, default=False)
    guidelines: Mapped[str] = mapped_column(Text, default="")
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    """How many people annotate each record."""
    prefill_model: Mapped[str | None] = mapped_column(String(500), nullable=True)
    """The model whose predictions pre-fill the queue (the lead's choice; a re-predict that scores at least as
    well as it takes over). None: no model has predicted yet."""
    hide_predictions: Mapped[bool] = mapped_column(Boolean, default=False)
    """People never see a model's answer in this project (held-out records never show one anyway)."""
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    """The share of the records handed to a person that are gold questions (0: none)."""
    gold_threshold: Mapped[float] = mapped_column(Float, default=0.8, server_default="0.8")
    """A person whose accuracy on gold questions falls below this is flagged."""
    created_at: Mapped[float] = mapped_column(Float, default=now)


class ProjectMember(Base):
    __tablename__ = "project_members"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)


class Record(Base):
    __tablename__ = "records"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    source: Mapped[str] = mapped_column(String(500))
    """Where the record came from: a dataset version id or a file name."""
    source_index: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The record as imported (text / messages / prompt and answers), kept whole."""
    text: Mapped[str] = mapped_column(Text)
    """What people read first (the text, or the last user message); searched by the table view."""
    split: Mapped[str] = mapped_column(String(10), default="pool")
    """pool (to review), holdout (people label it to measure each round's model), or gold (a question with a
    known answer, `gold`, that measures people)."""
    gold: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    """The known answer of a gold question, as the task type stores answers ({"label": ...})."""
    status: Mapped[str] = mapped_column(String(12), default="open")
    """open, annotated (enough annotations), accepted (a reviewer accepted it)."""
    annotations: Mapped[int] = mapped_column(Integer, default=0)
    human_label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """The answer most annotators gave (a label, the preferred answer's key, a rating), for filtering and
    agreement; None in multi-label projects, which keep `human_labels`."""
    human_labels: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    """The label set most annotators gave, in a multi-label project (in the order of the project's labels)."""
    answer_source: Mapped[str | None] = mapped_column(String(12), nullable=True)
    """Where the record's answer (`human_label(s)`) comes from: `people` (they agree), `majority` (they
    disagree and most gave it), `tie` (they disagree with no majority: no answer until someone adjudicates),
    `adjudicated` (a reviewer set it), `model` (a model's label a reviewer accepted: trains, never measures);
    None while nobody answered."""
    disagreement: Mapped[bool] = mapped_column(Boolean, default=False)
    """People disagree with each other, or with the latest prediction."""
    pred_model: Mapped[str | None] = mapped_column(String(500), nullable=True)
    pred_label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    uncertainty: Mapped[float] = mapped_column(Float, default=0.0)
    """1 - margin between the two most likely labels, or minus the mean token log-probability; 0 before
    any prediction (never NULL, so one index serves the uncertainty-first queue on SQLite and PostgreSQL)."""
    models_disagree: Mapped[bool] = mapped_column(Boolean, default=False)
    """The latest predictions of two models give different labels."""
    random_key: Mapped[float] = mapped_column(Float, default=0.0)
    """A fixed random number per record: the random queue order."""
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class Prediction(Base):
    __tablename__ = "predictions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    model: Mapped[str] = mapped_column(String(500))
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    """{"label": ...} or {"text": ...}."""
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    mean_logprob: Mapped[float | None] = mapped_column(Float, nullable=True)
    uncertainty: Mapped[float | None] = mapped_column(Float, nullable=True)
    """How unsure the model was (the measure the pre-label run chose), kept so the queue's order can follow
    whichever model pre-fills it."""
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Annotation(Base):
    __tablename__ = "annotations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    """As the project's task type keeps it: {"label"}, {"labels"}, {"text", "draft", ...}, {"preferred", "label",
    "rewrite"} or {"rating", "label", "comment"}."""
    status: Mapped[str] = mapped_column(String(12))
    """submitted, skipped, accepted, rejected, withdrawn (undone)."""
    source: Mapped[str] = mapped_column(String(12), default="person", server_default="person")
    """person (`user_id` answered), model (`model`'s label, accepted by `user_id`), or adjudication (`user_id`,
    a reviewer, set the record's final answer where people disagreed). Only `person` answers count in agreement."""
    model: Mapped[str | None] = mapped_column(String(500), nullable=True)
    """The model whose label was accepted (source `model`)."""
    review_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewer_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class AnnotationChange(Base):
    """Every change to an annotation, with who, when, and the value and status before and after."""

    __tablename__ = "annotation_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"), index=True)
    record_id: Mapped[int] = mapped_column(Integer, index=True)
    user_id: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(12))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    at: Mapped[float] = mapped_column(Float, default=now)


class Assignment(Base):
    """A record handed to one person until `expires_at`, so two people never get it at once."""

    __tablename__ = "assignments"
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(40), index=True)
    expires_at: Mapped[float] = mapped_column(Float)


class Round(Base):
    """One turn of the loop: the labels it used, the model it trained, its accuracy against people."""

    __tablename__ = "rounds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(500))
    labels_used: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Reviewed examples the round's model trained on; None for a model trained outside the project."""
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    macro_f1: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    predicted: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Records the round's model scored (None: rounds before this was kept)."""
    replaced: Mapped[str | None] = mapped_column(String(500), nullable=True)
    """The model that pre-filled the queue before, when this round's model took over; None when it did not
    (it scored below) or nothing had pre-filled it."""
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)


# ---------------------------------------------------------------- evaluations (/v1/evals)
class Eval(Base):
    """An evaluation in OpenAI's sense: what its items look like (`data_source_config`, a JSON schema) and the
    graders that judge each answer (`testing_criteria`). Runs apply it to data and a model."""

    __tablename__ = "evals"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(500))
    eval_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    data_source_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    testing_criteria: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float, default=now, index=True)


class EvalRun(Base):
    """One run of an eval: its data source (the items, and the model that answers them or the answers given), and
    the job of kind `eval` that grades them. Its status and counts are the job's (`job.result`)."""

    __tablename__ = "eval_runs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    eval_id: Mapped[str] = mapped_column(ForeignKey("evals.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    name: Mapped[str] = mapped_column(String(500))
    model: Mapped[str | None] = mapped_column(String(500), nullable=True)
    """The model as the client named it (completions runs); None for given answers."""
    data_source: Mapped[dict[str, Any]] = mapped_column(JSON)
    run_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now, index=True)


class EvalOutputItem(Base):
    """One graded item of a run: the item, the model's answer (`sample`) and each criterion's result. The job writes
    items a batch at a time, with its counts, so a restarted job continues after the last item written."""

    __tablename__ = "eval_output_items"
    __table_args__ = (UniqueConstraint("run_id", "datasource_item_id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id"), index=True)
    datasource_item_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10))
    """pass (every criterion passed), fail, or error (the answer or a grader failed)."""
    datasource_item: Mapped[dict[str, Any]] = mapped_column(JSON)
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    sample: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float, default=now)


# ---------------------------------------------------------------- hyperparameter searches
class Search(Base):
    """A hyperparameter search: a base recipe, the space of the fields it varies, Optuna's sampler and pruner, the
    metric, and how many trials (one job of kind `search-trial` each). The trials themselves live in the Optuna study
    `study_name` (Optuna's own tables: optuna.db beside an SQLite store, schema `optuna` in PostgreSQL)."""

    __tablename__ = "searches"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    space: Mapped[dict[str, Any]] = mapped_column(JSON)
    sampler: Mapped[str] = mapped_column(String(20))
    pruner: Mapped[str] = mapped_column(String(20))
    metric: Mapped[str] = mapped_column(String(100))
    direction: Mapped[str] = mapped_column(String(10))
    trials: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    study_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float, default=now, index=True)


class PlaygroundSession(Base):
    """One prompt sent to 2-4 models side by side in the playground: which model is behind each slot (A, B, ...;
    shuffled, never sent to the browser until the person has judged) and the prompt. The judgement itself is stored
    as records of the `playground` arena project, with the person's annotation."""

    __tablename__ = "playground_sessions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    models: Mapped[list[str]] = mapped_column(JSON)
    """The models' names in slot order (slot A first)."""
    refs: Mapped[list[str]] = mapped_column(JSON)
    """What the model cache loads for each slot."""
    prompt: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    judged_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
