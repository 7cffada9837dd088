"""Pre-labels: a model's answer for each record, with a confidence people can sort by. What a model answers
is the task type's (tasks/): for classification, the probability of each label (a head's softmax, or a chat
model's likelihood of each label as its answer; an OpenAI-compatible endpoint's first-token
log-probabilities); for responses, the model's draft and its mean token log-probability.

Resumable: records that already have a prediction from the same model are skipped, and predictions are
committed in batches, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from tuneloop.config.settings import Settings
from tuneloop.engine.tokenize import classification_messages
from tuneloop.evals.agreement import entropy_uncertainty, margin_uncertainty
from tuneloop.evals.classify import has_head
from tuneloop.evals.spans import Predicted, has_token_head, predict_spans
from tuneloop.services import ServiceError
from tuneloop.services.review.queue import refresh_record
from tuneloop.services.review.tasks import task_of
from tuneloop.store import review as store
from tuneloop.store.tables import Project, Record

Progress = Callable[[int, int], None]
UNCERTAINTY = {"margin": margin_uncertainty, "entropy": entropy_uncertainty}


class Predictor(Protocol):
    name: str

    def classify(self, texts: Sequence[str], labels: Sequence[str]) -> list[list[float]]:
        """Probabilities over `labels`, one list per text."""

    def respond(self, prompts: Sequence[list[dict[str, Any]]]) -> list[tuple[str, float]]:
        """(answer, mean token log-probability) per conversation."""

    def spans(self, texts: Sequence[str], labels: Sequence[str]) -> list[Predicted]:
        """The labelled spans found in each text (a token classifier), with a score each."""

    def prefer(self, prompts: Sequence[list[dict[str, Any]]], answers: Sequence[tuple[str, str]]
               ) -> tuple[list[tuple[float, float]], str]:
        """(each answer pair's two scores, what scored them): a reward model's rewards, or a model trained on pairs
        by its implicit reward against its adapter switched off."""


class LocalModel:
    """A registered, fine-tuned (run folder or ft: id) or local model of tuneloop, run in this process."""

    def __init__(self, ref: str, settings: Settings, name: str | None = None, max_tokens: int = 256):
        from tuneloop.models.loading import load_model

        from tuneloop.models.loading import find_run_output, run_meta

        self.name, self.max_tokens = name or ref, max_tokens
        final = find_run_output(ref)
        self.meta = run_meta(final) if final is not None else None
        self.model, self.tokenizer = load_model(ref, settings)
        if (has_head(self.model) or has_token_head(self.model)) and hasattr(self.model, "merge_and_unload"):
            # this copy only predicts: fold the adapter into the weights (one matmul per layer, not three)
            self.model = self.model.merge_and_unload()

    def classify(self, texts: Sequence[str], labels: Sequence[str]) -> list[list[float]]:
        from tuneloop.evals.classify import predict_labels

        if has_token_head(self.model):
            raise ServiceError(400, f"{self.name} is a token classifier: it finds spans, it does not pick a text's "
                                    "label", "model")
        if not has_head(self.model):
            return [probs for _, probs in predict_labels(self.model, self.tokenizer, texts, labels)]
        own = [self.model.config.id2label[i] for i in range(len(self.model.config.id2label))]
        missing = sorted(set(labels) - set(own))
        if missing:
            raise ServiceError(400, f"{self.name} was trained on the labels {own}; it cannot predict {missing}",
                               "model")
        rows = predict_labels(self.model, self.tokenizer, texts, own)
        return [[probs[own.index(label)] for label in labels] for _, probs in rows]

    def spans(self, texts: Sequence[str], labels: Sequence[str]) -> list[Predicted]:
        if not has_token_head(self.model):
            raise ServiceError(400, f"{self.name} is not a token classifier, so it cannot find spans; train one on "
                                    "the project's reviewed records (method token_classify)", "model")
        tags = self.model.config.id2label.values()
        if not {tag[2:] for tag in tags if tag != "O"} & set(labels):
            raise ServiceError(400, f"{self.name} finds {sorted({t[2:] for t in tags if t != 'O'})}, none of the "
                                    f"project's labels {list(labels)}", "model")
        return predict_spans(self.model, self.tokenizer, texts)

    def prefer(self, prompts: Sequence[list[dict[str, Any]]], answers: Sequence[tuple[str, str]]
               ) -> tuple[list[tuple[float, float]], str]:
        from tuneloop.data.records import Message, PreferenceRecord
        from tuneloop.evals.preference import implicit_rewards
        from tuneloop.evals.rewards import RewardScorer

        if self.meta is not None and self.meta.is_reward:
            scorer = RewardScorer(self.model, self.tokenizer)
            scores = scorer.score([[*p, {"role": "assistant", "content": a}] for p, pair in zip(prompts, answers)
                                   for a in pair])
            return [(scores[2 * i], scores[2 * i + 1]) for i in range(len(answers))], "reward model"
        if has_head(self.model) or has_token_head(self.model):
            raise ServiceError(400, f"{self.name} is a classifier: it cannot choose between two answers; use a reward "
                                    "model or a model trained on pairs (dpo)", "model")
        preference = (self.meta.extra.get("preference") or {}) if self.meta is not None else {}
        records = [PreferenceRecord(messages=[Message(**m) for m in p], chosen=[Message(role="assistant", content=a)],
                                    rejected=[Message(role="assistant", content=b)]) for p, (a, b) in zip(prompts, answers)]
        first, second, scored_by = implicit_rewards(self.model, self.tokenizer, records, preference.get("beta", 0.1),
                                                    average=preference.get("method") == "orpo")
        return list(zip(first, second)), scored_by

    def respond(self, prompts: Sequence[list[dict[str, Any]]]) -> list[tuple[str, float]]:
        from tuneloop.models.generation import GenerationOptions, complete_batch

        out = []
        options = GenerationOptions(max_tokens=self.max_tokens, temperature=0.0, logprobs=True)
        for answer in complete_batch(self.model, self.tokenizer, list(prompts), options):
            logprobs = [entry["logprob"] for entry in answer.logprobs or []]
            out.append((answer.text.strip(), sum(logprobs) / len(logprobs) if logprobs else 0.0))
        return out


class Endpoint:
    """Any OpenAI-compatible chat completions endpoint (a larger teacher model, or another tuneloop)."""

    def __init__(self, base_url: str, api_key: str, model: str, max_tokens: int = 256, timeout: float = 120.0):
        import httpx

        self.name, self.model, self.max_tokens = f"{model}@{base_url}", model, max_tokens
        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                   headers={"Authorization": f"Bearer {api_key}"})

    def _chat(self, messages: list[dict[str, Any]], max_tokens: int, top_logprobs: int) -> dict[str, Any]:
        import httpx

        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                "logprobs": True, "top_logprobs": top_logprobs}
        try:
            response = self.client.post("/chat/completions", json=body)
        except httpx.HTTPError as e:
            raise ServiceError(502, f"the endpoint {self.client.base_url} did not answer: {e}", "base_url") from None
        if response.status_code != 200:
            raise ServiceError(502, f"the endpoint {self.client.base_url} answered {response.status_code}: "
                                    f"{response.text[:300]}", "base_url")
        return response.json()["choices"][0]

    def classify(self, texts: Sequence[str], labels: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            choice = self._chat(classification_messages(text, list(labels)), 1, 20)
            top = (choice.get("logprobs") or {}).get("content") or [{"top_logprobs": []}]
            scores = [0.0] * len(labels)
            for candidate in top[0].get("top_logprobs", []):
                token = candidate["token"].strip().lower()
                matching = [i for i, label in enumerate(labels) if token and label.lower().startswith(token)]
                for i in matching:  # a first token that starts several labels is shared among them
                    scores[i] += math.exp(candidate["logprob"]) / len(matching)
            total = sum(scores)
            out.append([s / total for s in scores] if total > 0 else [1.0 / len(labels)] * len(labels))
        return out

    def spans(self, texts: Sequence[str], labels: Sequence[str]) -> list[Predicted]:
        raise ServiceError(400, "an OpenAI-compatible endpoint answers in text and cannot mark spans; pre-label a "
                                "spans project with a token classifier trained here (method token_classify)", "model")

    def prefer(self, prompts: Sequence[list[dict[str, Any]]], answers: Sequence[tuple[str, str]]
               ) -> tuple[list[tuple[float, float]], str]:
        raise ServiceError(400, "an OpenAI-compatible endpoint cannot score two answers; use a reward model or a model "
                                "trained on pairs here (dpo)", "model")

    def respond(self, prompts: Sequence[list[dict[str, Any]]]) -> list[tuple[str, float]]:
        out = []
        for messages in prompts:
            choice = self._chat(messages, self.max_tokens, 0)
            logprobs = [t["logprob"] for t in (choice.get("logprobs") or {}).get("content") or []]
            out.append(((choice["message"]["content"] or "").strip(), sum(logprobs) / len(logprobs) if logprobs else 0.0))
        return out


@dataclass
class PrelabelResult:
    model: str
    predicted: int
    skipped: int


def _targets(session: Session, project: Project, which: str, model: str,
             since: float | None) -> tuple[list[Record], int]:
    if which not in ("remaining", "all"):
        raise ServiceError(400, f"records '{which}' is not one of remaining, all", "records")
    records = store.all_records(session, project_id=project.id)
    if which == "remaining":  # what people have not finished, and the held-out records every round is measured on
        records = [r for r in records if r.status == "open" or r.split == "holdout"]
    done = store.predicted_ids(session, project_id=project.id, model=model, since=since)
    todo = [r for r in records if r.id not in done]
    return todo, len(records) - len(todo)


def prelabel(session: Session, project: Project, predictor: Predictor, *, records: str = "remaining",
             uncertainty: str = "margin", batch_size: int = 16, on_progress: Progress | None = None,
             since: float | None = None, use: bool = True) -> PrelabelResult:
    """Predict the records (`remaining`: open and held-out; or `all`) with `predictor`. Records this model
    predicted already are skipped (so a pre-label run resumes), or with `since` only those it predicted since
    then (a re-predict scores every record again, and resumes within its own job). `use`: this model
    pre-fills the queue from now on (the lead asked for it); otherwise the predictions are kept and the
    queue shows them only if the model is the one in use."""
    task = task_of(project)
    if not task.prelabels:
        raise ServiceError(400, f"a {project.task} project has no pre-labels: people judge the answers it holds",
                           "task")
    if uncertainty not in UNCERTAINTY:
        raise ServiceError(400, f"uncertainty '{uncertainty}' is not one of {', '.join(UNCERTAINTY)}", "uncertainty")
    todo, skipped = _targets(session, project, records, predictor.name, since)
    if use and project.prefill_model != predictor.name:
        use_model(session, project, predictor.name)
    if on_progress:
        on_progress(0, len(todo))
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        rows = task.predict(project, predictor, batch, UNCERTAINTY[uncertainty])
        store.add_predictions(session, project_id=project.id, rows=rows)
        for record, row in zip(batch, rows):
            _mark(session, project, record, predictor.name, row)
        session.commit()
        if on_progress:
            on_progress(start + len(batch), len(todo))
    return PrelabelResult(predictor.name, len(todo), skipped)


def _mark(session: Session, project: Project, record: Record, model: str, row: dict[str, Any]) -> None:
    """Recheck whether models disagree; and put the prediction on the record (for sorting and filtering, and
    what people are shown) when its model pre-fills the queue."""
    others = {p.model: p.label for p in store.predictions_of(session, record_id=record.id) if p.model != model}
    record.models_disagree = any(label is not None and label != row["label"] for label in others.values())
    if project.prefill_model in (None, model):
        project.prefill_model = model
        record.pred_model, record.pred_label, record.confidence = model, row["label"], row["confidence"]
        record.uncertainty = row["uncertainty"]
    if record.annotations or record.answer_source:
        refresh_record(session, project, record)


def use_model(session: Session, project: Project, model: str | None) -> None:
    """Let `model`'s newest predictions pre-fill the queue (and order it); records it never predicted show no
    prediction. Does not commit."""
    project.prefill_model = model
    latest = {p.record_id: p for p in store.latest_predictions(session, project_id=project.id, model=model)} \
        if model else {}
    for record in store.all_records(session, project_id=project.id):
        p = latest.get(record.id)
        record.pred_model = p.model if p else None
        record.pred_label = p.label if p else None
        record.confidence = p.confidence if p else None
        record.uncertainty = (p.uncertainty or 0.0) if p else 0.0
        if record.annotations or record.answer_source:
            refresh_record(session, project, record)
