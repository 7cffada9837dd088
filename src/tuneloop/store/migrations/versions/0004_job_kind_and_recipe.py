"""Jobs carry a kind, the whole recipe they run (or their kind's parameters), their progress and result;
only train jobs have a training file.

Existing jobs become `train` jobs whose recipe says what the previous release's worker built from their
stored request: its model, files (by id), seed, adapter, epochs (1 when the request left them out),
batch size, learning rate (2e-4 times the multiplier, a tenth of that for full fine-tuning), max length,
steps and checkpoints. A queued job then runs as it would have; a finished one keeps everything.

Revision ID: 0004
Revises: 0003
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _recipe(row) -> dict:
    """The recipe the previous release built for a job (a frozen copy of its worker's build_recipe)."""
    hp = json.loads(row.hyperparameters) if isinstance(row.hyperparameters, str) else (row.hyperparameters or {})
    adapter = hp.get("adapter", "lora")
    lr = 2e-4 * float(hp.get("learning_rate_multiplier", 1.0)) * (0.1 if adapter == "full" else 1)
    data = {"train": [{"path": row.training_file}]}
    if row.validation_file:
        data["validation"] = {"path": row.validation_file}
    return {
        "model": row.model, "method": "sft", "data": data, "seed": row.seed or 0,
        "adapter": {"type": adapter, **({"r": hp["lora_rank"]} if "lora_rank" in hp else {}),
                    **({"alpha": hp["lora_alpha"]} if "lora_alpha" in hp else {})},
        "hyperparameters": {"epochs": hp.get("n_epochs", 1), "batch_size": hp.get("batch_size", 8),
                            "learning_rate": lr, "warmup_ratio": 0.03, "max_length": hp.get("max_length", 512),
                            **({"max_steps": hp["max_steps"]} if "max_steps" in hp else {})},
        "checkpoints": {"each_epoch": True, "keep_last": 3,
                        **({"every_steps": hp["checkpoint_steps"]} if "checkpoint_steps" in hp else {})},
        "evaluation": {"each_epoch": bool(row.validation_file)},
    }


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(30), nullable=False, server_default="train"))
        batch.add_column(sa.Column("recipe", sa.JSON, nullable=True))
        batch.add_column(sa.Column("params", sa.JSON, nullable=True))
        batch.add_column(sa.Column("progress", sa.JSON, nullable=True))
        batch.add_column(sa.Column("result", sa.JSON, nullable=True))
        batch.alter_column("training_file", existing_type=sa.String(40), nullable=True)
        batch.create_index("ix_jobs_kind", ["kind"])
    connection = op.get_bind()
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("recipe", sa.JSON))
    rows = connection.execute(sa.text("select id, model, training_file, validation_file, seed, hyperparameters "
                                      "from jobs")).all()
    for row in rows:
        connection.execute(jobs.update().where(jobs.c.id == row.id).values(recipe=_recipe(row)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_kind")
        batch.alter_column("training_file", existing_type=sa.String(40), nullable=False)
        batch.drop_column("result")
        batch.drop_column("progress")
        batch.drop_column("params")
        batch.drop_column("recipe")
        batch.drop_column("kind")
