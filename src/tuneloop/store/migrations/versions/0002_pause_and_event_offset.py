"""Jobs can be paused; a worker that takes over a job continues reading its events where the last stopped.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("pause_requested", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("events_offset", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("events_offset")
        batch.drop_column("pause_requested")
