"""Every label carries its source, and the lead chooses which model pre-fills the queue.

Annotations gain `source` (person, model, adjudication) and `model`. The previous release's bulk accept stored
a model's label as the accepting person's own (`value.from_model`): those become `source = model`, accepted.
Records gain `answer_source` (people, majority, tie, adjudicated, model), worked out again from their
annotations: a record whose people split evenly had one of their labels picked, and now has none (`tie`); a
record with only an accepted model label is `accepted` and its answer is the model's. Projects gain
`prefill_model` (the model of their newest predictions) and `hide_predictions`; predictions keep their
`uncertainty`; rounds keep how many records they `predicted` and which model they `replaced` in the queue,
and `labels_used` may be unknown (a model trained outside the project).

Revision ID: 0006
Revises: 0005
"""

import json
from collections import Counter
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

projects = sa.table("projects", sa.column("id", sa.String), sa.column("task", sa.String),
                    sa.column("prefill_model", sa.String))
records = sa.table("records", sa.column("id", sa.Integer), sa.column("project_id", sa.String),
                   sa.column("status", sa.String), sa.column("human_label", sa.String),
                   sa.column("human_labels", sa.JSON(none_as_null=True)), sa.column("answer_source", sa.String),
                   sa.column("pred_model", sa.String), sa.column("updated_at", sa.Float))
annotations = sa.table("annotations", sa.column("id", sa.Integer), sa.column("record_id", sa.Integer),
                       sa.column("project_id", sa.String),
                       sa.column("value", sa.JSON), sa.column("status", sa.String), sa.column("source", sa.String),
                       sa.column("model", sa.String))
COUNTED = ("submitted", "accepted")


def _answer(value: dict[str, Any]) -> Any:
    """What the previous release compared answers by: the label, or the label set of a multi-label answer."""
    if isinstance(value.get("labels"), list):
        return json.dumps(sorted(value["labels"]))
    return value.get("label")


def upgrade() -> None:
    with op.batch_alter_table("annotations") as batch:
        batch.add_column(sa.Column("source", sa.String(12), nullable=False, server_default="person"))
        batch.add_column(sa.Column("model", sa.String(500), nullable=True))
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("answer_source", sa.String(12), nullable=True))
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("uncertainty", sa.Float, nullable=True))
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("predicted", sa.Integer, nullable=True))
        batch.add_column(sa.Column("replaced", sa.String(500), nullable=True))
        batch.alter_column("labels_used", existing_type=sa.Integer, nullable=True)
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("prefill_model", sa.String(500), nullable=True))
        batch.add_column(sa.Column("hide_predictions", sa.Boolean, nullable=False, server_default=sa.false()))
    connection = op.get_bind()
    rated = set(connection.scalars(sa.select(projects.c.id).where(projects.c.task == "rating")))
    """Ratings are averaged: raters who differ are not a tie or a majority to settle (as the rating task type says)."""
    by_record: dict[int, list[Any]] = {}
    for row in connection.execute(sa.select(annotations).where(annotations.c.status.in_(COUNTED))):
        by_record.setdefault(row.record_id, []).append(row)
    for record_id, rows in by_record.items():
        in_ratings = rows[0].project_id in rated
        people = []
        for row in rows:
            value = row.value if isinstance(row.value, dict) else {}
            if value.get("from_model"):
                connection.execute(annotations.update().where(annotations.c.id == row.id).values(
                    source="model", model=value["from_model"], status="accepted"))
            else:
                people.append(_answer(value))
        ranked = Counter(a for a in people if a is not None).most_common()
        if people:
            source = ("people" if len(ranked) <= 1 or in_ratings else
                      "tie" if ranked[0][1] == ranked[1][1] else "majority")
            values: dict[str, Any] = {"answer_source": source}
            if source == "tie":
                values.update(human_label=None, human_labels=None)
        else:
            values = {"answer_source": "model", "status": "accepted"}
        connection.execute(records.update().where(records.c.id == record_id).values(**values))
    newest = sa.select(records.c.project_id, sa.func.max(records.c.updated_at).label("at")).where(
        records.c.pred_model.is_not(None)).group_by(records.c.project_id).subquery()
    for project_id, _ in connection.execute(sa.select(newest)):
        model = connection.scalar(sa.select(records.c.pred_model).where(
            records.c.project_id == project_id, records.c.pred_model.is_not(None))
            .order_by(records.c.updated_at.desc()).limit(1))
        connection.execute(projects.update().where(projects.c.id == project_id).values(prefill_model=model))


def downgrade() -> None:
    # Never by copying a table (SQLite's batch default for a dropped column): the copy would lose the triggers
    # and break the rows that point at it. SQLite 3.35 and later drop a column in place.
    op.execute("UPDATE rounds SET labels_used = 0 WHERE labels_used IS NULL")
    with op.batch_alter_table("rounds") as batch:  # no triggers on rounds: SQLite may copy it
        batch.alter_column("labels_used", existing_type=sa.Integer, nullable=False)
        batch.drop_column("replaced")
        batch.drop_column("predicted")
    for table, columns in (("projects", ("hide_predictions", "prefill_model")), ("records", ("answer_source",)),
                           ("predictions", ("uncertainty",)),
                           ("annotations", ("model", "source"))):
        with op.batch_alter_table(table, recreate="never") as batch:
            for column in columns:
                batch.drop_column(column)
