"""Arena: people judge which of two models' answers to a prompt is better, or call it a tie, without seeing which
model wrote which (each person sees the pair in their own random order). A record is one prompt and one pair of
models; what the models are stays in the record's data, for the results (win rates, a Bradley–Terry ranking, and
people's agreement with an LLM judge, whose verdicts are the records' predictions and never count as people's).
Reviewed records export as DPO pairs (ties left out) like preference projects."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tuneloop.services import ServiceError
from tuneloop.services.review.tasks import Item, Shown, Unfit, best, last_user, register
from tuneloop.services.review.tasks.preference import KEYS, Preference, shown_order
from tuneloop.store.tables import Annotation, Project, Record, User

TIE = "tie"


@register
class Arena(Preference):
    name = "arena"
    title = "judge two models' answers side by side, names hidden (or call it a tie)"
    widget = "compare"
    exports = ("dpo",)
    train_as = None
    prelabels = False
    round_metric = "agreement with people"
    not_trainable = "an arena's judgements rank models; export them as DPO pairs to train on them"

    def read(self, item: Item) -> tuple[str, dict[str, Any]]:
        original = item.get("original") or {}
        models = original.get("models")
        if "answers" not in item or not isinstance(models, list) or len(models) != 2 or \
                not all(isinstance(m, str) and m for m in models):
            raise Unfit("an arena record is a prompt with two answers (chosen and rejected, in no order) and "
                        "'models': the two models that wrote them, in the same order")
        return last_user(item["prompt"]), {"prompt": item["prompt"], "answers": item["answers"], "models": models,
                                           "row": original.get("row")}

    def view(self, record: Record, prediction: dict[str, Any] | None, user: User | None) -> dict[str, Any]:
        return {**super().view(record, prediction, user), "ties": True}  # the models' names stay hidden

    def normalise(self, value: dict[str, Any], shown: Shown) -> dict[str, Any]:
        if value.get("preferred") == TIE:
            return {"preferred": None, "label": TIE, "rewrite": None}
        return super().normalise(value, shown)

    def shown_again(self, value: dict[str, Any], record: Record, user: User | None) -> dict[str, Any]:
        return dict(value) if value.get("label") == TIE else super().shown_again(value, record, user)

    def agreement_labels(self, project: Project, answers: set[Any]) -> dict[str, Any]:
        return {label: label for label in (*KEYS, TIE)}

    def export_row(self, project: Project, record: Record, annotations: list[Annotation],
                   kind: str) -> dict[str, Any] | None:
        value = best(annotations).value
        if value.get("label") == TIE:
            return None  # nothing to prefer
        return super().export_row(project, record, annotations, kind)

    def predict(self, project: Project, predictor: Any, records: list[Record],
                uncertainty: Callable[[Sequence[float]], float]) -> list[dict[str, Any]]:
        raise ServiceError(400, "an arena's model verdicts come from its judge (tuneloop arena judge), not pre-labels",
                           "task")

    def winner(self, label: str | None, record: Record) -> str | None:
        """The model a verdict (answer-1, answer-2 or tie) names, or 'tie'."""
        if label == TIE:
            return TIE
        if label in KEYS:
            return record.data["models"][KEYS.index(label)]
        return None


def verdict_label(choice: str) -> str:
    """A judge's verdict on the data's order (first, second, tie) as an arena label."""
    return {"first": KEYS[0], "second": KEYS[1], "tie": TIE}[choice]


__all__ = ["Arena", "TIE", "shown_order", "verdict_label"]
