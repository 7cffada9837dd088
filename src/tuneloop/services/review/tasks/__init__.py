"""Review task types, one module each, chosen from a registry by a project's `task`.

A task type owns everything that differs between kinds of review work: what a record needs from the
imported data, what a person is shown, how an answer is checked and what is kept of it, what the people's
answer on a record is, which training data it exports, whether a model can pre-label it, and how people's
and models' answers are measured against each other. The queue, export, pre-labels, quality and rounds
ask the task type and never which task they serve.

A new task type is one new module in this package that registers a `TaskType` subclass with `@register`
(found on first lookup), or a `register` call anywhere before use (a test registers a toy one that way).
Projects keep the task and the `multi_label` flag apart, as the API takes them; the type that serves a
task's multi-label projects names the task in `multi_label_of`.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tuneloop.evals.agreement import Agreement
from tuneloop.store.tables import Annotation, Prediction, Project, Record, User

if TYPE_CHECKING:
    from tuneloop.services.review.prelabel import Predictor

Item = dict[str, Any]
"""One record to review, whatever it came as (projects.item_from_object): original (the object as read), text,
prompt (messages), answer (the last assistant answer), answers (two to compare), labels (given labels, kept as
gold)."""
Gold = list[str]
"""The people's labels on a record: one, or several in a multi-label project."""


class Unfit(ValueError):
    """An imported record does not fit the task; the message says why (the caller adds where)."""


@dataclass
class Shown:
    """What one person was shown when they answered a record: their answer is checked against it."""

    project: Project
    record: Record
    user: User | None
    view: dict[str, Any]
    """The task type's part of the record view: the draft they corrected, the answers in their order."""


