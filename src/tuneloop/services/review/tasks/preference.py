"""Preference: people choose the better of two answers to a prompt (A or B), and may rewrite it. Each person
sees the two answers in their own random order and never with the models' names. The export is DPO pairs
(chosen, or its rewrite, over the other) or SFT chats of the chosen answer."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from tuneloop.services import ServiceError
from tuneloop.services.review.tasks import Item, Shown, TaskType, Unfit, assistant, best, last_user, register
from tuneloop.store.tables import Annotation, Project, Record, User

KEYS = ("answer-1", "answer-2")
"""The stored label of each answer, in the data's order: what agreement compares."""


def shown_order(record: Record, user: User | None) -> list[int]:
    """The order one person sees a record's two answers in: random, but the same each time they see it."""
    order = [0, 1]
    random.Random(f"{record.id}:{user.id if user else ''}").shuffle(order)
    return order


@register
class Preference(TaskType):
    name = "preference"
    title = "choose the better of two answers (and rewrite it)"
    widget = "compare"
    exports = ("dpo", "sft")
    train_as = "sft"
    prelabels = True
    round_metric = "pairwise accuracy"

    def read(self, item: Item) -> tuple[str, dict[str, Any]]:
        if "answers" not in item:
            raise Unfit("a preference project needs two answers per prompt (preference or prompt/chosen/rejected data)")
        return last_user(item["prompt"]), {"prompt": item["prompt"], "answers": item["answers"]}

    def view(self, record: Record, prediction: dict[str, Any] | None, user: User | None) -> dict[str, Any]:
        answers, order = record.data["answers"], shown_order(record, user)
        return {"prompt": record.data.get("prompt", []),
                "options": [{"key": "AB"[shown], "text": answers[i]} for shown, i in enumerate(order)],
                "prediction": None}  # which model wrote which answer stays hidden

    def normalise(self, value: dict[str, Any], shown: Shown) -> dict[str, Any]:
        choice = value.get("preferred")
        if choice not in ("A", "B"):
            raise ServiceError(400, f"value.preferred: '{choice}' is not A or B (as shown)", "value.preferred")
        answer = shown_order(shown.record, shown.user)[("A", "B").index(choice)]
        return {"preferred": answer, "label": KEYS[answer], "rewrite": value.get("rewrite") or None}

    def shown_again(self, value: dict[str, Any], record: Record, user: User | None) -> dict[str, Any]:
        """As this person saw it: A or B."""
        again = dict(value)
        if "preferred" in value:
            again["label"] = "AB"[shown_order(record, user).index(value["preferred"])]
        return again

    def export_row(self, project: Project, record: Record, annotations: list[Annotation],
                   kind: str) -> dict[str, Any] | None:
        prompt, answers = record.data["prompt"], record.data["answers"]
        value = best(annotations).value
        better = value.get("rewrite") or answers[value["preferred"]]
        if kind == "sft":
            return {"messages": [*prompt, *assistant(better)]}
        return {"input": {"messages": prompt}, "preferred_output": assistant(better),
                "non_preferred_output": assistant(answers[1 - value["preferred"]])}

    # ---------------------------------------------------------------- a model's choice
    def predict(self, project: Project, predictor: Any, records: list[Record],
                uncertainty: Callable[[Sequence[float]], float]) -> list[dict[str, Any]]:
        """Which answer a reward model (or a model trained on pairs, by its implicit reward) scores higher; its
        confidence is sigmoid of the difference (Bradley-Terry). People never see it: which answer a model prefers
        would anchor their choice, as a pre-label does."""
        scores, scored_by = predictor.prefer([r.data.get("prompt", []) for r in records],
                                             [tuple(r.data["answers"][:2]) for r in records])
        rows = []
        for record, (first, second) in zip(records, scores):
            p_first = 1 / (1 + math.exp(max(-60.0, min(60.0, second - first))))
            best = 0 if first >= second else 1
            probs = [p_first, 1 - p_first]
            rows.append({"record_id": record.id, "model": predictor.name, "answer": {"preferred": best,
                         "scores": [first, second], "scored_by": scored_by}, "label": KEYS[best],
                         "confidence": probs[best], "probabilities": dict(zip(KEYS, probs)),
                         "uncertainty": uncertainty(probs)})
        return rows

    def holdout_score(self, pairs: list[tuple[Any, str]], labels: list[str]) -> tuple[float | None, float | None]:
        """How often the model prefers the answer people preferred, on the held-out pairs."""
        return sum(gold[0] == predicted for gold, predicted in pairs) / len(pairs), None

    def model_report(self, pairs: list[tuple[Any, str]], labels: list[str]) -> dict[str, Any]:
        agree = sum(gold[0] == predicted for gold, predicted in pairs)
        return {"accuracy": round(agree / len(pairs), 4) if pairs else None, "pairs": len(pairs)}
