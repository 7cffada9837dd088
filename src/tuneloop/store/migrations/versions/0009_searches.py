"""Hyperparameter searches: the base recipe, the space, Optuna's sampler and pruner, the metric and the trial count
(each trial a job of kind `search-trial`; the trials live in Optuna's own tables).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "searches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("recipe", sa.JSON, nullable=False),
        sa.Column("space", sa.JSON, nullable=False),
        sa.Column("sampler", sa.String(20), nullable=False),
        sa.Column("pruner", sa.String(20), nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("trials", sa.Integer, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("study_name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("searches")