class TaskType(ABC):
    """The task type protocol. The queue calls `view` (what a person sees), `normalise` (their answer, checked),
    `answer_of`, `keep_answer` and `model_disagrees` (the people's answer on the record); export calls
    `export_row`; pre-labels call `predict`; quality and rounds call `agreement_labels`, `model_report` and
    `holdout_score`. A subclass sets `name` and the flags that apply, and implements `read` and `normalise`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    """What a project of this type asks people to do, in a few words (the project form, the CLI's help)."""
    widget: ClassVar[str] = ""
    """How the queue page takes an answer: one of the widgets of static/queue.js (`labels`, `edit`, `compare`,
    `scale`); a type that answers like an existing one names it and needs no front-end change."""
    multi_label_of: ClassVar[str | None] = None
    """Set on the type that serves the multi-label projects of that task."""
    takes_labels: ClassVar[bool] = False
    """Projects of this type need a label set (from the data, or given)."""
    least_labels: ClassVar[int] = 2
    """The fewest labels a project's set may have (a text's label is a choice; a span's may be the only kind)."""
    label_answers: ClassVar[bool] = False
    """An answer is a label of the project's set, so a model's label or a gold label can stand for a person's
    (bulk accept, the simulated loop)."""
    prediction_keys: ClassVar[bool] = False
    """A prediction's label is a key of several parts (`6:14 ORDER|26:31 DATE`), so the table's prediction
    filter looks for a label among its parts."""
    bulk_accepts: ClassVar[bool] = False
    """A model's prediction is an answer a reviewer may accept as it is (`model_answer`: a label, spans)."""
    settles_by_agreement: ClassVar[bool] = True
    """People's answers are choices that must agree: where they differ the record has a majority or a tie, and
    a reviewer may adjudicate. False where different answers are all kept (ratings are averaged)."""
    label_lists: ClassVar[bool] = False
    """Records keep the people's answer as a list of labels (`human_labels`), not one (`human_label`)."""
    exports: ClassVar[tuple[str, ...]] = ()
    """The training data the reviewed records export as (the first is what rounds count when nothing trains)."""
    classifier_export: ClassVar[str | None] = None
    """The export a classifier trains on ("train on reviewed data" with the classify method: a head on an
    encoder or a decoder, or a chat model answering with the label); None: this type trains through `train_as`."""
    train_as: ClassVar[str | None] = None
    """The export "train on reviewed data" fine-tunes on; None when this type's data trains nothing here."""
    trains: ClassVar[str | None] = None
    """A training method of its own that "train on reviewed data" uses on the first of `exports` (spans train
    `token_classify`), when neither `classifier_export` nor `train_as` applies."""
    round_metric: ClassVar[str] = "accuracy"
    """What a round's score (`holdout_score`'s first number) is, as the rounds table names it."""
    not_trainable: ClassVar[str] = "this project's reviewed data trains nothing here yet"
    """Why not, when `train_as` is None."""
    draft_from_model: ClassVar[bool] = False
    """What people work on is a model's answer (a draft to correct): it is shown even on held-out records and
    in projects that hide predictions (there it is material, not a pre-label that anchors a choice)."""
    prelabels: ClassVar[bool] = False
    """A model can pre-label the records (`predict`); otherwise people judge what the records hold."""

    # ---------------------------------------------------------------- records
    @abstractmethod
    def read(self, item: Item) -> tuple[str, dict[str, Any]]:
        """(the text people read first, what the record keeps besides the original) of one imported item;
        Unfit saying why when it does not fit."""

    def view(self, record: Record, prediction: dict[str, Any] | None, user: User | None) -> dict[str, Any]:
        """What this type adds to the record view (it may hide the prediction by setting it to None)."""
        return {}

    # ---------------------------------------------------------------- answers
    @abstractmethod
    def normalise(self, value: dict[str, Any], shown: Shown) -> dict[str, Any]:
        """The answer as stored; ServiceError(400) naming the field (`value.label`) when it does not fit."""

    def shown_again(self, value: dict[str, Any], record: Record, user: User | None) -> dict[str, Any]:
        """A withdrawn answer as its person sees it again (undo)."""
        return dict(value)

    def labels_of(self, value: dict[str, Any]) -> list[str]:
        """The labels a stored answer gives (none for free text): the label distribution and the table count these."""
        label = value.get("label")
        return [] if label is None else [label]

    def answer_of(self, value: dict[str, Any]) -> Hashable | None:
        """What people's answers are compared by (agreement, the majority on a record); None: not compared."""
        labels = self.labels_of(value)
        return labels[0] if labels else None

    def keep_answer(self, record: Record, answer: Hashable | None) -> None:
        """Keep the people's answer on the record, for filtering, export and measuring models."""
        record.human_label, record.human_labels = answer, None

    def model_disagrees(self, answer: Hashable | None, predicted: str | None) -> bool:
        return answer is not None and predicted is not None and predicted != answer

    def model_answer(self, prediction: Prediction) -> dict[str, Any] | None:
        """The answer a reviewer accepts from a model's prediction (bulk accept); None where this type's
        predictions are not answers (a draft to correct is not an answer until someone corrects it)."""
        return self.answer_with(prediction.label) if self.label_answers and prediction.label is not None else None

    def answer_with(self, label: str) -> dict[str, Any]:
        """The answer that picks `label` (for types with `label_answers`)."""
        return {"label": label}

    def item_labels(self, item: Item) -> list[str]:
        """The labels an imported item carries (the label set is taken from them, and checked against it)."""
        return list(item.get("labels", []))

    def answer_text(self, record: Record) -> str | None:
        """The people's answer on a record in words, where its stored form does not read well (the table, the
        record page); None: shown as it is."""
        return None

    def prediction_text(self, record: Record) -> str | None:
        """The prediction on a record in words, where its label does not read well; None: its label."""
        return None

    def gold_of(self, project: Project, item: Item) -> dict[str, Any] | None:
        """The known answer of an imported item made a gold question; None where it has none."""
        labels = item.get("labels")
        return self.gold_answer(project, labels) if labels else None

    def predicted_answer(self, prediction: Prediction) -> Hashable | None:
        """What a model's prediction answers, compared with the people's answer (`answer_of`) in model reports
        and round scores; by default its label."""
        return prediction.label

    def gold_answer(self, project: Project, labels: Gold) -> dict[str, Any] | None:
        """The known answer of a gold question whose labels are `labels`; None where this type has no gold
        questions (or the labels do not make one answer)."""
        return self.answer_with(labels[0]) if self.label_answers and len(labels) == 1 else None

    # ---------------------------------------------------------------- export
    @abstractmethod
    def export_row(self, project: Project, record: Record, annotations: list[Annotation],
                   kind: str) -> dict[str, Any] | None:
        """One training example of `kind` (one of `exports`) from a reviewed record; None: nothing to learn."""

    # ---------------------------------------------------------------- pre-labels
    def predict(self, project: Project, predictor: Predictor, records: list[Record],
                uncertainty: Callable[[Sequence[float]], float]) -> list[dict[str, Any]]:
        """One prediction row per record (record_id, model, answer, label, confidence, ..., uncertainty)."""
        from tuneloop.services import ServiceError

        raise ServiceError(400, f"a {self.name} project has no pre-labels: people judge the answers it holds", "task")

    # ---------------------------------------------------------------- quality
    def agreement_labels(self, project: Project, answers: set[Hashable]) -> dict[str, Hashable]:
        """label -> the answer that counts as it, for agreement per label ('this label or not')."""
        return {label: label for label in project.labels or sorted(answers)}  # type: ignore[type-var]

    def agreement_report(self, texts: Callable[[Sequence[int]], Mapping[int, str]],
                         units: Mapping[int, Mapping[str, Hashable]]) -> dict[str, Any] | None:
        """Agreement measures of this type beside alpha and kappa on whole answers (`texts(ids)`: record id ->
        text, read only when asked for; `units`: record id -> {person: answer}); None where it has none."""
        return None

    def model_report(self, pairs: list[tuple[Gold, str]], labels: list[str]) -> dict[str, Any]:
        """A model's predicted labels against the people's: accuracy, per-label scores, confusion."""
        return {}

    def holdout_score(self, pairs: list[tuple[Gold, str]], labels: list[str]) -> tuple[float | None, float | None]:
        """(accuracy, macro-F1) of a round's model on the held-out records; None where not measured."""
        return None, None


# ---------------------------------------------------------------- the registry
_REGISTRY: dict[str, TaskType] = {}
_discovered = False
T = TypeVar("T", bound=type[TaskType])


def register(cls: T) -> T:
    """Register a task type class under its `name`."""
    _REGISTRY[cls.name] = cls()
    return cls


def _discover() -> None:
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _discovered = True


def project_tasks() -> list[str]:
    """The values a project's `task` may take."""
    _discover()
    return sorted(name for name, task in _REGISTRY.items() if task.multi_label_of is None)


def task_titles() -> dict[str, str]:
    """Each project task and what it asks people to do."""
    _discover()
    return {name: _REGISTRY[name].title for name in project_tasks()}


def check_task(task: str) -> str:
    """`task` when it is a project task; otherwise a ValueError that lists them."""
    if task not in project_tasks():
        raise ValueError(f"task '{task}' is not one of {', '.join(project_tasks())}")
    return task


def for_task(task: str, multi_label: bool = False) -> TaskType:
    """The type serving projects of `task` (with `multi_label`, its multi-label type where it has one)."""
    _discover()
    if multi_label:
        for variant in _REGISTRY.values():
            if variant.multi_label_of == task:
                return variant
    return _REGISTRY[task]


def task_of(project: Project) -> TaskType:
    return for_task(project.task, project.multi_label)


# ---------------------------------------------------------------- shared by several types
def last_user(messages: list[dict[str, Any]]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else (messages[-1]["content"] if messages else "")


def prompt_and_answer(item: Item, task: str) -> tuple[str, dict[str, Any]]:
    """A conversation to answer or rate: the prompt and its last assistant answer (None when it ends with the user)."""
    if "prompt" not in item:
        raise Unfit(f"a {task} project needs prompts ('prompt', 'messages', or any chat format), not plain text")
    return last_user(item["prompt"]), {"prompt": item["prompt"], "answer": item.get("answer")}


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def best(annotations: list[Annotation]) -> Annotation:
    """An accepted annotation if a reviewer accepted one, else the newest."""
    accepted = [a for a in annotations if a.status == "accepted"]
    return (accepted or annotations)[-1]


def agreement_dict(agreement: Agreement) -> dict[str, Any]:
    """An agreement as the API shows it: the value (4 digits) and how many records it rests on."""
    return {"value": None if agreement.value is None else round(agreement.value, 4), "records": agreement.units}
