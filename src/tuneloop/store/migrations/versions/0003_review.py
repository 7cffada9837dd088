"""People in the loop: users, review projects, records, predictions, annotations with their history,
assignments (one person per record at a time) and the rounds of the loop.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("username", sa.String(100), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("disabled_at", sa.Float, nullable=True),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("task", sa.String(20), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("multi_label", sa.Boolean, nullable=False),
        sa.Column("guidelines", sa.Text, nullable=False),
        sa.Column("overlap", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "project_members",
        sa.Column("project_id", sa.String(40), sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), primary_key=True),
    )
    op.create_table(
        "records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(40), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("source_index", sa.Integer, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("split", sa.String(10), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("annotations", sa.Integer, nullable=False),
        sa.Column("human_label", sa.String(200), nullable=True),
        sa.Column("disagreement", sa.Boolean, nullable=False),
        sa.Column("pred_model", sa.String(500), nullable=True),
        sa.Column("pred_label", sa.String(200), nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("uncertainty", sa.Float, nullable=False),
        sa.Column("models_disagree", sa.Boolean, nullable=False),
        sa.Column("random_key", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    # The queue and the table view page through these without scanning a project's records.
    op.create_index("ix_records_project_id", "records", ["project_id", "id"])
    # Each queue order is one index scan, ties broken at random (so the first round, before any prediction,
    # is a random sample rather than the file's order).
    op.create_index("ix_records_queue_uncertainty", "records",
                    ["project_id", "split", "status", sa.text("uncertainty DESC"), "random_key"])
    op.create_index("ix_records_queue_random", "records", ["project_id", "split", "status", "random_key"])
    op.create_index("ix_records_queue_models", "records",
                    ["project_id", "split", "status", sa.text("models_disagree DESC"), sa.text("uncertainty DESC"),
                     "random_key"])
    # The table view's filters and sorts, each one index.
    for column in ("confidence", "uncertainty", "pred_label", "human_label", "updated_at", "annotations"):
        op.create_index(f"ix_records_by_{column}", "records", ["project_id", column])
    op.create_index("ix_records_by_status", "records", ["project_id", "status", "id"])
    _text_search_index()
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), nullable=False, index=True),
        sa.Column("project_id", sa.String(40), sa.ForeignKey("projects.id"), nullable=False, index=True),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("answer", sa.JSON, nullable=False),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("probabilities", sa.JSON, nullable=True),
        sa.Column("mean_logprob", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), nullable=False, index=True),
        sa.Column("project_id", sa.String(40), sa.ForeignKey("projects.id"), nullable=False, index=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False, index=True),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("review_comment", sa.Text, nullable=True),
        sa.Column("reviewer_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "annotation_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("annotation_id", sa.Integer, sa.ForeignKey("annotations.id"), nullable=False, index=True),
        sa.Column("record_id", sa.Integer, nullable=False, index=True),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("action", sa.String(12), nullable=False),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_table(
        "assignments",
        sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("project_id", sa.String(40), nullable=False, index=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(40), sa.ForeignKey("projects.id"), nullable=False, index=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("labels_used", sa.Integer, nullable=False),
        sa.Column("accuracy", sa.Float, nullable=True),
        sa.Column("macro_f1", sa.Float, nullable=True),
        sa.Column("seconds", sa.Float, nullable=True),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def _text_search_index() -> None:
    """Substring search over records.text without reading every row: a trigram index (FTS5 on SQLite, kept in
    step by triggers; pg_trgm on PostgreSQL). Where neither is available, search scans, and still works."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        try:
            op.execute("CREATE VIRTUAL TABLE records_search USING fts5(text, content='records', content_rowid='id', "
                       "tokenize='trigram')")
        except sa.exc.OperationalError:  # an SQLite built without FTS5, or older than 3.34
            return
        op.execute("CREATE TRIGGER records_search_insert AFTER INSERT ON records BEGIN "
                   "INSERT INTO records_search(rowid, text) VALUES (new.id, new.text); END")
        op.execute("CREATE TRIGGER records_search_delete AFTER DELETE ON records BEGIN "
                   "INSERT INTO records_search(records_search, rowid, text) VALUES ('delete', old.id, old.text); END")
        op.execute("CREATE TRIGGER records_search_update AFTER UPDATE OF text ON records BEGIN "
                   "INSERT INTO records_search(records_search, rowid, text) VALUES ('delete', old.id, old.text); "
                   "INSERT INTO records_search(rowid, text) VALUES (new.id, new.text); END")
    elif bind.dialect.name == "postgresql":
        savepoint = bind.begin_nested()
        try:
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            savepoint.commit()
        except sa.exc.DBAPIError:  # not allowed to create it: search scans
            savepoint.rollback()
            return
        op.execute("CREATE INDEX ix_records_text_trgm ON records USING gin (text gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS records_search")
    for table in ("rounds", "assignments", "annotation_changes", "annotations", "predictions", "records",
                  "project_members", "projects", "users"):
        op.drop_table(table)
