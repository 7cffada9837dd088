"""Responses: people correct an answer to a prompt, drafted by a model (a pre-label) or taken from the data.
The export is SFT chats of the corrected answers, or DPO pairs of corrected over draft."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tuneloop.services import ServiceError
from tuneloop.services.review.tasks import Item, Shown, TaskType, assistant, best, prompt_and_answer, register
from tuneloop.store.tables import Annotation, Project, Record, User

if TYPE_CHECKING:
    from tuneloop.services.review.prelabel import Predictor


@register
class Response(TaskType):
    name = "response"
    title = "correct the model's draft answer"
    widget = "edit"
    draft_from_model = True
    exports = ("sft", "dpo")
    train_as = "sft"
    prelabels = True

    def read(self, item: Item) -> tuple[str, dict[str, Any]]:
        return prompt_and_answer(item, self.name)

    def view(self, record: Record, prediction: dict[str, Any] | None, user: User | None) -> dict[str, Any]:
        """The draft to correct: the answer of the model that pre-fills the queue, else the data's own."""
        drafted = prediction and prediction.get("text")
        return {"prompt": record.data.get("prompt", []),
                "draft": prediction["text"] if drafted else (record.data.get("answer") or ""),
                "draft_model": prediction["model"] if drafted else "dataset"}

    def normalise(self, value: dict[str, Any], shown: Shown) -> dict[str, Any]:
        text = value.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ServiceError(400, "value.text: the corrected answer is empty", "value.text")
        draft = value.get("draft", shown.view.get("draft")) or ""
        diff = list(difflib.unified_diff(draft.splitlines(), text.splitlines(), "draft", "corrected", lineterm=""))
        return {"text": text, "draft": draft, "draft_model": value.get("draft_model") or shown.view.get("draft_model"),
                "edited": text != draft, "diff": "\n".join(diff)}

    def export_row(self, project: Project, record: Record, annotations: list[Annotation],
                   kind: str) -> dict[str, Any] | None:
        prompt, value = record.data.get("prompt", []), best(annotations).value
        if kind == "sft":
            return {"messages": [*prompt, *assistant(value["text"])]}
        if not value.get("edited"):
            return None  # an unchanged draft says nothing about what is better
        return {"input": {"messages": prompt}, "preferred_output": assistant(value["text"]),
                "non_preferred_output": assistant(value["draft"])}

    def predict(self, project: Project, predictor: Predictor, records: list[Record],
                uncertainty: Callable[[Sequence[float]], float]) -> list[dict[str, Any]]:
        """The model's draft; its uncertainty is minus the mean token log-probability."""
        answers = predictor.respond([r.data.get("prompt", []) for r in records])
        return [{"record_id": r.id, "model": predictor.name, "answer": {"text": text}, "label": None,
                 "confidence": math.exp(mean), "mean_logprob": mean, "uncertainty": -mean}
                for r, (text, mean) in zip(records, answers)]
