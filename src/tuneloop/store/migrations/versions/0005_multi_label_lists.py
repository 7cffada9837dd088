"""Multi-label answers are kept as lists of labels, not as one "|"-joined string.

Records gain `human_labels` (JSON, the people's label set in a multi-label project; `human_label` is then
NULL). Annotation values of multi-label projects, and the copies of them kept in the history, lose their
joined `label` and keep `labels`. Only classification projects with `multi_label` change: other tasks ignored
the flag, and their `label` (a rating, a preferred answer's key) stays as it is.

Revision ID: 0005
Revises: 0004
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

projects = sa.table("projects", sa.column("id", sa.String), sa.column("task", sa.String),
                    sa.column("multi_label", sa.Boolean))
records = sa.table("records", sa.column("id", sa.Integer), sa.column("project_id", sa.String),
                   sa.column("human_label", sa.String), sa.column("human_labels", sa.JSON(none_as_null=True)))
annotations = sa.table("annotations", sa.column("id", sa.Integer), sa.column("project_id", sa.String),
                       sa.column("record_id", sa.Integer), sa.column("value", sa.JSON))
# the history's None stays JSON null, as the tables write it
changes = sa.table("annotation_changes", sa.column("id", sa.Integer), sa.column("annotation_id", sa.Integer),
                   sa.column("before", sa.JSON), sa.column("after", sa.JSON))


def _multi_label_projects(connection: sa.Connection) -> list[str]:
    query = sa.select(projects.c.id).where(projects.c.task == "classification", projects.c.multi_label.is_(True))
    return list(connection.scalars(query))


def _as_list(value: dict[str, Any]) -> dict[str, Any]:
    """{"labels": [...], "label": "a|b", ...} -> {"labels": [...], ...}; the list, where the value has one, is
    exact even for a label that holds a "|" itself."""
    if "label" not in value:
        return value
    listed = {k: v for k, v in value.items() if k != "label"}
    if not isinstance(listed.get("labels"), list) and isinstance(value["label"], str):
        listed["labels"] = value["label"].split("|")
    return listed


def _as_joined(value: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(value.get("labels"), list):
        return value
    return {**value, "label": "|".join(value["labels"])}


def _snapshot(snapshot: dict[str, Any] | None, convert) -> dict[str, Any] | None:
    """A history entry's copy of an annotation ({"value", "status", "review_comment"})."""
    if not snapshot or not isinstance(snapshot.get("value"), dict):
        return snapshot
    return {**snapshot, "value": convert(snapshot["value"])}


def _convert_annotations(connection: sa.Connection, project_ids: list[str], convert) -> dict[int, list[list[str]]]:
    """Rewrite the annotations of these projects and their history; returns record id -> the label lists given."""
    given: dict[int, list[list[str]]] = {}
    rows = connection.execute(sa.select(annotations.c.id, annotations.c.record_id, annotations.c.value)
                              .where(annotations.c.project_id.in_(project_ids))).all()
    for annotation_id, record_id, value in rows:
        new = convert(value)
        if isinstance(new.get("labels"), list):
            given.setdefault(record_id, []).append(new["labels"])
        if new != value:
            connection.execute(annotations.update().where(annotations.c.id == annotation_id).values(value=new))
    theirs = sa.select(annotations.c.id).where(annotations.c.project_id.in_(project_ids))
    history = connection.execute(sa.select(changes.c.id, changes.c.before, changes.c.after)
                                 .where(changes.c.annotation_id.in_(theirs))).all()
    for change_id, before, after in history:
        new_before, new_after = _snapshot(before, convert), _snapshot(after, convert)
        if (new_before, new_after) != (before, after):
            connection.execute(changes.update().where(changes.c.id == change_id).values(before=new_before,
                                                                                        after=new_after))
    return given


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("human_labels", sa.JSON, nullable=True))
    connection = op.get_bind()
    project_ids = _multi_label_projects(connection)
    if not project_ids:
        return
    given = _convert_annotations(connection, project_ids, _as_list)
    rows = connection.execute(sa.select(records.c.id, records.c.human_label).where(
        records.c.project_id.in_(project_ids), records.c.human_label.is_not(None))).all()
    for record_id, joined in rows:
        exact = [labels for labels in given.get(record_id, []) if "|".join(labels) == joined]
        connection.execute(records.update().where(records.c.id == record_id).values(
            human_label=None, human_labels=exact[0] if exact else joined.split("|")))


def downgrade() -> None:
    connection = op.get_bind()
    project_ids = _multi_label_projects(connection)
    if project_ids:
        _convert_annotations(connection, project_ids, _as_joined)
        rows = connection.execute(sa.select(records.c.id, records.c.human_labels).where(
            records.c.project_id.in_(project_ids), records.c.human_labels.is_not(None))).all()
        for record_id, labels in rows:
            connection.execute(records.update().where(records.c.id == record_id).values(
                human_label="|".join(labels), human_labels=None))
    # Never by copying the table (SQLite's batch default for a dropped column): the copy would lose the triggers
    # that keep the text search index in step. SQLite drops a column in place since 3.35.
    with op.batch_alter_table("records", recreate="never") as batch:
        batch.drop_column("human_labels")
