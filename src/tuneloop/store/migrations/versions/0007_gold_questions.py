"""Gold questions: records with a known answer (`records.gold`, split `gold`) mixed into each person's queue
at the project's `gold_rate`; a person whose accuracy on them falls below `gold_threshold` is flagged.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("gold", sa.JSON, nullable=True))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("gold_rate", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("gold_threshold", sa.Float, nullable=False, server_default="0.8"))


def downgrade() -> None:
    op.execute("UPDATE records SET split = 'pool' WHERE split = 'gold'")
    for table, columns in (("projects", ("gold_threshold", "gold_rate")), ("records", ("gold",))):
        with op.batch_alter_table(table, recreate="never") as batch:  # keep the search triggers on records
            for column in columns:
                batch.drop_column(column)
