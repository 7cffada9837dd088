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
    exports = ("reward", "kto", "reward_pairs")
    not_trainable = ("a rating project trains a reward model (method reward: its answers to the same prompt as pairs) "
                     "or KTO (method kto: rated 4-5 desirable, 1-2 not)")
    pairs_from_records = True
    """`reward_pairs` pairs records with one another (answers to the same prompt): export_rows asks `export_pairs`."""

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
        mean = sum(ratings) / len(ratings)
        if kind == "kto":  # KTO's unpaired format: good (4, 5) or bad (1, 2); a 3 teaches neither way
            if 2 < mean < 4:
                return None
            return {"prompt": record.data["prompt"], "completion": assistant(record.data.get("answer") or ""),
                    "label": mean >= 4, "rating": mean}
        return {"messages": [*record.data["prompt"], *assistant(record.data.get("answer") or "")],
                "rating": mean, "ratings": ratings, "comments": comments}

    def export_pairs(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rated answers to the same prompt as preference pairs: the better rated preferred, with the difference
        in mean rating as the pair's margin (the reward method reads it); equal ratings make no pair."""
        import json

        by_prompt: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_prompt.setdefault(json.dumps(row["messages"][:-1], sort_keys=True), []).append(row)
        pairs = []
        for group in by_prompt.values():
            for i, a in enumerate(group):
                for b in group[i + 1:]:
                    if a["rating"] == b["rating"]:
                        continue
                    better, worse = (a, b) if a["rating"] > b["rating"] else (b, a)
                    pairs.append({"input": {"messages": better["messages"][:-1]},
                                  "preferred_output": better["messages"][-1:],
                                  "non_preferred_output": worse["messages"][-1:],
                                  "margin": round(better["rating"] - worse["rating"], 4)})
        return pairs
