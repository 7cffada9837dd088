"""Rating: people rate an answer to a prompt from 1 to 5, with an optional comment. The export is reward
data: each conversation with its mean rating, every rating and the comments."""

from __future__ import annotations

from typing import Any

from tuneloop.services import ServiceError
from tuneloop.services.review.tasks import Item, Shown, TaskType, Unfit, assistant, prompt_and_answer, register
from tuneloop.store.tables import Annotation, Project, Record, User


@register
class Rating(TaskType):
    name = "rating"
    title = "rate an answer from 1 to 5"
    widget = "scale"
    settles_by_agreement = False
    exports = ("reward",)
    not_trainable = "a rating project exports reward data; reward models are not trainable here yet"

    def read(self, item: Item) -> tuple[str, dict[str, Any]]:
        text, data = prompt_and_answer(item, self.name)
        if not item.get("answer"):
            raise Unfit("a rating project needs an answer to rate; this conversation ends with the user")
        return text, data

    def view(self, record: Record, prediction: dict[str, Any] | None, user: User | None) -> dict[str, Any]:
        return {"prompt": record.data.get("prompt", []), "answer": record.data.get("answer") or ""}

    def normalise(self, value: dict[str, Any], shown: Shown) -> dict[str, Any]:
        rating = value.get("rating")
        if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
            raise ServiceError(400, f"value.rating: '{rating}' is not a whole number from 1 to 5", "value.rating")
        return {"rating": rating, "label": str(rating), "comment": value.get("comment") or ""}

    def export_row(self, project: Project, record: Record, annotations: list[Annotation],
                   kind: str) -> dict[str, Any] | None:
        """Every person's rating counts (their mean), not one chosen annotation."""
        ratings = [a.value["rating"] for a in annotations]
        comments = [a.value["comment"] for a in annotations if a.value.get("comment")]
        return {"messages": [*record.data["prompt"], *assistant(record.data.get("answer") or "")],
                "rating": sum(ratings) / len(ratings), "ratings": ratings, "comments": comments}
